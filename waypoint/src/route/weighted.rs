//! Weighted random choice among a rule's destinations.

use rand::Rng;

/// Items with relative weights; items of weight 0 are never chosen.
#[derive(Clone, Debug)]
pub(crate) struct Weighted<T> {
    /// Each item with the running total of weights up to and including it.
    items: Vec<(u64, T)>,
    total: u64,
}

impl<T> Weighted<T> {
    /// Builds the choice; `None` when nothing has a positive weight.
    pub(crate) fn new(items: impl IntoIterator<Item = (u64, T)>) -> Option<Self> {
        let mut total = 0u64;
        let items: Vec<(u64, T)> = items
            .into_iter()
            .filter(|(w, _)| *w > 0)
            .map(|(w, t)| {
                total = total.saturating_add(w);
                (total, t)
            })
            .collect();
        (total > 0).then_some(Self { items, total })
    }

    /// One item, chosen with probability weight / total.
    pub(crate) fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<&T> {
        if let [(_, only)] = self.items.as_slice() {
            return Some(only);
        }
        let r = rng.random_range(0..self.total);
        let i = self.items.partition_point(|(upto, _)| *upto <= r);
        self.items.get(i).map(|(_, t)| t)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn split_follows_weights() {
        let w = Weighted::new([(1, 'a'), (0, 'z'), (3, 'b')]).unwrap();
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = [0u32; 2];
        for _ in 0..40_000 {
            match w.pick(&mut rng) {
                Some('a') => counts[0] += 1,
                Some('b') => counts[1] += 1,
                other => panic!("picked {other:?}"),
            }
        }
        assert!((9_400..=10_600).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn nothing_positive_is_none() {
        assert!(Weighted::new([(0, 'a')]).is_none());
        assert!(Weighted::<char>::new([]).is_none());
    }
}
