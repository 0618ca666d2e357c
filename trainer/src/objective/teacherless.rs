//! The teacherless objective of Next-Token-Failures (Bachmann & Nagarajan 2024): every input at
//! a target position is replaced by the dummy `$`, so the model must produce the whole target
//! from the prompt alone and cannot lean on the true previous token (no Clever-Hans cheat).

use burn::tensor::backend::AutodiffBackend;
use lab_core::Batch;

use super::{LabModel, LossOutput, Objective, masked_cross_entropy};

/// Teacherless training; see the module docs.
pub struct Teacherless {
    /// The task's `$` token.
    pub dummy: u32,
}

impl<B: AutodiffBackend> Objective<B> for Teacherless {
    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        let out = model.gpt.forward(batch.teacherless(self.dummy));
        let loss = masked_cross_entropy(out.logits, batch.targets.clone(), batch.target_mask.clone());
        LossOutput::single("teacherless", loss)
    }

    fn teacherless_eval(&self) -> bool {
        true
    }
}
