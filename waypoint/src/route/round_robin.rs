//! ROUND_ROBIN endpoint choice.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Picks endpoints in turn, lock-free; share one per destination (service,
/// port, subset). The list may change between calls (discovery updates):
/// the cursor simply continues modulo the new length.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// Starts at the first endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts at `offset`, so that many waypoint replicas do not all hit
    /// the same first endpoint (Envoy starts at a random one).
    pub fn starting_at(offset: usize) -> Self {
        Self {
            next: AtomicUsize::new(offset),
        }
    }

    /// The next endpoint; `None` when `endpoints` is empty.
    pub fn pick<'a, T>(&self, endpoints: &'a [T]) -> Option<&'a T> {
        if endpoints.is_empty() {
            return None;
        }
        // Relaxed: only the counter's own atomicity matters.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        endpoints.get(n % endpoints.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;

    #[test]
    fn cycles_through_endpoints() {
        let rr = RoundRobin::new();
        let eps = ["a", "b", "c"];
        let got: Vec<_> = (0..7).map(|_| *rr.pick(&eps).unwrap()).collect();
        assert_eq!(got, ["a", "b", "c", "a", "b", "c", "a"]);
        assert_eq!(rr.pick::<u8>(&[]), None);
        // A shorter list after an update: still in range.
        assert!(rr.pick(&eps[..1]).is_some());
    }

    #[test]
    fn offset_and_threads_share_evenly() {
        let rr = RoundRobin::starting_at(usize::MAX);
        let eps = [0usize, 1];
        assert_eq!(rr.pick(&eps), Some(&1)); // usize::MAX % 2
        assert_eq!(rr.pick(&eps), Some(&0)); // wrapped to 0
        let rr = Arc::new(RoundRobin::new());
        let eps = Arc::new([0usize, 1, 2, 3]);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (rr, eps) = (rr.clone(), eps.clone());
                std::thread::spawn(move || {
                    let mut counts = [0u32; 4];
                    for _ in 0..1_000 {
                        counts[*rr.pick(&eps[..]).unwrap()] += 1;
                    }
                    counts
                })
            })
            .collect();
        let mut total = [0u32; 4];
        for t in threads {
            for (i, c) in t.join().unwrap().iter().enumerate() {
                total[i] += c;
            }
        }
        assert_eq!(total, [1_000; 4]);
    }
}
