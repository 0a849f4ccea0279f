//! Arbitrary bytes from a peer, opened as a sealed message: never a panic, and what
//! opens re-seals and opens to the same message. Half the inputs get a valid header so
//! that the token parsing behind it is reached too.
#![no_main]

use std::sync::OnceLock;

use ghmesh_protocol::{open, seal, MeshKeys, SealLimits};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;

fn keys() -> &'static MeshKeys {
    static KEYS: OnceLock<MeshKeys> = OnceLock::new();
    KEYS.get_or_init(|| MeshKeys::derive(b"fuzz-secret", "fuzz"))
}

fuzz_target!(|data: &[u8]| {
    let limits = SealLimits {
        max_len: 1 << 20,
        max_age_secs: 300,
    };
    let mut framed = Vec::with_capacity(data.len() + 11);
    if data.first().is_some_and(|b| b & 1 == 1) {
        framed.extend_from_slice(b"GM\x01");
        framed.extend_from_slice(keys().key_id());
        framed.extend_from_slice(&data[1..]);
    } else {
        framed.extend_from_slice(data);
    }
    if let Ok(msg) = open(keys(), &framed, limits, NOW) {
        let again = seal(keys(), &msg, NOW);
        assert_eq!(open(keys(), &again, limits, NOW), Ok(msg));
    }
});
