//! The last hour of the node's main figures, for the status page's chart
//! (`/_ghmesh/history`, contract §11).
//!
//! A fixed-size ring of samples, taken every [`SAMPLE_EVERY`] by a task the node owns.
//! Counters are kept as totals, not rates: a reader takes differences, so a sample
//! that is late or missing never turns into a wrong rate, only a longer step.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::stats::Stats;

/// How often the node samples its figures.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour at [`SAMPLE_EVERY`]. About 60 bytes each, so the whole ring
/// stays under 25 KiB.
pub const SAMPLES: usize = 360;

/// The figures of one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When, in unix milliseconds (the node's clock).
    pub t: u64,
    /// Requests sent upstream so far (quota spent, 304s included).
    pub upstream_calls: u64,
    /// Requests answered without spending quota so far.
    pub api_calls_saved: u64,
    /// Requests fetched upstream with quota spent so far.
    pub misses: u64,
    /// Requests passed through uncached so far.
    pub bypass: u64,
    /// Members admitted at that moment.
    pub members: usize,
    /// Peers connected at that moment.
    pub connected_peers: usize,
    /// The node token's remaining rate limit, when GitHub has told it.
    pub rate_remaining: Option<u64>,
}

impl Sample {
    /// The sample of `stats`, taken at `t`.
    pub fn of(stats: &Stats, t: u64) -> Self {
        Self {
            t,
            upstream_calls: stats.counters.upstream_calls,
            api_calls_saved: stats.api_calls_saved,
            misses: stats.counters.misses,
            bypass: stats.counters.bypass,
            members: stats.members,
            connected_peers: stats.connected_peers,
            rate_remaining: stats.rate_limit.remaining,
        }
    }
}

/// The ring of samples, oldest first.
#[derive(Debug, Clone)]
pub struct History {
    samples: VecDeque<Sample>,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        Self::with_capacity(SAMPLES)
    }
}

impl History {
    /// A ring that keeps at most `capacity` samples (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            samples: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Adds `sample`, dropping the oldest when full. A sample older than the newest is
    /// ignored: the wall clock stepped back, and a chart must not fold onto itself.
    pub fn record(&mut self, sample: Sample) {
        if self.samples.back().is_some_and(|last| sample.t < last.t) {
            return;
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter()
    }

    /// How many samples are kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// No sample yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// `/_ghmesh/history`: the ring plus the moment of the request, so the chart always
/// ends now even between samples.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    /// Milliseconds between samples.
    pub interval_ms: u64,
    /// Oldest first; the last one is the figures at the time of the request.
    pub samples: Vec<Sample>,
}

impl HistoryReport {
    /// The report of `history` followed by `now`.
    pub fn new(history: &History, now: Sample) -> Self {
        let mut samples: Vec<Sample> = history.samples().copied().collect();
        if samples.last().is_none_or(|last| now.t >= last.t) {
            samples.push(now);
        }
        Self {
            interval_ms: SAMPLE_EVERY.as_millis() as u64,
            samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: u64, calls: u64) -> Sample {
        Sample {
            t,
            upstream_calls: calls,
            api_calls_saved: 0,
            misses: 0,
            bypass: 0,
            members: 0,
            connected_peers: 0,
            rate_remaining: None,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_in_order() {
        let mut h = History::with_capacity(3);
        for i in 0..5 {
            h.record(at(i * 10, i));
        }
        let kept: Vec<u64> = h.samples().map(|s| s.t).collect();
        assert_eq!(kept, vec![20, 30, 40]);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn a_clock_that_steps_back_does_not_fold_the_chart() {
        let mut h = History::with_capacity(5);
        h.record(at(100, 1));
        h.record(at(50, 2));
        h.record(at(100, 3));
        let kept: Vec<(u64, u64)> = h.samples().map(|s| (s.t, s.upstream_calls)).collect();
        assert_eq!(kept, vec![(100, 1), (100, 3)]);
    }

    #[test]
    fn the_report_ends_with_the_figures_of_the_request() {
        let mut h = History::with_capacity(5);
        h.record(at(10, 1));
        let r = HistoryReport::new(&h, at(15, 4));
        assert_eq!(r.samples.len(), 2);
        assert_eq!(r.samples[1].upstream_calls, 4);
        assert_eq!(r.interval_ms, SAMPLE_EVERY.as_millis() as u64);
        // A `now` behind the last sample (clock stepped back) is left out.
        let r = HistoryReport::new(&h, at(5, 9));
        assert_eq!(r.samples.len(), 1);
        assert!(History::with_capacity(0).samples.capacity() >= 1);
        assert!(History::default().is_empty());
    }

    #[test]
    fn an_hour_of_samples_is_kept() {
        assert_eq!(
            SAMPLE_EVERY.as_secs() * SAMPLES as u64,
            3600,
            "the chart shows the last hour"
        );
    }
}
