//! GraphQL bodies as clients send them: never a panic, and a body that parses keys the
//! same when its document is sent normalised (normalising is idempotent and keeps the
//! operation, its kind and whether it reads per-token fields).
#![no_main]

use ghmesh_protocol::graphql::{normalise, GraphqlRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a whole body, and as a document wrapped in one.
    let _ = GraphqlRequest::parse(data);
    let text = String::from_utf8_lossy(data);
    let body = serde_json::json!({ "query": text.as_ref() }).to_string();
    if let Ok(req) = GraphqlRequest::parse(body.as_bytes()) {
        assert_eq!(normalise(&req.document).as_deref(), Ok(req.document.as_str()));
        let again = serde_json::json!({ "query": req.document }).to_string();
        let again = GraphqlRequest::parse(again.as_bytes()).expect("a normalised document parses");
        assert_eq!(again, req);
    }
});
