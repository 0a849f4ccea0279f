//! GraphQL bodies as clients send them: never a panic; the normalised document lexes
//! to exactly the significant tokens of the original (it is what goes upstream in its
//! place), normalising is idempotent, and a body that parses keys the same when its
//! document is sent normalised (the operation, its kind and per-token reads kept).
#![no_main]

use apollo_parser::{Lexer, TokenKind};
use ghmesh_protocol::graphql::{normalise, GraphqlRequest};
use libfuzzer_sys::fuzz_target;

fn significant(doc: &str) -> Vec<(TokenKind, String)> {
    let (tokens, _) = Lexer::new(doc).lex();
    tokens
        .iter()
        .filter(|t| {
            !matches!(
                t.kind(),
                TokenKind::Whitespace | TokenKind::Comment | TokenKind::Comma | TokenKind::Eof
            )
        })
        .map(|t| (t.kind(), t.data().to_string()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    // As a whole body, and as a document wrapped in one.
    let _ = GraphqlRequest::parse(data);
    let text = String::from_utf8_lossy(data);
    if let Ok(n) = normalise(&text) {
        assert_eq!(significant(&n), significant(&text), "{text:?} -> {n:?}");
    }
    let body = serde_json::json!({ "query": text.as_ref() }).to_string();
    if let Ok(req) = GraphqlRequest::parse(body.as_bytes()) {
        assert_eq!(normalise(&req.document).as_deref(), Ok(req.document.as_str()));
        let again = serde_json::json!({ "query": req.document }).to_string();
        let again = GraphqlRequest::parse(again.as_bytes()).expect("a normalised document parses");
        assert_eq!(again, req);
    }
});
