//! Whether the node can keep its promise that an answered entry is durable: degraded
//! while store writes fail, failed when the store cannot be reopened.

use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// Whether the node can keep its promises (entries durable before they are answered);
/// `/_ghmesh/health` reports it.
#[derive(Default)]
pub(crate) struct Health {
    /// Why writes fail now (cleared by the next commit that succeeds). Both locks are
    /// `std::sync::Mutex`es: set and read in one statement, never held across an await.
    degraded: Mutex<Option<String>>,
    /// Set once the store could not be reopened: the node must stop.
    failure: Mutex<Option<String>>,
    pub(super) failed: CancellationToken,
}

impl Health {
    pub(crate) fn degrade(&self, reason: String) {
        if let Ok(mut d) = self.degraded.lock() {
            *d = Some(reason);
        }
    }

    pub(crate) fn healthy(&self) {
        if let Ok(mut d) = self.degraded.lock() {
            *d = None;
        }
    }

    pub(crate) fn fail(&self, reason: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(reason);
        }
        self.failed.cancel();
    }

    pub(super) fn reason(&self) -> Option<String> {
        let failure = self.failure.lock().ok().and_then(|f| f.clone());
        failure.or_else(|| self.degraded.lock().ok().and_then(|d| d.clone()))
    }
}
