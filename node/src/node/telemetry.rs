//! What the node tells its operators: counters, gauges set from the stats, the
//! Prometheus registry that exports them with libp2p's metrics, and the last hour of
//! figures.

use std::sync::Mutex;

use prometheus_client::registry::Registry;

use crate::history::{History, HistoryReport, Sample};
use crate::stats::{Counters, Gauges, Stats};

/// Counters, gauges, their registry and the history.
pub(super) struct Telemetry {
    pub(super) counters: Counters,
    /// Gauges set from the stats as `/_ghmesh/metrics` is read.
    gauges: Gauges,
    /// A `std::sync::Mutex`: encoding is synchronous and never awaits; the network
    /// registers its metrics before the node shares it.
    registry: Mutex<Registry>,
    /// The last hour of figures. A `std::sync::Mutex`: held only to push or copy
    /// samples, never across an await.
    history: Mutex<History>,
}

impl Telemetry {
    /// A registry with our counters and gauges in it; the network adds its own
    /// before [`Telemetry::new`] takes it.
    pub(super) fn registry() -> (Registry, Counters, Gauges) {
        let mut registry = Registry::default();
        let counters = Counters::default();
        counters.register(&mut registry);
        let gauges = Gauges::default();
        gauges.register(&mut registry);
        (registry, counters, gauges)
    }

    pub(super) fn new(registry: Registry, counters: Counters, gauges: Gauges) -> Self {
        Self {
            counters,
            gauges,
            registry: Mutex::new(registry),
            history: Mutex::default(),
        }
    }

    /// Prometheus text exposition of everything registered, gauges as last set.
    pub(super) fn text(&self) -> String {
        let mut out = String::new();
        if let Ok(reg) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        }
        out
    }

    /// Sets the gauges from `stats`.
    pub(super) fn set_gauges(&self, stats: &Stats) {
        self.gauges.set(stats);
    }

    /// Adds a sample to the history.
    pub(super) fn record(&self, sample: Sample) {
        if let Ok(mut h) = self.history.lock() {
            h.record(sample);
        }
    }

    /// The last hour, ending with `now`.
    pub(super) fn history(&self, now: Sample) -> HistoryReport {
        match self.history.lock() {
            Ok(h) => HistoryReport::new(&h, now),
            Err(_) => HistoryReport::new(&History::default(), now),
        }
    }
}
