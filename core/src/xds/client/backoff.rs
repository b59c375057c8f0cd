//! Reconnect delays: exponential, capped, with jitter so that every node of
//! a cluster does not reconnect in the same instant after a control plane
//! restart.

use std::time::Duration;

const MIN_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct Backoff {
    current: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(max: Duration) -> Self {
        Self {
            current: MIN_DELAY.min(max),
            max,
        }
    }

    /// After a stream that delivered pushes: the next failure starts over.
    pub fn reset(&mut self) {
        self.current = MIN_DELAY.min(self.max);
    }

    /// A delay in [current/2, current]; the next one doubles, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let full = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = full / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(1));
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = backoff.next_delay();
            assert!(last <= Duration::from_secs(1));
        }
        assert!(last >= Duration::from_millis(500));
        backoff.reset();
        assert!(backoff.next_delay() <= MIN_DELAY);
    }
}
