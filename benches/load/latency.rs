//! Percentiles of latency samples.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of one set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Computes nearest-rank percentiles, all zero when there are no samples.
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let rank = |quantile: f64| {
            let index = (quantile * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1].as_secs_f64() * 1000.0
        };
        Self {
            samples: samples.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            p999_ms: rank(0.999),
            max_ms: rank(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_of_hundred_samples() {
        let samples = (1..=100).map(Duration::from_millis).collect();

        let percentiles = Percentiles::of(samples);

        assert_eq!(percentiles.p50_ms, 50.0);
        assert_eq!(percentiles.p99_ms, 99.0);
        assert_eq!(percentiles.max_ms, 100.0);
    }
}
