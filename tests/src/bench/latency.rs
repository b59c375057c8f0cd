//! Latency figures: per run, the p50 and p99 of many 1-byte round trips;
//! each figure is the median of the runs.

use tokio::io::{AsyncRead, AsyncWrite};

use super::workload::ping_pong;
use super::{Figure, median, percentile};

#[derive(Clone, Debug, Default)]
pub struct LatencyRuns {
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl LatencyRuns {
    /// One run on `stream` (whose peer echoes).
    pub async fn record<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        warmup: usize,
        iterations: usize,
    ) -> std::io::Result<()> {
        let mut samples = ping_pong(stream, warmup, iterations).await?;
        samples.sort_by(f64::total_cmp);
        self.p50.push(percentile(&samples, 50.0));
        self.p99.push(percentile(&samples, 99.0));
        Ok(())
    }

    /// `latency_p50` and `latency_p99`, mesh against baseline.
    pub fn figures(mesh: Self, baseline: Self) -> [Figure; 2] {
        [
            Figure::new(
                "latency_p50",
                "µs",
                median(mesh.p50),
                Some(median(baseline.p50)),
                false,
            ),
            Figure::new(
                "latency_p99",
                "µs",
                median(mesh.p99),
                Some(median(baseline.p99)),
                false,
            ),
        ]
    }
}
