//! The CBOR a key holder can seal: decoding never panics, and a decoded message
//! re-encodes to something that decodes to the same message.
#![no_main]

use ghmesh_protocol::seal::decode;
use ghmesh_protocol::{open, seal, MeshKeys, SealLimits};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn keys() -> &'static MeshKeys {
    static KEYS: OnceLock<MeshKeys> = OnceLock::new();
    KEYS.get_or_init(|| MeshKeys::derive(b"fuzz-secret", "fuzz"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode(data) {
        let limits = SealLimits {
            max_len: 64 << 20,
            max_age_secs: 300,
        };
        let sealed = seal(keys(), &msg, 1_800_000_000);
        assert_eq!(open(keys(), &sealed, limits, 1_800_000_000), Ok(msg));
    }
});
