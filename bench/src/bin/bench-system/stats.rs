//! Order statistics over latency samples.

use std::time::Duration;

/// p50 / p99 / max (nearest rank) of a sample set, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (ms).
    pub p50: f64,
    /// 99th percentile (ms).
    pub p99: f64,
    /// Maximum (ms).
    pub max: f64,
}

/// Nearest-rank percentile `p` (0..=100) of sorted `v`; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Summary of `samples`; `None` when empty.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Some(Summary {
        n: ms.len(),
        p50: percentile(&ms, 50.0)?,
        p99: percentile(&ms, 99.0)?,
        max: *ms.last()?,
    })
}

/// Median of `v` (nearest rank, lower middle); `None` when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            self.p50, self.p99, self.max, self.n
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn summary_in_ms() {
        let d: Vec<Duration> = [5u64, 1, 3, 2, 4]
            .iter()
            .map(|m| Duration::from_millis(*m))
            .collect();
        let s = summarize(&d).expect("non-empty");
        assert_eq!((s.n, s.p50, s.p99, s.max), (5, 3.0, 5.0, 5.0));
        assert!(summarize(&[]).is_none());
    }
}
