//! The cap on requests in flight to GitHub, with a bounded first-come-first-served
//! queue: beyond it a request is refused at once (the client gets `503` and
//! `retry-after`), never left hanging.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::GetError;

use crate::limits::UPSTREAM_QUEUE_PER_SLOT as QUEUE_PER_SLOT;

/// The upstream gate.
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A place in flight; released on drop.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    /// At most `concurrency` in flight (at least one), `32 × concurrency` waiting.
    pub(crate) fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            max_waiting: concurrency * QUEUE_PER_SLOT,
        }
    }

    /// Waits for a slot (tokio's semaphore serves waiters in order); `Busy` when the
    /// queue is full.
    pub(crate) async fn enter(&self) -> Result<Slot, GetError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(GetError::Busy);
        }
        // A client that hangs up while queued drops this future mid-await: the place
        // must be given back then too, or every disconnect shrinks the queue for good.
        let _place = Queued(&self.waiting);
        self.slots
            .clone()
            .acquire_owned()
            .await
            .map(|p| Slot { _permit: p })
            .map_err(|_| GetError::Closed)
    }
}

/// A place in the queue; given back on drop, whether the wait ended or was abandoned.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_n_in_flight_and_a_bounded_queue() {
        let gate = Arc::new(Gate::new(1));
        let first = gate.enter().await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..QUEUE_PER_SLOT {
            let g = gate.clone();
            waiters.push(tokio::spawn(async move { g.enter().await.map(|_| ()) }));
        }
        // Let every waiter queue up.
        while gate.waiting.load(Ordering::SeqCst) < QUEUE_PER_SLOT {
            tokio::task::yield_now().await;
        }
        assert!(matches!(gate.enter().await, Err(GetError::Busy)));
        drop(first);
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        assert!(gate.enter().await.is_ok(), "room again");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_frees_its_place_in_the_queue() {
        let gate = Arc::new(Gate::new(1));
        let held = gate.enter().await.unwrap();
        for _ in 0..3 * QUEUE_PER_SLOT {
            // A client that disconnects while queued: its future is dropped mid-wait.
            let g = gate.clone();
            let waiter = tokio::spawn(async move { g.enter().await.map(|_| ()) });
            while gate.waiting.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
            waiter.abort();
            let _ = waiter.await;
            assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
        }
        drop(held);
        assert!(gate.enter().await.is_ok());
    }
}
