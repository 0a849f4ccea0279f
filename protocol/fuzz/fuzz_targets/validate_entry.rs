//! Entries as a peer may send them: validation never panics; what a receiver adopts
//! never claims more freshness than its own rule nor a `fetched_at` from the future,
//! adopting twice changes nothing, and merging is never fooled into storing an older
//! version with another body.
#![no_main]

use ghmesh_protocol::entry::{FETCHED_AT_SKEW_MS, MAX_TTL_MS};
use ghmesh_protocol::{merge, Entry, Merge, PeerRules};
use libfuzzer_sys::fuzz_target;

const NOW_MS: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(entry) = ciborium::from_reader::<Entry, _>(data) else {
        return;
    };
    let key = entry.meta.key();
    let _ = entry.validate(&key, NOW_MS);
    let rules = PeerRules {
        ttl_override: None,
        upstream_base: Some("https://api.github.com"),
    };
    let adopted = entry.meta.clone().adopt(rules, NOW_MS);
    assert!(adopted.fetched_at_ms <= NOW_MS + FETCHED_AT_SKEW_MS);
    assert!(adopted.fresh_until_ms <= adopted.fetched_at_ms.saturating_add(MAX_TTL_MS));
    assert_eq!(adopted.clone().adopt(rules, NOW_MS), adopted);
    if adopted.validate(&key, NOW_MS).is_ok() {
        let held = Entry::new(
            adopted.request.clone(),
            Vec::new(),
            b"held".to_vec(),
            None,
            NOW_MS,
            NOW_MS + 1000,
            "held".into(),
        );
        if merge(Some(&held.meta), &adopted) == Merge::Store {
            assert!(
                adopted.fetched_at_ms > held.meta.fetched_at_ms || held.meta.cid != adopted.cid
            );
        }
    }
});
