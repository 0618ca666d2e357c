//! Training objectives: each turns a model (the GPT plus the heads it asked for) and a batch
//! into a loss and its named parts.
//!
//! One file per objective, one arm of [`ObjectiveConfig`] and, where it needs extra
//! parameters, one arm of [`Heads`] each: adding an objective touches neither the model nor the
//! data code. Every objective but BST keeps the GPT's own next-token head as the one that
//! decodes, so evaluation compares them on the same footing; BST trains no GPT head and supplies
//! its own decoder (`Objective::decoder`), which evaluation runs in the same decode loop and
//! names in `eval.json`.

mod avatarl;
mod bst;
mod frozen;
mod fsp_bow;
mod fsp_summary;
pub mod future;
mod heads;
pub mod infonce;
mod mi;
mod mtp;
mod mtp_sequential;
mod next_lat;
mod ntp;
mod reverse_lm;
mod teacherless;
pub mod token_reward;

pub use avatarl::{Avatarl, AvatarlConfig, avatarl_rewards};
pub use bst::{Bst, BstConfig, BstHeads};
pub use frozen::{Serves, load_frozen};
pub use fsp_bow::{BowConfig, FspBow, idf_weights};
pub use fsp_summary::{FspSummary, SummaryConfig, SummaryHeads};
pub use heads::AuxHead;
pub use mi::{EncoderInput, Mi, MiConfig, MiHeads, MiSchedule, Weights, future_positions};
pub use mtp::{Mtp, MtpConfig, MtpHeads};
pub use mtp_sequential::{SequentialHeads, SequentialMtp, SequentialMtpConfig};
pub use next_lat::{NextLat, NextLatConfig, Transition};
pub use ntp::Ntp;
pub use reverse_lm::{ReverseLm, future_depth, reverse_rows};
pub use teacherless::Teacherless;

use anyhow::Result;
use burn::module::Module;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use lab_core::Batch;
use models::{Decoder, DecoderKind, Gpt, GptConfig};
use serde::{Deserialize, Serialize};
use tasks::{Example, Task};

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
    /// Multi-token prediction with independent heads (Gloeckle et al. 2024).
    Mtp(MtpConfig),
    /// Multi-token prediction with sequential modules (DeepSeek-V3 §2.2).
    MtpSequential(SequentialMtpConfig),
    /// Future summary prediction with a hand-crafted summary: the bag of words of the next
    /// tokens after the next one (Mahajan et al. 2025).
    FspBow(BowConfig),
    /// Future summary prediction with a learned summary: a right-to-left LM's hidden state
    /// (Mahajan et al. 2025).
    FspSummary(SummaryConfig),
    /// A right-to-left language model over whole sequences: the summariser `fsp-summary` can
    /// load frozen. Its runs are not evaluated by forward decoding.
    ReverseLm,
    /// The MI-shaped future-aware objective (docs/method.md, §9): future encoder, InfoNCE,
    /// token-level reward, on a schedule.
    Mi(MiConfig),
    /// The AvataRL-style reward baseline with a frozen critic.
    Avatarl(AvatarlConfig),
    /// The Belief State Transformer (Hu et al. 2025): a backward encoder and a text head on
    /// [forward state; backward state]; decoded with the text head and the empty suffix.
    Bst(BstConfig),
    /// Next-Latent Prediction (Teoh et al. 2025): NTP plus a transition model that predicts the
    /// GPT's next latent, rolled out D steps, with self-distillation through the frozen head.
    NextLat(NextLatConfig),
}

/// What an objective may look at when it is built: the task, the training split (for
/// statistics such as tf-idf weights), the model's shape (for its heads) and the device (to load
/// frozen models onto).
pub struct BuildContext<'a, B: Backend> {
    /// The task being trained.
    pub task: &'a dyn Task,
    /// The training examples.
    pub train: &'a [Example],
    /// The GPT's resolved shape.
    pub model: &'a GptConfig,
    /// Where tensors live.
    pub device: &'a B::Device,
}

impl ObjectiveConfig {
    /// The objective's name, as in run directory names and sidecars.
    pub fn name(&self) -> &'static str {
        match self {
            ObjectiveConfig::Ntp => "ntp",
            ObjectiveConfig::Teacherless => "teacherless",
            ObjectiveConfig::Mtp(_) => "mtp",
            ObjectiveConfig::MtpSequential(_) => "mtp-sequential",
            ObjectiveConfig::FspBow(_) => "fsp-bow",
            ObjectiveConfig::FspSummary(_) => "fsp-summary",
            ObjectiveConfig::ReverseLm => "reverse-lm",
            ObjectiveConfig::Mi(_) => "mi",
            ObjectiveConfig::Avatarl(_) => "avatarl",
            ObjectiveConfig::Bst(_) => "bst",
            ObjectiveConfig::NextLat(_) => "next-lat",
        }
    }

    /// Builds the objective; errors are bad parameters or a frozen model that cannot be loaded.
    pub fn build<B: AutodiffBackend>(&self, cx: &BuildContext<'_, B>) -> Result<Box<dyn Objective<B>>> {
        Ok(match self {
            ObjectiveConfig::Ntp => Box::new(Ntp),
            ObjectiveConfig::Teacherless => Box::new(Teacherless { dummy: cx.task.vocab().dummy() }),
            ObjectiveConfig::Mtp(c) => Box::new(Mtp::new(c, cx.model)?),
            ObjectiveConfig::MtpSequential(c) => Box::new(SequentialMtp::new(c, cx.model)?),
            ObjectiveConfig::FspBow(c) => Box::new(FspBow::new(c, cx)?),
            ObjectiveConfig::FspSummary(c) => Box::new(FspSummary::new(c, cx)?),
            ObjectiveConfig::ReverseLm => Box::new(ReverseLm),
            ObjectiveConfig::Mi(c) => Box::new(Mi::new(c, cx)?),
            ObjectiveConfig::Avatarl(c) => Box::new(Avatarl::new(c, cx)?),
            ObjectiveConfig::Bst(c) => Box::new(Bst::new(c, cx)?),
            ObjectiveConfig::NextLat(c) => Box::new(NextLat::new(c, cx.model)?),
        })
    }
}

/// A loss and its named parts (each logged as `train/loss.<name>`).
pub struct LossOutput<B: Backend> {
    /// What is differentiated, a single value.
    pub total: Tensor<B, 1>,
    /// Components worth logging, e.g. `("ntp", ...)`, as `train/loss.<name>`.
    pub parts: Vec<(String, Tensor<B, 1>)>,
    /// Other statistics of the step (an MI bound, a mean reward, an entropy, a scheduled
    /// weight), logged as `train/<name>`.
    pub stats: Vec<(String, Tensor<B, 1>)>,
}

impl<B: Backend> LossOutput<B> {
    /// A loss that is its only part.
    pub fn single(name: &str, loss: Tensor<B, 1>) -> Self {
        LossOutput { total: loss.clone(), parts: vec![(name.to_string(), loss)], stats: vec![] }
    }
}

/// The extra trainable parameters an objective adds beside the GPT. They are saved beside the
/// GPT's weights (`step_NNNNNN-heads.mpk`); evaluation never needs them.
#[derive(Module, Debug)]
#[expect(clippy::large_enum_variant, reason = "one set of heads per run: its size never matters")]
pub enum Heads<B: Backend> {
    /// Independent multi-token heads.
    Mtp(MtpHeads<B>),
    /// DeepSeek-V3's sequential modules.
    Sequential(SequentialHeads<B>),
    /// The bag-of-words summary head.
    Bow(AuxHead<B>),
    /// The learned-summary head (and, in joint training, the reverse LM).
    Summary(SummaryHeads<B>),
    /// The MI objective's future encoder, scorer and rollout head.
    Mi(MiHeads<B>),
    /// BST's backward encoder and text head.
    Bst(BstHeads<B>),
    /// NextLat's transition model.
    NextLat(Transition<B>),
}

/// What the trainer optimises: the GPT and the heads of its objective.
#[derive(Module, Debug)]
pub struct LabModel<B: Backend> {
    /// The language model that evaluation decodes with.
    pub gpt: Gpt<B>,
    /// The objective's extra parameters, if any.
    pub heads: Option<Heads<B>>,
}

/// A training objective.
pub trait Objective<B: AutodiffBackend> {
    /// Freshly initialised heads (called inside `models::seeded`, right after the GPT is drawn,
    /// so that the GPT's weights do not depend on the objective).
    fn init_heads(&self, _device: &B::Device) -> Option<Heads<B>> {
        None
    }

    /// The loss of `model` on `batch` at optimizer step `step` (0-based; objectives whose
    /// weights follow a schedule read it).
    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, step: u64) -> LossOutput<B>;

    /// Whether evaluation should also decode the way this objective trains (teacherless).
    fn teacherless_eval(&self) -> bool {
        false
    }

    /// Whether the model reads left to right, so that forward decoding measures it (false for
    /// the reverse LM, whose runs are not evaluated).
    fn decodes_forward(&self) -> bool {
        true
    }

    /// What evaluation decodes with. The GPT's own next-token head for every objective that
    /// trains it; an objective whose GPT head is never trained (BST) supplies its own, and the
    /// one decode loop runs it.
    fn decoder(&self, model: &LabModel<B>) -> Decoder<B> {
        Decoder::Gpt(model.gpt.clone())
    }

    /// Which decoder [`Objective::decoder`] returns, for sidecars (without building it).
    fn decoder_kind(&self) -> DecoderKind {
        DecoderKind::Gpt
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

/// [`masked_cross_entropy`] of logits that start at position `from` (`Gpt::forward_from`)
/// against the batch's targets and mask from there on: the same loss when the mask is zero
/// before `from` (`Batch::first_target`).
pub fn masked_cross_entropy_from<B: Backend>(logits: Tensor<B, 3>, from: usize, batch: &Batch<B>) -> Tensor<B, 1> {
    let [b, t] = batch.targets.dims();
    let (targets, mask) =
        (batch.targets.clone().slice([0..b, from..t]), batch.target_mask.clone().slice([0..b, from..t]));
    masked_cross_entropy(logits, targets, mask)
}

/// Outputs of positions `from..t` (`Gpt::forward_from`), `[b, t - from, w]`, back at the batch's
/// positions, `[b, t, w]`, with zeros before `from`: for a loss that indexes by batch position
/// and reads nothing before `from` (its test compares it with the full pass).
pub(crate) fn at_batch_positions<R: Backend>(x: Tensor<R, 3>, from: usize) -> Tensor<R, 3> {
    if from == 0 {
        return x;
    }
    let [b, _, w] = x.dims();
    Tensor::cat(vec![Tensor::zeros([b, from, w], &x.device()), x], 1)
}

/// Every row's whole token sequence, `[b, t + 1]`: the inputs plus the last target.
pub fn full_tokens<B: Backend>(batch: &Batch<B>) -> Tensor<B, 2, Int> {
    let [b, _] = batch.inputs.dims();
    Tensor::cat(vec![batch.inputs.clone().slice([0..b, 0..1]), batch.targets.clone()], 1)
}

/// 1.0 at positions `t` that predict a target token and have at least one more target token
/// after it (x_{t+2} exists): where a summary of the future beyond the next token is defined,
/// `[b, t]`.
pub fn future_mask<B: Backend>(batch: &Batch<B>) -> Tensor<B, 2> {
    let [b, t] = batch.target_mask.dims();
    let next = Tensor::cat(
        vec![batch.target_mask.clone().slice([0..b, 1..t]), Tensor::zeros([b, 1], &batch.target_mask.device())],
        1,
    );
    batch.target_mask.clone() * next
}

/// Each row's tokens on the host, `[b][len]`.
pub(crate) fn host_rows<B: Backend>(batch: &Batch<B>) -> Vec<Vec<i64>> {
    let [b, t] = batch.inputs.dims();
    let inputs = batch.inputs.clone().into_data().convert::<i64>().to_vec::<i64>().expect("ints");
    let targets = batch.targets.clone().into_data().convert::<i64>().to_vec::<i64>().expect("ints");
    batch
        .lens()
        .iter()
        .enumerate()
        .take(b)
        .map(|(r, &len)| {
            let mut row = inputs[r * t..r * t + len - 1].to_vec();
            row.push(targets[r * t + len - 2]);
            row
        })
        .collect()
}

/// The heads of `model`, which the objective that built them knows the kind of.
fn heads<B: Backend>(model: &LabModel<B>) -> &Heads<B> {
    model.heads.as_ref().expect("the objective's heads are built with the model")
}

#[cfg(test)]
pub(crate) mod test_util {
    use burn::backend::flex::FlexDevice;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
    use burn::tensor::backend::Backend;
    use tasks::Example;

    use super::*;

    pub type B = Autodiff<Flex>;

    /// A tiny GPT config for objective tests.
    pub fn tiny() -> GptConfig {
        GptConfig::tiny(12, 12).with_d_model(16).with_d_ff(32).with_init_std(0.1)
    }

    /// The rows of [`batch`] as (tokens, prompt length), for independent recomputations.
    pub const ROWS: [(&[u32], usize); 3] =
        [(&[1, 2, 3, 4, 5, 6, 7], 3), (&[1, 3, 8, 9], 2), (&[2, 2, 2, 1, 10, 11, 4], 4)];

    /// Three rows of different lengths over a 12-token vocabulary (pad 0).
    pub fn batch() -> Batch<B> {
        rows_batch(&ROWS)
    }

    /// Three rows with prompts of 4 to 6 tokens: the first target is position 3, so an objective
    /// that skips the prompt skips three positions of every row.
    pub fn long_prompt_batch() -> Batch<B> {
        let batch =
            rows_batch(&[(&[1, 2, 3, 4, 5, 6, 7], 4), (&[1, 3, 8, 9, 10, 2], 5), (&[2, 2, 2, 1, 10, 11, 4, 5], 6)]);
        assert_eq!(batch.first_target(), 3);
        batch
    }

    fn rows_batch(rows: &[(&[u32], usize)]) -> Batch<B> {
        let rows: Vec<Example> = rows.iter().map(|(t, p)| Example::new(&t[..*p], &t[*p..])).collect();
        Batch::new(&rows.iter().collect::<Vec<_>>(), 0, &FlexDevice)
    }

    /// A lab model with the objective's heads, seeded.
    pub fn model(obj: &dyn Objective<B>, config: &GptConfig) -> LabModel<B> {
        models::seeded::<B, _>(1, &FlexDevice, || {
            let gpt = config.init::<B>(&FlexDevice);
            let heads = obj.init_heads(&FlexDevice);
            let m = LabModel { gpt, heads };
            let _ = m.num_params();
            m
        })
    }

    /// Flattened values of every parameter of `m`.
    pub fn params<M: Module<B>>(m: &M) -> Vec<Vec<f32>> {
        struct Collect(Vec<Vec<f32>>);
        impl burn::module::ModuleVisitor<B> for Collect {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<burn::tensor::Tensor<B, D>>) {
                self.0.push(p.val().into_data().convert::<f32>().to_vec().unwrap());
            }
        }
        let mut c = Collect(Vec::new());
        m.visit(&mut c);
        c.0
    }

    /// One AdamW step on the objective's loss.
    pub fn step(obj: &dyn Objective<B>, m: LabModel<B>, batch: &Batch<B>) -> LabModel<B> {
        let loss = obj.loss(&m, batch, 0).total;
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        AdamWConfig::new().init::<B, LabModel<B>>().step(1e-2, m, grads)
    }

    /// Cross-entropy of `logits` rows against targets, on the host in f64.
    pub fn host_ce(logits: &[f32], v: usize, picks: &[(usize, usize)]) -> f64 {
        let mut sum = 0.0;
        for &(row, target) in picks {
            let z = &logits[row * v..(row + 1) * v];
            let max = z.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
            let lse = max + z.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            sum += lse - z[target] as f64;
        }
        sum / picks.len() as f64
    }

    /// Scalar of a one-element tensor.
    pub fn scalar<BB: Backend>(t: Tensor<BB, 1>) -> f32 {
        t.into_data().convert::<f32>().to_vec::<f32>().unwrap()[0]
    }

    /// Every parameter's gradient of `loss`, flattened, in `m`'s visiting order (empty where no
    /// gradient reaches the parameter).
    pub fn grads(m: &LabModel<B>, loss: Tensor<B, 1>) -> Vec<Vec<f32>> {
        struct Collect<'a>(Vec<Vec<f32>>, &'a <B as AutodiffBackend>::Gradients);
        impl burn::module::ModuleVisitor<B> for Collect<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<burn::tensor::Tensor<B, D>>) {
                let grad = p.val().grad(self.1).map(|g| g.into_data().convert::<f32>().to_vec().unwrap());
                self.0.push(grad.unwrap_or_default());
            }
        }
        let g = loss.backward();
        let mut c = Collect(Vec::new(), &g);
        m.visit(&mut c);
        c.0
    }

    /// Asserts that two computations of one objective's loss on `m` agree up to the last bits of
    /// a sum: the total, every part and statistic, and every parameter's gradient of the total.
    pub fn assert_same_loss(m: &LabModel<B>, a: LossOutput<B>, b: LossOutput<B>, what: &str) {
        let named = |out: &LossOutput<B>| -> Vec<(String, f32)> {
            out.parts.iter().chain(&out.stats).map(|(n, x)| (n.clone(), scalar(x.clone()))).collect()
        };
        let (na, nb) = (named(&a), named(&b));
        assert_eq!(na.iter().map(|x| &x.0).collect::<Vec<_>>(), nb.iter().map(|x| &x.0).collect::<Vec<_>>());
        for ((name, x), (_, y)) in na
            .iter()
            .zip(&nb)
            .chain([(&("total".into(), scalar(a.total.clone())), &("total".into(), scalar(b.total.clone())))])
        {
            assert!((x - y).abs() <= 1e-5 + 1e-4 * x.abs(), "{what}: {name} {x} against {y}");
        }
        let (ga, gb) = (grads(m, a.total), grads(m, b.total));
        assert_eq!(
            ga.iter().map(Vec::len).collect::<Vec<_>>(),
            gb.iter().map(Vec::len).collect::<Vec<_>>(),
            "{what}: which parameters get a gradient"
        );
        // Each element relative to its size, with floors: 1e-3 of the parameter's largest, and of
        // the model's largest, for a gradient that is rounding noise in both (the biases of a key
        // projection, which the softmax's shift invariance makes zero in exact arithmetic).
        let global = ga.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
        for (i, (pa, pb)) in ga.iter().zip(&gb).enumerate() {
            let scale = pa.iter().fold(0f32, |m, x| m.max(x.abs()));
            let floor = 1e-3 * (scale + global);
            let worst =
                pa.iter().zip(pb).map(|(x, y)| (x - y).abs() / (x.abs() + floor).max(1e-30)).fold(0.0, f32::max);
            assert!(worst < 1e-3, "{what}: the gradient of parameter {i} differs by {worst} (relative)");
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::tensor::TensorData;

    use super::test_util::*;
    use super::*;

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

    #[test]
    fn full_tokens_and_future_mask() {
        let b = batch();
        let ints = full_tokens(&b).into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert_eq!(ints, vec![1, 2, 3, 4, 5, 6, 7, 1, 3, 8, 9, 0, 0, 0, 2, 2, 2, 1, 10, 11, 4]);
        // Row a: targets 4..7 are predicted at t = 2..5; x_{t+2} is a target for t = 2, 3, 4.
        let m = future_mask(&b).into_data().to_vec::<f32>().unwrap();
        assert_eq!(m, vec![0., 0., 1., 1., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 0., 1., 1., 0.]);
    }
}
