//! A head that reads the trunk: one transformer block of the GPT's shape, a LayerNorm and a
//! linear map to whatever the objective predicts (a bag of words, a summary vector).

use burn::module::Module;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use models::{Block, GptConfig, linear_rows};

/// Block → LayerNorm → Linear(d, out), `[b, t, d]` → `[b, t, out]`.
#[derive(Module, Debug)]
pub struct AuxHead<B: Backend> {
    block: Block<B>,
    norm: LayerNorm<B>,
    out: Linear<B>,
}

impl<B: Backend> AuxHead<B> {
    /// A head for a trunk of shape `model`, predicting `out` values per position.
    pub fn new(model: &GptConfig, out: usize, device: &B::Device) -> Self {
        AuxHead {
            block: model.init_block(device),
            norm: LayerNormConfig::new(model.d_model).with_epsilon(model.layer_norm_eps).init(device),
            out: LinearConfig::new(model.d_model, out)
                .with_initializer(Initializer::Normal { mean: 0.0, std: model.init_std })
                .init(device),
        }
    }

    /// The head over the trunk's residual stream `[b, t, d]`.
    pub fn forward(&self, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        linear_rows(&self.out, self.norm.forward(self.block.forward(residual)))
    }

    /// The head's outputs at positions `from..t` alone, `[b, t - from, out]`, from the whole
    /// residual stream (its block attends over every position; `Block::forward_from`): the same
    /// values as `forward` there, for a loss that reads no earlier position.
    pub fn forward_from(&self, residual: Tensor<B, 3>, from: usize) -> Tensor<B, 3> {
        linear_rows(&self.out, self.norm.forward(self.block.forward_from(residual, from)))
    }
}
