//! An in-memory [`Upstream`]: deterministic bodies per path, ETags, 304s, latency and
//! failure injection, and counters. Lets mesh tests run without HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use ghmesh_node::upstream::{
    BoxFuture, Conditional, Credential, RateLimit, Upstream, UpstreamError, UpstreamResponse,
};
use ghmesh_protocol::CanonicalRequest;
use sha2::{Digest, Sha256};

/// In-memory upstream.
#[derive(Default)]
pub struct MemoryUpstream {
    full: AtomicU64,
    not_modified: AtomicU64,
    calls: AtomicU64,
    latency_ms: AtomicU64,
    failing: AtomicBool,
    version: AtomicU64,
    sizes: Mutex<HashMap<String, usize>>,
    per_path: Mutex<HashMap<String, u64>>,
    last_body: Mutex<Option<Bytes>>,
}

impl MemoryUpstream {
    /// A new upstream with no latency.
    pub fn new() -> Self {
        Self::default()
    }

    /// Full (200) answers so far: the quota spent.
    pub fn full(&self) -> u64 {
        self.full.load(Ordering::SeqCst)
    }

    /// 304 answers so far.
    pub fn not_modified(&self) -> u64 {
        self.not_modified.load(Ordering::SeqCst)
    }

    /// Every call, answered or failed.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Full answers for one path.
    pub fn full_for(&self, path: &str) -> u64 {
        self.per_path
            .lock()
            .map(|m| m.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// The body of the last full answer, as it was handed to the node.
    pub fn last_body(&self) -> Option<Bytes> {
        self.last_body.lock().ok().and_then(|b| b.clone())
    }

    /// Delay before every answer.
    pub fn set_latency(&self, d: Duration) {
        self.latency_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answer 503 to everything while set.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Changes every body (and ETag).
    pub fn bump(&self) {
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    /// Body size for one path (default: about 2 KiB).
    pub fn set_size(&self, path: &str, size: usize) {
        if let Ok(mut m) = self.sizes.lock() {
            m.insert(path.to_string(), size);
        }
    }

    /// The body this upstream returns for `path` now.
    pub fn body_for(&self, path: &str) -> Vec<u8> {
        let size = self
            .sizes
            .lock()
            .ok()
            .and_then(|m| m.get(path).copied())
            .unwrap_or(2048);
        let v = self.version.load(Ordering::SeqCst);
        let mut body = format!("{{\"path\":\"{path}\",\"version\":{v},\"pad\":\"").into_bytes();
        let seed = Sha256::digest(format!("{path}/{v}").as_bytes());
        let mut i = 0usize;
        while body.len() + 2 < size {
            body.push(b'a' + seed[i % 32] % 26);
            i += 1;
        }
        body.extend_from_slice(b"\"}");
        body
    }

    fn etag(body: &[u8]) -> String {
        format!("\"{}\"", hex::encode(&Sha256::digest(body)[..8]))
    }
}

impl Upstream for MemoryUpstream {
    fn fetch<'a>(
        &'a self,
        req: &'a CanonicalRequest,
        cond: Conditional,
        _cred: &'a Credential,
    ) -> BoxFuture<'a, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let latency = self.latency_ms.load(Ordering::SeqCst);
            if latency > 0 {
                tokio::time::sleep(Duration::from_millis(latency)).await;
            }
            if self.failing.load(Ordering::SeqCst) {
                return Ok(UpstreamResponse::json_error(503, "unavailable"));
            }
            let path = req.path_and_query();
            let body = self.body_for(&path);
            let etag = Self::etag(&body);
            let headers = vec![
                (
                    "content-type".to_string(),
                    "application/json; charset=utf-8".to_string(),
                ),
                ("etag".to_string(), etag.clone()),
                ("x-ratelimit-limit".to_string(), "5000".to_string()),
            ];
            if cond.etag.as_deref() == Some(etag.as_str()) {
                self.not_modified.fetch_add(1, Ordering::SeqCst);
                return Ok(UpstreamResponse {
                    status: 304,
                    headers,
                    body: Bytes::new(),
                });
            }
            self.full.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut m) = self.per_path.lock() {
                *m.entry(path).or_insert(0) += 1;
            }
            let body = Bytes::from(body);
            if let Ok(mut last) = self.last_body.lock() {
                *last = Some(body.clone());
            }
            Ok(UpstreamResponse {
                status: 200,
                headers,
                body,
            })
        })
    }

    fn forward<'a>(
        &'a self,
        method: &'a str,
        path_and_query: &'a str,
        _headers: Vec<(String, String)>,
        _body: Bytes,
    ) -> BoxFuture<'a, Result<UpstreamResponse, UpstreamError>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let body = format!("{{\"method\":\"{method}\",\"path\":\"{path_and_query}\"}}");
            Ok(UpstreamResponse {
                status: 200,
                headers: Vec::new(),
                body: Bytes::from(body),
            })
        })
    }

    fn base(&self) -> Option<&str> {
        Some("https://api.github.com")
    }

    fn token_fingerprint(&self) -> Option<[u8; 8]> {
        None
    }

    fn rate_limit(&self) -> RateLimit {
        RateLimit::default()
    }
}
