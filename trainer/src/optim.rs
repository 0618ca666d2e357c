//! AdamW for the training loop: burn's `AdamW` step, computed by `kernels::adamw` (one
//! pass over memory on the CPU backend instead of a dozen tensor ops, bit for bit burn's result),
//! with burn's own state record, so checkpoints written with burn's `AdamW` load unchanged.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kernels::AdamWStep;

use crate::config::OptimizerConfig;

/// AdamW with decoupled weight decay, as burn's `AdamWConfig` builds it (no AMSGrad, no
/// cautious decay).
#[derive(Clone, Debug)]
pub struct AdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl AdamW {
    pub fn new(config: &OptimizerConfig) -> Self {
        AdamW {
            beta_1: config.beta1,
            beta_2: config.beta2,
            epsilon: config.eps,
            weight_decay: config.weight_decay as f32,
        }
    }

    /// The optimizer for a module's parameters.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<AdamW, M, B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for AdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (time, moments) = match state {
            Some(AdamWState { momentum: m }) => (m.time + 1, Some((m.moment_1, m.moment_2))),
            None => (1, None),
        };
        let step = AdamWStep {
            lr,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            time,
        };
        let [tensor, moment_1, moment_2] = kernels::adamw(tensor, grad, moments, step);
        (tensor, Some(AdamWState::new(AdaptiveMomentumState::new(time, moment_1, moment_2))))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}
