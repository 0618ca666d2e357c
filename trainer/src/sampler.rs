//! The order in which training examples are visited: a fresh seeded permutation each epoch,
//! and the batch of any step computable from the step alone, so that a resumed run sees
//! exactly the batches an uninterrupted one would.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Epoch-wise shuffled indices into a training set.
pub struct BatchSampler {
    n: usize,
    batch: usize,
    seed: u64,
    cached: Option<(u64, Vec<usize>)>,
}

impl BatchSampler {
    /// A sampler over `n` examples, `batch` per step.
    pub fn new(n: usize, batch: usize, seed: u64) -> BatchSampler {
        assert!(n > 0 && batch > 0, "a sampler needs examples and a batch size");
        BatchSampler { n, batch, seed, cached: None }
    }

    fn permutation(&mut self, epoch: u64) -> &[usize] {
        if self.cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            let mut p: Vec<usize> = (0..self.n).collect();
            p.shuffle(&mut rng);
            self.cached = Some((epoch, p));
        }
        &self.cached.as_ref().expect("just filled").1
    }

    /// Indices of the examples of 0-based `step`; a batch that crosses an epoch boundary takes
    /// the rest of one permutation and the start of the next.
    pub fn indices(&mut self, step: u64) -> Vec<usize> {
        let start = step * self.batch as u64;
        (0..self.batch as u64)
            .map(|i| {
                let at = start + i;
                let (epoch, offset) = (at / self.n as u64, (at % self.n as u64) as usize);
                self.permutation(epoch)[offset]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_once_per_epoch_and_steps_are_pure() {
        let mut s = BatchSampler::new(10, 4, 1);
        let seen: Vec<usize> = (0..5).flat_map(|step| s.indices(step)).collect(); // 20 = 2 epochs
        for epoch in seen.chunks(10) {
            let mut e = epoch.to_vec();
            e.sort();
            assert_eq!(e, (0..10).collect::<Vec<_>>());
        }
        assert_ne!(seen[..10], seen[10..], "each epoch has its own order");
        let mut fresh = BatchSampler::new(10, 4, 1);
        assert_eq!(fresh.indices(3), seen[12..16]);
    }
}
