//! Shared pieces of the gantry benchmark tools run by `bench/run`.
//!
//! The binaries of this crate are the fixed points of every measurement: `bench-backend` is
//! the upstream every proxy forwards to, `ws-load` drives WebSocket round trips and idle
//! connections, `route-load` drives a configurable-http-proxy compatible route API. This
//! library holds what they share: runtime construction and latency summaries.

use std::time::Duration;

use serde_json::{Value, json};

/// Builds a Tokio runtime: a current-thread one for `threads == 1` (the cheapest way to keep a
/// tool on one pinned core), else a multi-thread one with that many workers.
pub fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    Ok(runtime)
}

/// Latency samples in microseconds, summarised as the benchmark tables report them.
#[derive(Debug, Default)]
pub struct Latencies {
    samples: Vec<u32>,
}

impl Latencies {
    /// An empty set with room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            samples: Vec::with_capacity(capacity),
        }
    }

    /// Records one sample.
    pub fn record(&mut self, elapsed: Duration) {
        self.samples
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
    }

    /// Moves the samples of `other` into this set.
    pub fn merge(&mut self, other: Self) {
        self.samples.extend(other.samples);
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Count, mean, p50, p90, p99 and max in microseconds, as a JSON object. Sorts the samples.
    pub fn summary(&mut self) -> Value {
        self.samples.sort_unstable();
        let mean = if self.samples.is_empty() {
            0.0
        } else {
            self.samples.iter().map(|&s| f64::from(s)).sum::<f64>() / self.samples.len() as f64
        };
        json!({
            "count": self.samples.len(),
            "mean_us": (mean * 10.0).round() / 10.0,
            "p50_us": self.percentile(50.0),
            "p90_us": self.percentile(90.0),
            "p99_us": self.percentile(99.0),
            "max_us": self.samples.last().copied().unwrap_or(0),
        })
    }

    /// The nearest-rank percentile of sorted samples; 0 when there are none.
    fn percentile(&self, p: f64) -> u32 {
        if self.samples.is_empty() {
            return 0;
        }
        let rank = (p / 100.0 * self.samples.len() as f64).ceil() as usize;
        self.samples[rank.clamp(1, self.samples.len()) - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut latencies = Latencies::default();
        for us in (1..=100).rev() {
            latencies.record(Duration::from_micros(us));
        }
        let summary = latencies.summary();
        assert_eq!(summary["count"], 100);
        assert_eq!(summary["p50_us"], 50);
        assert_eq!(summary["p99_us"], 99);
        assert_eq!(summary["max_us"], 100);
    }

    #[test]
    fn empty_summary_is_zero() {
        let summary = Latencies::default().summary();
        assert_eq!(summary["count"], 0);
        assert_eq!(summary["p99_us"], 0);
    }
}
