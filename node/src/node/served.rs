//! What a read produces: the answer, how it was produced, or why there is none.

use std::sync::Arc;

use ghmesh_protocol::Entry;

use crate::upstream::{UpstreamError, UpstreamResponse};

pub use crate::policy::CacheStatus;

/// What answers a request.
#[derive(Debug, Clone)]
pub enum Body {
    /// A cached entry.
    Entry(Arc<Entry>),
    /// An upstream response passed through (errors, uncacheable).
    Upstream(Arc<UpstreamResponse>),
}

/// A served request.
#[derive(Debug, Clone)]
pub struct Served {
    /// The answer.
    pub body: Body,
    /// How it was produced.
    pub status: CacheStatus,
    /// The answer is durably in the store (false for pass-through answers, and for a
    /// fetched entry whose store write failed: it is served, but not acknowledged).
    pub stored: bool,
}

impl Served {
    /// A fresh answer now in the store and announced: what the fleet can have. A stale
    /// copy served after an upstream failure is stored but shares nothing new.
    pub(crate) fn shared(&self) -> bool {
        self.stored && self.status != CacheStatus::Stale
    }

    /// An entry from the store.
    pub(crate) fn entry(entry: Entry, status: CacheStatus) -> Self {
        Self {
            body: Body::Entry(Arc::new(entry)),
            status,
            stored: true,
        }
    }

    /// An upstream answer passed through.
    pub(crate) fn upstream(resp: UpstreamResponse, status: CacheStatus) -> Self {
        Self {
            body: Body::Upstream(Arc::new(resp)),
            status,
            stored: false,
        }
    }

    /// HTTP status of the answer.
    pub fn http_status(&self) -> u16 {
        match &self.body {
            Body::Entry(e) => e.meta.status,
            Body::Upstream(r) => r.status,
        }
    }

    /// Response body bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.body {
            Body::Entry(e) => &e.body,
            Body::Upstream(r) => &r.body,
        }
    }
}

/// Failures of a read that produced no response at all.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GetError {
    /// Upstream unreachable or timed out and nothing cached.
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    /// The store failed (the write carrying the answer, or the store itself).
    #[error("cache store: {reason}")]
    Store {
        /// What failed, as the store said it.
        reason: String,
        /// It was the disk (the store is reopened), not the data.
        io: bool,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    Closed,
    /// Too many requests are waiting for GitHub already; try again shortly.
    #[error("too many requests are waiting for GitHub; retry shortly")]
    Busy,
}
