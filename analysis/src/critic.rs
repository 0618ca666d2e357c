//! The one training loop of the analyses' critics: a fresh module trained with AdamW on a frozen
//! run's training split, batches drawn without replacement per epoch, and its final loss reported
//! so that a reader can judge whether it converged. The MI bound ([`crate::mi`]) and the planning
//! MI ([`crate::plan`]) differ only in the critic and in the loss of one batch.

use anyhow::Result;
use burn::backend::Flex;
use burn::backend::flex::FlexDevice;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// How a critic is trained.
#[derive(Debug, Clone, Copy)]
pub struct CriticTraining {
    /// Seed of the critic's initial weights and of the order it visits the training split in.
    pub seed: u64,
    /// AdamW steps.
    pub steps: usize,
    /// Training rows per step.
    pub batch: usize,
    /// AdamW's learning rate.
    pub lr: f64,
}

/// A trained critic and its mean training loss over its last 20 steps.
pub struct Trained<M> {
    pub critic: M,
    pub final_loss: f64,
}

/// Trains a critic over a training split of `n` rows: `draw` makes the critic twice, on the host
/// and on the training device (the device's weights are overwritten by the host's, so every
/// backend starts from the same weights), both under the seed lock; `loss` is the loss of one
/// batch, given the critic and the batch's row indices.
pub fn train<B, M, H>(
    how: CriticTraining,
    n: usize,
    draw: impl FnOnce() -> (H, M),
    mut loss: impl FnMut(&M, &[usize]) -> Result<Tensor<B, 1>>,
    device: &B::Device,
) -> Result<Trained<M>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    H: Module<Flex>,
{
    // Both drawn inside the lock: the shell's draws are overwritten, but must not interleave
    // with another thread's seeded draws.
    let (drawn, shell) = models::seeded::<Flex, _>(how.seed, &FlexDevice, || {
        let (drawn, shell) = draw();
        let _ = (drawn.num_params(), shell.num_params());
        (drawn, shell)
    });
    let mut critic: M = models::transfer(drawn, shell, device)?;
    let mut optim = AdamWConfig::new().init::<B, M>();
    let mut epochs = Epochs::new(n, how.seed);
    let mut recent = Vec::with_capacity(how.steps);
    for _ in 0..how.steps {
        let value = loss(&critic, epochs.next(how.batch))?;
        recent.push(value.clone().into_scalar().elem::<f64>());
        let grads = GradientsParams::from_grads(value.backward(), &critic);
        critic = optim.step(how.lr, critic, grads);
    }
    let tail = &recent[recent.len().saturating_sub(20)..];
    Ok(Trained { critic, final_loss: tail.iter().sum::<f64>() / tail.len().max(1) as f64 })
}

/// Batches of indices into n examples, drawn without replacement within an epoch (a fresh
/// seeded shuffle each epoch; a batch never spans two): how the critics visit a training split.
pub struct Epochs {
    order: Vec<usize>,
    cursor: usize,
    rng: ChaCha8Rng,
}

impl Epochs {
    /// Batches over `n` examples under `seed`.
    pub fn new(n: usize, seed: u64) -> Epochs {
        Epochs { order: (0..n).collect(), cursor: n, rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// The next `k` indices (all of them, reshuffled, if there are fewer than `k`).
    pub fn next(&mut self, k: usize) -> &[usize] {
        if self.cursor + k > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
        }
        let start = self.cursor;
        self.cursor += k;
        &self.order[start..(start + k).min(self.order.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::Epochs;

    #[test]
    fn epochs_visit_every_row_once_before_repeating() {
        let mut epochs = Epochs::new(10, 3);
        let mut seen: Vec<usize> = (0..5).flat_map(|_| epochs.next(2).to_vec()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // Fewer rows than a batch: all of them, every time.
        let mut small = Epochs::new(3, 0);
        assert_eq!(small.next(5).len(), 3);
    }
}
