//! Training objectives: each turns a model and a batch into a loss and its named parts.
//!
//! One file per objective, one arm of [`ObjectiveConfig`] each: adding an objective touches
//! neither the model nor the data code.

mod ntp;
mod teacherless;

pub use ntp::Ntp;
pub use teacherless::Teacherless;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use eval::Batch;
use models::Gpt;
use serde::{Deserialize, Serialize};
use tasks::Task;

/// The `[objective]` section: which objective, with its parameters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ObjectiveConfig {
    /// Next-token prediction with teacher forcing: the standard objective.
    #[default]
    Ntp,
    /// NTF's teacherless objective: target inputs replaced by `$`, all target tokens
    /// predicted from the prompt in one pass.
    Teacherless,
}

impl ObjectiveConfig {
    /// The objective's name, as in run directory names and sidecars.
    pub fn name(&self) -> &'static str {
        match self {
            ObjectiveConfig::Ntp => "ntp",
            ObjectiveConfig::Teacherless => "teacherless",
        }
    }

    /// Builds the objective for a task.
    pub fn build<B: AutodiffBackend>(&self, task: &dyn Task) -> Box<dyn Objective<B>> {
        match self {
            ObjectiveConfig::Ntp => Box::new(Ntp),
            ObjectiveConfig::Teacherless => Box::new(Teacherless { dummy: task.vocab().dummy() }),
        }
    }
}

/// A loss and its named parts (each logged as `train/loss.<name>`).
pub struct LossOutput<B: Backend> {
    /// What is differentiated, a single value.
    pub total: Tensor<B, 1>,
    /// Components worth logging, e.g. `("ntp", ...)`.
    pub parts: Vec<(&'static str, Tensor<B, 1>)>,
}

/// A training objective.
pub trait Objective<B: AutodiffBackend> {
    /// The loss of `model` on `batch`.
    fn loss(&self, model: &Gpt<B>, batch: &Batch<B>) -> LossOutput<B>;

    /// Whether evaluation should also decode the way this objective trains (teacherless).
    fn teacherless_eval(&self) -> bool {
        false
    }
}

/// Mean cross-entropy over the positions where `mask` is 1: the prompt and the padding are
/// left out of the loss. `logits` `[b, t, v]`, `targets` and `mask` `[b, t]`.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [b, t, v] = logits.dims();
    let logp = log_softmax(logits.reshape([b * t, v]), 1); // [b t, v]
    let picked = logp.gather(1, targets.reshape([b * t, 1])).reshape([b, t]); // [b, t]
    let count = mask.clone().sum().clamp_min(1.0);
    (picked * mask).sum().neg() / count
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::TensorData;

    use super::*;

    type B = Autodiff<Flex>;

    #[test]
    fn masked_cross_entropy_by_hand() {
        let d = FlexDevice;
        // Two positions over a 2-token vocabulary: logits (0, ln 3) give p = (1/4, 3/4).
        let l3 = 3f32.ln();
        let logits = Tensor::<B, 3>::from_data(TensorData::new(vec![0.0, l3, 0.0, l3, 5.0, -5.0], [1, 3, 2]), &d);
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1, 0, 0], [1, 3]), &d);
        // The third position is masked out whatever its logits.
        let mask = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0, 1.0, 0.0], [1, 3]), &d);
        let loss = masked_cross_entropy(logits, targets, mask).into_scalar();
        let want = (-(0.75f32.ln()) - 0.25f32.ln()) / 2.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
    }
}
