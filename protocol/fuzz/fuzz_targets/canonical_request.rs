//! Request canonicalisation as clients and peers drive it: never a panic; a request
//! that canonicalises passes its own check (what a peer's copy is held to), rebuilding
//! it from its own parts gives the same request and key.
#![no_main]

use ghmesh_protocol::CanonicalRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let method = parts.next().unwrap_or("GET");
    let pq = parts.next().unwrap_or("/");
    let accept = parts.next();
    let version = parts.next();
    if let Ok(req) = CanonicalRequest::new(method, pq, accept, version) {
        assert_eq!(req.check(), Ok(()), "{req:?}");
        let again = CanonicalRequest::new(
            &req.method,
            &req.path_and_query(),
            req.accept.as_deref(),
            req.api_version.as_deref(),
        )
        .expect("a canonical request re-parses");
        assert_eq!(again.key(), req.key());
    }
    // Peers send requests already built: check() must never panic on any of them.
    let _ = CanonicalRequest::get(&text).map(|r| r.check());
});
