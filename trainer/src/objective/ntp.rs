//! Next-token prediction with teacher forcing: the loss on target positions only.

use burn::tensor::backend::AutodiffBackend;
use eval::Batch;
use models::Gpt;

use super::{LossOutput, Objective, masked_cross_entropy};

/// Next-token prediction; see the module docs.
pub struct Ntp;

impl<B: AutodiffBackend> Objective<B> for Ntp {
    fn loss(&self, model: &Gpt<B>, batch: &Batch<B>) -> LossOutput<B> {
        let out = model.forward(batch.inputs.clone());
        let loss = masked_cross_entropy(out.logits, batch.targets.clone(), batch.target_mask.clone());
        LossOutput { total: loss.clone(), parts: vec![("ntp", loss)] }
    }
}
