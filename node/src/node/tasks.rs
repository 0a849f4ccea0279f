//! The node's owned work: every task it spawns, and the two moments of shutdown
//! (stop taking work; drop what is still running).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every task the node spawns, and how they are told to end.
pub(super) struct Tasks {
    /// Every task the node spawns; `wind_down` waits for them.
    tracker: TaskTracker,
    /// Cancelled when shutdown starts: loops stop taking new work.
    pub(super) stopping: CancellationToken,
    /// Cancelled when shutdown's grace period ends: tasks still running are dropped.
    abort: CancellationToken,
}

impl Tasks {
    pub(super) fn new() -> Self {
        Self {
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    /// Spawns a loop that ends by itself when `stopping` is cancelled.
    pub(super) fn spawn_loop(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(work);
    }

    /// Spawns owned work: `wind_down` waits for it, then drops it after the grace
    /// period.
    pub(super) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let abort = self.abort.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = abort.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// Tells every task to stop and waits at most `grace` for them: the first four
    /// fifths politely, then they are dropped at their next await.
    pub(super) async fn wind_down(&self, grace: Duration) {
        self.stopping.cancel();
        self.tracker.close();
        // Aborted tasks end at their next await: a fifth of the period is plenty, and
        // keeps the whole within the bound the node states.
        let polite = grace.mul_f64(0.8);
        if tokio::time::timeout(polite, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::debug!("shutdown: dropping tasks still running after the grace period");
            self.abort.cancel();
            let _ = tokio::time::timeout(grace - polite, self.tracker.wait()).await;
        }
    }
}
