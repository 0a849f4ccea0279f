//! Cache entries: a GitHub response with its content id, validation, and the rule
//! that decides which of two versions of one key wins.

use bytes::Bytes;
use cid::Cid;
use multihash::Multihash;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::request::{CacheKey, CanonicalRequest};

/// Multicodec `raw`: the body is opaque bytes.
const RAW_CODEC: u64 = 0x55;
/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;

/// How far a peer's clock may run ahead of ours before its timestamps are refused.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// The longest freshness a peer may claim for an entry (one day).
pub const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// How far ahead of ours a peer's `fetched_at` may be: beyond it the time is clamped
/// (an entry "from the future" would win every merge), never a reason to refuse.
pub const FETCHED_AT_SKEW_MS: u64 = 5_000;
/// Largest body ghmesh caches and shares; larger responses pass through uncached.
pub const MAX_BODY_LEN: usize = 8 * 1024 * 1024;
/// Most response headers an entry keeps.
pub const MAX_HEADERS: usize = 32;
/// Longest header name + value an entry keeps.
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// Response headers worth keeping with an entry (lower case). Rate-limit headers are
/// not among them: they describe the quota at fetch time, so the proxy adds current ones.
pub const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "etag",
    "last-modified",
    "link",
    "x-github-media-type",
    "cache-control",
    "vary",
    "x-github-api-version-selected",
    // Which limit the endpoint counts against: a property of the endpoint, not of the
    // moment, unlike the other x-ratelimit-* headers.
    "x-ratelimit-resource",
];

/// The CIDv1 (raw codec, sha2-256) of a body.
pub fn body_cid(body: &[u8]) -> Cid {
    let digest = Sha256::digest(body);
    // A 32-byte digest always fits the 64-byte multihash.
    let mh = Multihash::<64>::wrap(SHA2_256, &digest).unwrap_or_default();
    Cid::new_v1(RAW_CODEC, mh)
}

/// A CID in its usual base32 text form (`bafkrei…`), for logs and the API.
pub fn cid_string(cid_bytes: &[u8]) -> String {
    Cid::try_from(cid_bytes)
        .map(|c| c.to_string())
        .unwrap_or_else(|_| format!("invalid:{}", hex::encode(cid_bytes)))
}

/// Why an entry from a peer (or from disk) is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The body does not hash to the entry's CID (or has another length).
    #[error("body does not match its content id")]
    CidMismatch,
    /// The cache key is not the key of the entry's request.
    #[error("cache key does not match the request")]
    KeyMismatch,
    /// Fetched in the future, fresh before it was fetched, or fresh for too long.
    #[error("entry timestamps are not sane")]
    BadTimestamps,
    /// Only 200 responses are cached.
    #[error("only 200 responses are cached")]
    BadStatus,
    /// The request is not canonical or out of bounds.
    #[error("request is not canonical: {0}")]
    BadRequest(#[from] crate::request::RequestError),
    /// Too many or too large headers, or a body over [`MAX_BODY_LEN`].
    #[error("entry exceeds size limits")]
    TooLarge,
}

/// Everything about a cached response except its body: small enough to gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// The request this answers.
    pub request: CanonicalRequest,
    /// HTTP status (always 200 for cached entries).
    pub status: u16,
    /// Kept response headers, lower-case names (see [`KEPT_HEADERS`]).
    pub headers: Vec<(String, String)>,
    /// CIDv1 bytes of the body.
    pub cid: ByteBuf,
    /// Body length, so that a receiver can bound a body fetch before it starts.
    pub body_len: u64,
    /// `ETag` as GitHub sent it.
    pub etag: Option<String>,
    /// `Last-Modified` as GitHub sent it.
    pub last_modified: Option<String>,
    /// Fingerprint of the token that received the ETag: GitHub ETags are per token.
    pub etag_token: Option<ByteBuf>,
    /// When the response (or its last 304) came from GitHub, unix ms.
    pub fetched_at_ms: u64,
    /// Until when the entry is fresh, unix ms.
    pub fresh_until_ms: u64,
    /// Peer id (text) of the node that fetched it from GitHub.
    pub origin: String,
}

impl EntryMeta {
    /// The cache key of this entry's request.
    pub fn key(&self) -> CacheKey {
        self.request.key()
    }

    /// Fresh at `now_ms`?
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until_ms
    }

    /// A header value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks key, status, sizes and timestamps (not the body: see [`Entry::validate`]).
    pub fn validate(&self, key: &CacheKey, now_ms: u64) -> Result<(), ValidationError> {
        self.request.check()?;
        if &self.request.key() != key {
            return Err(ValidationError::KeyMismatch);
        }
        if self.status != 200 {
            return Err(ValidationError::BadStatus);
        }
        if self.headers.len() > MAX_HEADERS
            || self
                .headers
                .iter()
                .any(|(k, v)| k.len() + v.len() > MAX_HEADER_LEN)
            || self.body_len > MAX_BODY_LEN as u64
            || self.origin.len() > 128
            || self.etag.as_ref().is_some_and(|e| e.len() > 1024)
            || self.last_modified.as_ref().is_some_and(|e| e.len() > 128)
        {
            return Err(ValidationError::TooLarge);
        }
        if self.fetched_at_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS)
            || self.fresh_until_ms < self.fetched_at_ms
            || self.fresh_until_ms - self.fetched_at_ms > MAX_TTL_MS
        {
            return Err(ValidationError::BadTimestamps);
        }
        if Cid::try_from(self.cid.as_slice()).is_err() {
            return Err(ValidationError::CidMismatch);
        }
        Ok(())
    }

    /// Does `body` belong to this entry?
    pub fn body_matches(&self, body: &[u8]) -> bool {
        body.len() as u64 == self.body_len && body_cid(body).to_bytes() == self.cid.as_slice()
    }
}

/// What a receiver applies to an entry a peer sent, before validating and storing it:
/// its own freshness rule and the upstream its clients are sent to.
#[derive(Debug, Clone, Copy)]
pub struct PeerRules<'a> {
    /// The receiver's freshness settings (`--ttl`, `--graphql-ttl`).
    pub ttl: crate::freshness::TtlSettings,
    /// The receiver's upstream base URL: `Link` URLs must point there.
    pub upstream_base: Option<&'a str>,
}

impl EntryMeta {
    /// Makes a peer's metadata what this node would have created: `fetched_at` no later
    /// than `now` plus [`FETCHED_AT_SKEW_MS`]; freshness no longer than this node's own
    /// rule gives from that time (a peer can shorten it, never extend it); only the
    /// [`KEPT_HEADERS`], and `Link` only when every URL in it points at the upstream.
    pub fn adopt(mut self, rules: PeerRules<'_>, now_ms: u64) -> Self {
        self.headers.retain(|(k, v)| {
            KEPT_HEADERS.contains(&k.as_str())
                && (k != "link" || link_points_at(v, rules.upstream_base))
        });
        let fetched = self
            .fetched_at_ms
            .min(now_ms.saturating_add(FETCHED_AT_SKEW_MS));
        let ttl_ms =
            crate::freshness::freshness_ttl_secs(&self.request, &self.headers, rules.ttl) * 1000;
        self.fresh_until_ms = self.fresh_until_ms.min(fetched.saturating_add(ttl_ms));
        self.fetched_at_ms = fetched;
        self
    }

    /// The end of freshness a peer's 304 may give this entry: the claimed one, capped by
    /// this node's own rule from the (clamped) time of the 304.
    pub fn adopt_refresh(
        &self,
        fetched_at_ms: u64,
        fresh_until_ms: u64,
        rules: PeerRules<'_>,
        now_ms: u64,
    ) -> (u64, u64) {
        let fetched = fetched_at_ms.min(now_ms.saturating_add(FETCHED_AT_SKEW_MS));
        let ttl_ms =
            crate::freshness::freshness_ttl_secs(&self.request, &self.headers, rules.ttl) * 1000;
        (fetched, fresh_until_ms.min(fetched.saturating_add(ttl_ms)))
    }
}

/// Every `<url>` in a `Link` header value starts with `base` (none known: refuse).
fn link_points_at(value: &str, base: Option<&str>) -> bool {
    let Some(base) = base.filter(|b| !b.is_empty()) else {
        return false;
    };
    let base = base.trim_end_matches('/');
    value.split(',').all(|part| {
        let part = part.trim();
        part.strip_prefix('<')
            .and_then(|p| p.split_once('>'))
            .is_some_and(|(url, _)| {
                url.strip_prefix(base).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
                })
            })
    })
}

/// A cached response with its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Everything but the body.
    pub meta: EntryMeta,
    /// The response body: shared, not copied, from the upstream response or the store
    /// to every reader and peer it goes to (same CBOR byte string as before).
    pub body: Bytes,
}

impl Entry {
    /// Builds an entry for a 200 response, computing its CID.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        request: CanonicalRequest,
        headers: Vec<(String, String)>,
        body: impl Into<Bytes>,
        etag_token: Option<[u8; 8]>,
        fetched_at_ms: u64,
        fresh_until_ms: u64,
        origin: String,
    ) -> Self {
        let body = body.into();
        let etag = headers
            .iter()
            .find(|(k, _)| k == "etag")
            .map(|(_, v)| v.clone());
        let last_modified = headers
            .iter()
            .find(|(k, _)| k == "last-modified")
            .map(|(_, v)| v.clone());
        let meta = EntryMeta {
            request,
            status: 200,
            headers,
            cid: ByteBuf::from(body_cid(&body).to_bytes()),
            body_len: body.len() as u64,
            etag_token: etag
                .as_ref()
                .and(etag_token)
                .map(|t| ByteBuf::from(t.to_vec())),
            etag,
            last_modified,
            fetched_at_ms,
            fresh_until_ms,
            origin,
        };
        Self { meta, body }
    }

    /// Full validation: [`EntryMeta::validate`] plus the body against its CID.
    pub fn validate(&self, key: &CacheKey, now_ms: u64) -> Result<(), ValidationError> {
        self.meta.validate(key, now_ms)?;
        if self.body.len() > MAX_BODY_LEN {
            return Err(ValidationError::TooLarge);
        }
        if !self.meta.body_matches(&self.body) {
            return Err(ValidationError::CidMismatch);
        }
        Ok(())
    }
}

/// What to do when a version of an entry arrives and another may already be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Keep the incoming entry (none held, or it is newer with another body).
    Store,
    /// Same body: only move freshness forward to this time.
    Extend {
        /// The new `fresh_until_ms`.
        fresh_until_ms: u64,
        /// The new `fetched_at_ms` (time of the revalidation).
        fetched_at_ms: u64,
    },
    /// The held entry is as new or newer: ignore the incoming one.
    Keep,
}

/// Newer wins; the same CID only extends freshness (that is how a 304 spreads).
pub fn merge(held: Option<&EntryMeta>, incoming: &EntryMeta) -> Merge {
    let Some(held) = held else {
        return Merge::Store;
    };
    if held.cid == incoming.cid {
        if incoming.fresh_until_ms > held.fresh_until_ms {
            Merge::Extend {
                fresh_until_ms: incoming.fresh_until_ms,
                fetched_at_ms: incoming.fetched_at_ms.max(held.fetched_at_ms),
            }
        } else {
            Merge::Keep
        }
    } else if incoming.fetched_at_ms > held.fetched_at_ms {
        Merge::Store
    } else {
        Merge::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &[u8], fetched: u64, fresh: u64) -> Entry {
        Entry::new(
            CanonicalRequest::get("/repos/o/r").unwrap(),
            vec![("etag".into(), "\"abc\"".into())],
            body.to_vec(),
            Some([1; 8]),
            fetched,
            fresh,
            "peer".into(),
        )
    }

    #[test]
    fn cid_known_answer() {
        assert_eq!(
            body_cid(b"hello").to_string(),
            "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
        );
        assert_eq!(
            cid_string(&body_cid(b"hello").to_bytes()),
            "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"
        );
    }

    #[test]
    fn valid_entry_passes_and_tampering_fails() {
        let now = 1_000_000;
        let e = entry(b"{}", now, now + 60_000);
        let key = e.meta.key();
        assert_eq!(e.validate(&key, now), Ok(()));
        assert_eq!(e.meta.etag.as_deref(), Some("\"abc\""));

        let mut body = e.clone();
        body.body = Bytes::from_static(b"{\"x\":1}");
        assert_eq!(body.validate(&key, now), Err(ValidationError::CidMismatch));

        let other = CanonicalRequest::get("/repos/o/other").unwrap().key();
        assert_eq!(e.validate(&other, now), Err(ValidationError::KeyMismatch));

        let future = entry(
            b"{}",
            now + MAX_CLOCK_SKEW_MS + 1,
            now + MAX_CLOCK_SKEW_MS + 2,
        );
        assert_eq!(
            future.validate(&key, now),
            Err(ValidationError::BadTimestamps)
        );
        let backwards = entry(b"{}", now, now - 1);
        assert_eq!(
            backwards.validate(&key, now),
            Err(ValidationError::BadTimestamps)
        );
        let forever = entry(b"{}", now, now + MAX_TTL_MS + 1);
        assert_eq!(
            forever.validate(&key, now),
            Err(ValidationError::BadTimestamps)
        );

        let mut status = e.clone();
        status.meta.status = 404;
        assert_eq!(status.validate(&key, now), Err(ValidationError::BadStatus));

        let mut headers = e;
        headers.meta.headers = vec![("x".into(), "y".into()); MAX_HEADERS + 1];
        assert_eq!(headers.validate(&key, now), Err(ValidationError::TooLarge));
    }

    #[test]
    fn adopted_entries_cannot_outlive_our_rules_or_win_from_the_future() {
        let now = 10_000_000;
        let rules = PeerRules {
            ttl: Default::default(),
            upstream_base: Some("https://api.github.com"),
        };
        // From the future, fresh for a day, with headers a client should never see.
        let mut e = entry(b"{}", now + 3_600_000, now + 3_600_000 + MAX_TTL_MS);
        e.meta.headers = vec![
            ("content-type".into(), "application/json".into()),
            ("set-cookie".into(), "x=1".into()),
            (
                "link".into(),
                "<https://evil.example/x>; rel=\"next\"".into(),
            ),
        ];
        let m = e.meta.clone().adopt(rules, now);
        assert_eq!(m.fetched_at_ms, now + FETCHED_AT_SKEW_MS);
        // /repos/o/r is repository metadata: 300 s by our rule.
        assert_eq!(m.fresh_until_ms, now + FETCHED_AT_SKEW_MS + 300_000);
        assert_eq!(
            m.headers,
            vec![("content-type".to_string(), "application/json".to_string())]
        );
        assert_eq!(m.validate(&m.key(), now), Ok(()));

        // An honest entry passes unchanged, links to the upstream included.
        let mut honest = entry(b"{}", now - 1000, now + 60_000);
        honest.meta.headers.push((
            "link".into(),
            "<https://api.github.com/repos/o/r?page=2>; rel=\"next\", <https://api.github.com/repos/o/r?page=9>; rel=\"last\"".into(),
        ));
        assert_eq!(honest.meta.clone().adopt(rules, now), honest.meta);
        // A peer may shorten freshness, never extend it.
        let short = entry(b"{}", now, now + 1).meta.adopt(rules, now);
        assert_eq!(short.fresh_until_ms, now + 1);
        // Same host, other prefix: not the upstream.
        assert!(!link_points_at(
            "<https://api.github.com.evil.example/x>; rel=\"next\"",
            Some("https://api.github.com")
        ));
        assert!(!link_points_at("<https://api.github.com/x>", None));

        let (f, u) = honest
            .meta
            .adopt_refresh(now + 3_600_000, now + MAX_TTL_MS, rules, now);
        assert_eq!(
            (f, u),
            (now + FETCHED_AT_SKEW_MS, now + FETCHED_AT_SKEW_MS + 300_000)
        );
    }

    #[test]
    fn newer_wins_and_same_cid_extends() {
        let old = entry(b"v1", 1000, 2000);
        let refreshed = entry(b"v1", 3000, 4000);
        let newer = entry(b"v2", 3000, 4000);
        let older = entry(b"v0", 500, 900);
        assert_eq!(merge(None, &old.meta), Merge::Store);
        assert_eq!(
            merge(Some(&old.meta), &refreshed.meta),
            Merge::Extend {
                fresh_until_ms: 4000,
                fetched_at_ms: 3000
            }
        );
        assert_eq!(merge(Some(&refreshed.meta), &old.meta), Merge::Keep);
        assert_eq!(merge(Some(&old.meta), &newer.meta), Merge::Store);
        assert_eq!(merge(Some(&newer.meta), &older.meta), Merge::Keep);
    }
}
