//! Next-Latent Prediction, NextLat (Teoh et al. 2025, arXiv 2511.05963; JaydenTeoh/NextLat
//! `models/model_nextlat.py`).
//!
//! Beside next-token prediction, a transition model p_ψ learns to predict the GPT's own next
//! latent from the current one and the next token:
//! ĥ_{t+1} = h_t + MLP(LayerNorm([e(x_{t+1}); h_t])), the MLP 2d → H → H → d with GELU
//! ([`Transition`]). h is the final hidden state after the final norm, the space the
//! unembedding reads. p_ψ is rolled out D steps with the true tokens (teacher forcing) from
//! every position: ĥ^{(i)}_{t+i} = p_ψ(ĥ^{(i-1)}_{t+i-1}, x_{t+i}), ĥ^{(0)}_t = h_t (with its
//! gradient). Two losses per step i of the rollout:
//! - latent: SmoothL1 (β = 1) between ĥ_{t+i} and sg[h_{t+i}], a mean over the elements of every
//!   real position, prompt included (the paper's appendix C);
//! - self-distillation: KL(sg[softmax(W h_{t+i})] ‖ softmax(sg[W] ĥ_{t+i})), the output head W
//!   frozen so that only the latent moves, over the positions whose next token is a target (the
//!   token loss's mask), summed over the vocabulary and averaged over positions.
//!
//! Loss = L_NTP + λ_latent Σ_i L^latent_i / D + λ_kl Σ_i KL_i / D. The paper's path-star runs:
//! λs 1 and 1, D = l − 2, a hidden width of d.
//!
//! The transition model is the same kind of module as the rollout head (docs/method.md, §9.5.2)
//! F̂_t(a) = MLP([h_t; e(a)]) (`token_reward.rs`); it is kept here because NextLat's residual,
//! LayerNorm and output space (the GPT's hidden width) are its own.

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Numeric, Tensor, TensorData};
use kernels::gelu;
use lab_core::Batch;
use models::{GptConfig, linear_rows, norm};
use serde::{Deserialize, Serialize};

use super::{Heads, LabModel, LossOutput, Objective, heads, masked_cross_entropy};

/// `[objective] kind = "next-lat"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NextLatConfig {
    /// Rollout steps D of the transition model (the paper's path-star runs: l − 2). At least 1.
    pub horizon: usize,
    /// λ of the latent (SmoothL1) loss.
    pub lambda_latent: f64,
    /// λ of the self-distillation (KL) loss.
    pub lambda_kl: f64,
    /// Hidden width H of the transition MLP (0: the model's width d, as the paper's path-star
    /// runs).
    pub hidden: usize,
}

impl Default for NextLatConfig {
    fn default() -> Self {
        NextLatConfig { horizon: 3, lambda_latent: 1.0, lambda_kl: 1.0, hidden: 0 }
    }
}

/// p_ψ: ĥ = h + MLP(LayerNorm([e; h])).
#[derive(Module, Debug)]
pub struct Transition<B: Backend> {
    norm: LayerNorm<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    fc3: Linear<B>,
    /// The LayerNorm's epsilon, which the fused kernel needs (burn's module keeps it private).
    eps: f64,
}

impl<B: Backend> Transition<B> {
    /// A transition model for latents of width `d`, hidden width `hidden`.
    pub fn new(d: usize, hidden: usize, std: f64, device: &B::Device) -> Self {
        let init = Initializer::Normal { mean: 0.0, std };
        let linear = |i, o| LinearConfig::new(i, o).with_initializer(init.clone()).init(device);
        let norm = LayerNormConfig::new(2 * d);
        Transition {
            eps: norm.epsilon,
            norm: norm.init(device),
            fc1: linear(2 * d, hidden),
            fc2: linear(hidden, hidden),
            fc3: linear(hidden, d),
        }
    }

    /// The next latent from latents `h` and the next tokens' embeddings `e`, each `[b, n, d]`.
    pub fn forward(&self, h: Tensor<B, 3>, e: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = norm(&self.norm, self.eps, kernels::cat_last(e, h.clone()));
        let x = gelu(linear_rows(&self.fc2, gelu(linear_rows(&self.fc1, x))));
        h + linear_rows(&self.fc3, x)
    }
}

/// The NextLat objective; see the module documentation.
pub struct NextLat {
    config: NextLatConfig,
    model: GptConfig,
}

impl NextLat {
    /// Checks the parameters.
    pub fn new(config: &NextLatConfig, model: &GptConfig) -> Result<Self> {
        if config.horizon == 0 {
            bail!("objective.horizon must be at least 1 (D = 0 is kind = \"ntp\")");
        }
        for (name, v) in [("lambda_latent", config.lambda_latent), ("lambda_kl", config.lambda_kl)] {
            if !(v >= 0.0 && v.is_finite()) {
                bail!("objective.{name} must be a finite number ≥ 0");
            }
        }
        Ok(NextLat { config: config.clone(), model: model.clone() })
    }
}

/// 1.0 at input positions that hold a real token (not padding), `[b, t]`.
fn real_positions<B: Backend>(batch: &Batch<B>) -> Tensor<B, 2> {
    let [b, t] = batch.inputs.dims();
    let mut mask = vec![0f32; b * t];
    for (r, len) in batch.lens().into_iter().enumerate() {
        mask[r * t..r * t + len - 1].fill(1.0);
    }
    Tensor::from_data(TensorData::new(mask, [b, t]), &batch.inputs.device())
}

impl<B: AutodiffBackend> Objective<B> for NextLat {
    fn init_heads(&self, device: &B::Device) -> Option<Heads<B>> {
        let d = self.model.d_model;
        let hidden = if self.config.hidden == 0 { d } else { self.config.hidden };
        Some(Heads::NextLat(Transition::new(d, hidden, self.model.init_std, device)))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        self.loss_from(model, batch, batch.first_target())
    }
}

impl NextLat {
    /// The loss, with the self-distillation of rollout step i computed on positions
    /// `first_target − i` to `t − i` only: position s is weighted by whether s + i is a target,
    /// so the rows before carry no weight and the last i rows have no position s + i at all;
    /// their frozen unembedding and KL (most of the rollout's cost past the transition model, at
    /// the vocabularies of path-star) are skipped. The latent loss reads every real position and
    /// keeps them all. `first_target` 0 distils every row that has a position s + i.
    fn loss_from<B: AutodiffBackend>(
        &self,
        model: &LabModel<B>,
        batch: &Batch<B>,
        first_target: usize,
    ) -> LossOutput<B> {
        let Heads::NextLat(p) = heads(model) else { unreachable!("next-lat builds its transition model") };
        let [_, t] = batch.inputs.dims();
        let out = model.gpt.forward(batch.inputs.clone());
        let ntp = masked_cross_entropy(out.logits.clone(), batch.targets.clone(), batch.target_mask.clone());
        let d = out.hidden.dims()[2];
        let target = out.hidden.clone().detach(); // sg[h], [b, t, d]
        let teacher = out.logits.detach(); // sg[W h], [b, t, v]
        let real = real_positions(batch);

        // The rollout keeps all t positions at every step: row s of step i holds ĥ_{s+i}, and
        // the last i rows (past the sequence's end, fed padding) get weight 0 in both losses.
        // Slicing instead costs a strided copy and its backward per step, more than the few
        // extra rows (LOG.md, 2026-12-01). Only constants and token ids are shifted.
        let mut predicted = out.hidden; // ĥ^{(0)} = h, with its gradient
        let (mut latent, mut kl) = (Vec::new(), Vec::new());
        let mut parts = vec![("ntp".to_string(), ntp.clone())];
        for i in 1..=self.config.horizon.min(t.saturating_sub(1)) {
            // ĥ_{s+i} from ĥ_{s+i-1} and x_{s+i} = inputs[s + i].
            let e = model.gpt.embed_tokens(ahead(batch.inputs.clone(), i));
            predicted = p.forward(predicted, e); // [b, t, d]

            let w = ahead(real.clone(), i); // position s + i is a real token
            let count = w.clone().sum().clamp_min(1.0).mul_scalar(d as f64);
            let l = kernels::smooth_l1(predicted.clone(), ahead(target.clone(), i), w) / count;

            // Positions s in from..t − i: s + i can predict a target, and lies inside the rows.
            let from = first_target.saturating_sub(i);
            let rows = t - i - from;
            let w = batch.target_mask.clone().narrow(1, from + i, rows); // position s + i predicts a target
            let student = model.gpt.unembed_frozen(predicted.clone().narrow(1, from, rows));
            let teacher = teacher.clone().narrow(1, from + i, rows);
            let k = kernels::distillation_kl(student, teacher, w.clone()) / w.sum().clamp_min(1.0);

            parts.push((format!("latent{i}"), l.clone()));
            parts.push((format!("kl{i}"), k.clone()));
            latent.push(l);
            kl.push(k);
        }
        let mut total = ntp;
        if !latent.is_empty() {
            let dd = self.config.horizon as f64;
            total = total
                + Tensor::cat(latent, 0).sum().mul_scalar(self.config.lambda_latent / dd)
                + Tensor::cat(kl, 0).sum().mul_scalar(self.config.lambda_kl / dd);
        }
        LossOutput { total, parts, stats: vec![] }
    }
}

/// `x` moved `i` positions back along the sequence (dimension 1): position s holds x's `s + i`,
/// and the last `i` positions hold zeros. `i` must not exceed the sequence's length.
fn ahead<B: Backend, const D: usize, K: Numeric<B>>(x: Tensor<B, D, K>, i: usize) -> Tensor<B, D, K> {
    let mut dims = x.dims();
    let t = dims[1];
    dims[1] = i;
    let zeros = Tensor::zeros(dims, &x.device());
    Tensor::cat(vec![x.narrow(1, i, t - i), zeros], 1)
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::tensor::Int;

    use super::super::test_util::*;
    use super::*;

    fn next_lat(horizon: usize) -> NextLat {
        NextLat::new(&NextLatConfig { horizon, ..Default::default() }, &tiny()).unwrap()
    }

    #[test]
    fn the_loss_matches_a_recomputation_row_by_row() {
        let obj = next_lat(2);
        let m = model(&obj, &tiny());
        let batch = batch();
        let out = Objective::<B>::loss(&obj, &m, &batch, 0);
        let get = |name: &str| scalar(out.parts.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
        let Heads::NextLat(p) = m.heads.as_ref().unwrap() else { panic!() };
        // Recompute each row alone, without padding, and pool by hand.
        for i in 1..=2usize {
            let (mut l_sum, mut l_n, mut kl_sum, mut kl_n) = (0.0, 0.0, 0.0, 0.0);
            for (tokens, prefix) in ROWS {
                let n = tokens.len() - 1; // input positions
                if n <= i {
                    continue;
                }
                let ids = Tensor::<B, 2, Int>::from_data(
                    TensorData::new(tokens[..n].iter().map(|&x| x as i32).collect::<Vec<_>>(), [1, n]),
                    &FlexDevice,
                );
                let o = m.gpt.forward(ids.clone());
                let mut pred = o.hidden.clone();
                for step in 1..=i {
                    let e = m.gpt.embed_tokens(ids.clone().slice([0..1, step..n]));
                    pred = p.forward(pred.slice([0..1, 0..n - step, 0..16]), e);
                }
                let h = o.hidden.clone().slice([0..1, i..n, 0..16]).into_data().to_vec::<f32>().unwrap();
                let hp = pred.clone().into_data().to_vec::<f32>().unwrap();
                for (a, b) in hp.iter().zip(&h) {
                    let x = (a - b).abs() as f64;
                    l_sum += if x < 1.0 { 0.5 * x * x } else { x - 0.5 };
                }
                l_n += ((n - i) * 16) as f64;
                let teacher = o.logits.clone().slice([0..1, i..n, 0..12]).into_data().to_vec::<f32>().unwrap();
                let student = m.gpt.unembed_frozen(pred).into_data().to_vec::<f32>().unwrap();
                let lsm = |z: &[f32]| {
                    let mx = z.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
                    let lse = mx + z.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
                    z.iter().map(|&x| x as f64 - lse).collect::<Vec<f64>>()
                };
                for s in 0..n - i {
                    // Position s + i predicts token s + i + 1: a target when s + i + 1 >= prefix.
                    if s + i + 1 < prefix {
                        continue;
                    }
                    let (lt, ls) = (lsm(&teacher[s * 12..(s + 1) * 12]), lsm(&student[s * 12..(s + 1) * 12]));
                    kl_sum += lt.iter().zip(&ls).map(|(a, b)| a.exp() * (a - b)).sum::<f64>();
                    kl_n += 1.0;
                }
            }
            let (want_l, want_kl) = (l_sum / l_n, kl_sum / kl_n);
            assert!(
                (get(&format!("latent{i}")) - want_l).abs() < 1e-4 * want_l.max(1.0),
                "latent{i}: {} vs {want_l}",
                get(&format!("latent{i}"))
            );
            assert!(
                (get(&format!("kl{i}")) - want_kl).abs() < 1e-4 * want_kl.max(1.0),
                "kl{i}: {} vs {want_kl}",
                get(&format!("kl{i}"))
            );
        }
        let total = scalar(out.total) as f64;
        let want = get("ntp") + (get("latent1") + get("latent2")) / 2.0 + (get("kl1") + get("kl2")) / 2.0;
        assert!((total - want).abs() < 1e-4, "{total} vs {want}");
    }

    #[test]
    fn skipping_the_prompt_changes_neither_the_loss_nor_its_gradients() {
        // The first target is position 3, so the distillation of rollout steps 1 and 2 starts at
        // positions 2 and 1 (step 3 and later: at 0).
        let batch = long_prompt_batch();
        let obj = next_lat(4);
        let m = model(&obj, &tiny());
        assert_same_loss(&m, obj.loss_from(&m, &batch, 0), Objective::<B>::loss(&obj, &m, &batch, 0), "next-lat");
    }

    #[test]
    fn the_transition_model_trains_and_the_output_head_is_not_distilled() {
        let obj = next_lat(3);
        let m = model(&obj, &tiny());
        let before = params(&m);
        let after = params(&step(&obj, m, &batch()));
        assert!(before.iter().zip(&after).all(|(a, b)| a != b), "every parameter takes part");
        // The KL term alone gives the tied unembedding no gradient: the student reads it frozen.
        let kl_only =
            NextLat::new(&NextLatConfig { horizon: 2, lambda_latent: 0.0, ..Default::default() }, &tiny()).unwrap();
        let m = model(&kl_only, &tiny());
        let out = Objective::<B>::loss(&kl_only, &m, &batch(), 0);
        let kl: Tensor<B, 1> =
            out.parts.iter().filter(|(n, _)| n.starts_with("kl")).map(|(_, t)| t.clone()).reduce(|a, b| a + b).unwrap();
        let grads = kl.backward();
        let Heads::NextLat(p) = m.heads.as_ref().unwrap() else { panic!() };
        assert!(p.fc3.weight.val().grad(&grads).is_some(), "the transition model learns from the KL");
        assert!(NextLat::new(&NextLatConfig { horizon: 0, ..Default::default() }, &tiny()).is_err());
    }
}
