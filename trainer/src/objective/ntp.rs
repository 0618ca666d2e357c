//! Next-token prediction with teacher forcing: the loss on target positions only.

use burn::tensor::backend::AutodiffBackend;
use lab_core::Batch;

use super::{LabModel, LossOutput, Objective, masked_cross_entropy_from};

/// Next-token prediction; see the module docs.
pub struct Ntp;

impl<B: AutodiffBackend> Objective<B> for Ntp {
    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        // The loss reads no position before the first target, so the last block skips them.
        let out = model.gpt.forward_from(batch.inputs.clone(), batch.first_target());
        LossOutput::single("ntp", masked_cross_entropy_from(out.logits, out.from, batch))
    }
}
