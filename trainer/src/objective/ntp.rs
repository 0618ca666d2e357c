//! Next-token prediction with teacher forcing: the loss on target positions only.

use burn::tensor::backend::AutodiffBackend;
use lab_core::Batch;

use super::{LabModel, LossOutput, Objective, masked_cross_entropy};

/// Next-token prediction; see the module docs.
pub struct Ntp;

impl<B: AutodiffBackend> Objective<B> for Ntp {
    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        let out = model.gpt.forward(batch.inputs.clone());
        LossOutput::single("ntp", masked_cross_entropy(out.logits, batch.targets.clone(), batch.target_mask.clone()))
    }
}
