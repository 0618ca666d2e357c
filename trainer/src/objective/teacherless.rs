//! The teacherless objective of Next-Token-Failures (Bachmann & Nagarajan 2024): every input at
//! a target position is replaced by the dummy `$`, so the model must produce the whole target
//! from the prompt alone and cannot lean on the true previous token (no Clever-Hans cheat).

use burn::tensor::backend::AutodiffBackend;
use lab_core::Batch;

use super::{LabModel, LossOutput, Objective, masked_cross_entropy_from};

/// Teacherless training; see the module docs.
pub struct Teacherless {
    /// The task's `$` token.
    pub dummy: u32,
}

impl<B: AutodiffBackend> Objective<B> for Teacherless {
    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        // As NTP: the last block skips the positions before the first target.
        let out = model.gpt.forward_from(batch.teacherless(self.dummy), batch.first_target());
        let loss = masked_cross_entropy_from(out.logits, out.from, batch);
        LossOutput::single("teacherless", loss)
    }

    fn teacherless_eval(&self) -> bool {
        true
    }
}
