//! Key derivation: one shared secret plus a scope gives every per-purpose key.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// PBKDF2 rounds for the master key (OWASP's current figure for PBKDF2-HMAC-SHA256).
pub const PBKDF2_ROUNDS: u32 = 600_000;

/// Prefix of the gossipsub topic; the version is part of the name so that an
/// incompatible protocol change moves to a new topic instead of confusing old nodes.
pub const TOPIC_PREFIX: &str = "ghmesh/1/";

/// All key material of one mesh (secret + scope).
///
/// Cloning is cheap enough for tests that start many nodes: derivation is the slow
/// part (hundreds of milliseconds), so derive once and clone.
#[derive(Clone)]
pub struct MeshKeys {
    fernet_key: [u8; 32],
    /// Built once: every seal and open uses it.
    fernet: fernet::Fernet,
    topic: String,
    rendezvous: [u8; 32],
    /// The base of the hourly rendezvous keys on the public DHT
    /// ([`hourly_rendezvous`]); never published itself.
    public_rendezvous: [u8; 32],
    key_id: [u8; 8],
    /// Keys the names of rate-limit budgets: a member can tell two members' budgets
    /// apart or alike, nobody can tell which token either is.
    budget_key: [u8; 32],
}

impl MeshKeys {
    /// Derives the mesh keys from a secret and a scope (`OWNER/NAME`, or empty for one
    /// scope for the whole secret), with [`PBKDF2_ROUNDS`] rounds.
    pub fn derive(secret: &[u8], scope: &str) -> Self {
        let salt = format!("ghmesh/v1/{scope}");
        let mut master = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<pbkdf2::sha2::Sha256>(
            secret,
            salt.as_bytes(),
            PBKDF2_ROUNDS,
            &mut master,
        );
        let keys = Self::from_master(&master);
        master.fill(0);
        keys
    }

    fn from_master(master: &[u8; 32]) -> Self {
        let topic_key = subkey("topic", master);
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&subkey("key-id", master)[..8]);
        let fernet_key = subkey("fernet", master);
        let encoded = base64::engine::general_purpose::URL_SAFE.encode(fernet_key);
        // A 32-byte key in URL-safe base64 is exactly what Fernet::new accepts.
        let fernet =
            fernet::Fernet::new(&encoded).expect("32-byte key is always a valid Fernet key");
        Self {
            fernet_key,
            fernet,
            topic: format!("{TOPIC_PREFIX}{}", hex::encode(topic_key)),
            rendezvous: subkey("rendezvous", master),
            public_rendezvous: subkey("public-rendezvous", master),
            key_id,
            budget_key: subkey("budget", master),
        }
    }

    /// The key rate-limit budgets are named with ([`budget_id`]; secret: it stays in
    /// the process).
    pub fn budget_key(&self) -> [u8; 32] {
        self.budget_key
    }

    /// The gossipsub topic name, `ghmesh/1/<hex>`.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The Kademlia key that members provide and look up to find each other.
    pub fn rendezvous_key(&self) -> &[u8; 32] {
        &self.rendezvous
    }

    /// The base of this mesh's hourly keys on the public DHT: see
    /// [`hourly_rendezvous`].
    pub fn public_rendezvous_base(&self) -> &[u8; 32] {
        &self.public_rendezvous
    }

    /// A public, non-secret identifier of the encryption key, sent in clear in front of
    /// every token so that a receiver can tell "another mesh" from "tampered".
    pub fn key_id(&self) -> &[u8; 8] {
        &self.key_id
    }

    pub(crate) fn fernet(&self) -> &fernet::Fernet {
        &self.fernet
    }

    /// These keys with another mesh's topic and rendezvous key but not its encryption
    /// key: what an outsider who learned a topic name can do. For hostile-peer tests.
    #[doc(hidden)]
    pub fn impersonating(&self, other: &MeshKeys) -> MeshKeys {
        MeshKeys {
            topic: other.topic.clone(),
            rendezvous: other.rendezvous,
            ..self.clone()
        }
    }

    /// Raw Fernet key bytes, exposed only for known-answer tests.
    #[doc(hidden)]
    pub fn fernet_key_for_tests(&self) -> &[u8; 32] {
        &self.fernet_key
    }
}

impl PartialEq for MeshKeys {
    // The Fernet value is derived from `fernet_key`; comparing the bytes suffices.
    fn eq(&self, other: &Self) -> bool {
        self.fernet_key == other.fernet_key
            && self.topic == other.topic
            && self.rendezvous == other.rendezvous
            && self.key_id == other.key_id
    }
}

impl Eq for MeshKeys {}

impl fmt::Debug for MeshKeys {
    // Key material never reaches logs; the key id is public (it travels in clear).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshKeys")
            .field("key_id", &hex::encode(self.key_id))
            .field("material", &"<redacted>")
            .finish()
    }
}

/// SHA-256(label || 0x00 || master): one independent subkey per purpose.
/// The name of the rate-limit budget `token` draws from (contract §10), under `key`
/// (the mesh's [`MeshKeys::budget_key`]; a node without a mesh uses a random key of its
/// own): per repository for an Actions job token (`ghs_…`) when the repository is
/// known, else per token. A keyed hash: never the token, and unlinkable without the key.
pub fn budget_id(key: &[u8; 32], token: &str, repository: Option<&str>) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"ghmesh/budget/v1\0");
    h.update(key);
    match repository.filter(|_| token.trim().starts_with("ghs_")) {
        Some(repo) => {
            h.update(b"repository\0");
            h.update(repo.to_ascii_lowercase().as_bytes());
        }
        None => {
            h.update(b"token\0");
            h.update(token.trim().as_bytes());
        }
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize()[..16]);
    id
}

/// Seconds per rendezvous period on the public DHT: a provider record names its key's
/// hour only, so it links to nothing once the hour is over.
pub const RENDEZVOUS_HOUR_SECS: u64 = 3600;

/// The key a mesh provides on the public DHT during `hour` (Unix seconds / 3600), from
/// its [`MeshKeys::public_rendezvous_base`]: unlinkable to another hour's key or to
/// the mesh without the secret.
pub fn hourly_rendezvous(base: &[u8; 32], hour: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ghmesh/public-rendezvous/v1\0");
    h.update(base);
    h.update(hour.to_be_bytes());
    h.finalize().into()
}

fn subkey(label: &str, master: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update([0u8]);
    h.update(master);
    h.finalize().into()
}

/// A short fingerprint of an upstream token. GitHub ETags are token-specific, so an
/// entry remembers which token fingerprint got its ETag; 8 bytes of a hash of a
/// high-entropy token reveal nothing useful about it.
pub fn token_fingerprint(token: &str) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"ghmesh/token-fingerprint/v1\0");
    h.update(token.as_bytes());
    let digest = h.finalize();
    let mut fp = [0u8; 8];
    fp.copy_from_slice(&digest[..8]);
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_key_material() {
        let k = MeshKeys::derive(b"s3cret-value", "acme/widgets");
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&hex::encode(k.fernet_key)));
        assert!(!dbg.contains(&hex::encode(k.rendezvous)));
        assert!(!dbg.contains(k.topic()));
        assert!(!dbg.contains("s3cret"));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn scope_and_secret_separate_meshes() {
        let a = MeshKeys::derive(b"one", "o/r");
        let b = MeshKeys::derive(b"one", "o/other");
        let c = MeshKeys::derive(b"two", "o/r");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a.topic(), b.topic());
        assert_ne!(a.rendezvous_key(), c.rendezvous_key());
        assert_eq!(a, MeshKeys::derive(b"one", "o/r"));
    }

    #[test]
    fn hourly_rendezvous_keys_differ_by_hour_and_mesh_and_hide_the_base() {
        let a = MeshKeys::derive(b"one", "o/r");
        let b = MeshKeys::derive(b"two", "o/r");
        let base = a.public_rendezvous_base();
        assert_eq!(hourly_rendezvous(base, 7), hourly_rendezvous(base, 7));
        assert_ne!(hourly_rendezvous(base, 7), hourly_rendezvous(base, 8));
        assert_ne!(
            hourly_rendezvous(base, 7),
            hourly_rendezvous(b.public_rendezvous_base(), 7)
        );
        assert_ne!(
            base,
            a.rendezvous_key(),
            "the private DHT's key is not reused"
        );
        assert_ne!(&hourly_rendezvous(base, 7), base);
        assert!(!format!("{a:?}").contains(&hex::encode(base)));
    }

    #[test]
    fn token_fingerprint_is_stable_and_distinct() {
        assert_eq!(token_fingerprint("ghp_a"), token_fingerprint("ghp_a"));
        assert_ne!(token_fingerprint("ghp_a"), token_fingerprint("ghp_b"));
    }

    #[test]
    fn budgets_are_named_per_token_or_per_repository_and_never_by_the_token() {
        let key = [9u8; 32];
        let a = budget_id(&key, "ghp_alice", Some("acme/widgets"));
        assert_eq!(
            a,
            budget_id(&key, " ghp_alice ", None),
            "a personal token is its own budget"
        );
        assert_ne!(a, budget_id(&key, "ghp_bob", None));
        // Two Actions job tokens of one repository draw from one budget; of another, not.
        let job1 = budget_id(&key, "ghs_one", Some("acme/widgets"));
        assert_eq!(job1, budget_id(&key, "ghs_two", Some("Acme/Widgets")));
        assert_ne!(job1, budget_id(&key, "ghs_two", Some("acme/gadgets")));
        assert_ne!(
            job1,
            budget_id(&key, "ghs_one", None),
            "without a repository: per token"
        );
        // Another fleet's key names the same token otherwise; the name holds no token.
        assert_ne!(a, budget_id(&[8u8; 32], "ghp_alice", None));
        assert!(!hex::encode(a).contains(&hex::encode("ghp_alice")));
    }
}
