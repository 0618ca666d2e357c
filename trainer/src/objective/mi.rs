//! The MI-shaped future-aware objective (seed §2.2-2.5), the objective the lab exists for, as a
//! composition of parts that the config switches on and off:
//!
//! - future encoder (scheme B, [`super::future`]): F_t = Pooler(h_{t+1..t+L}) over the LM's own
//!   hidden states (live, stop-gradient, or those of a frozen copy of an LM);
//! - InfoNCE between h_t and F_t ([`super::infonce`]), logged with its bound log K − L and K;
//! - the token-level reward over TopK ∪ {x_{t+1}} from a rollout head
//!   ([`super::token_reward`]), trained with reward-weighted log-probabilities;
//! - L = L_NTP + λ_InfoNCE · L_InfoNCE + λ_RL · L_token-RL (+ λ_rollout · L_rollout, which trains
//!   only the rollout head), with the λs on a schedule: constant, joint (λ_RL ramps up,
//!   λ_InfoNCE down) or two-stage (stage 1: NTP + InfoNCE; stage 2: the future encoder frozen,
//!   NTP + token-RL).
//!
//! h_t is the GPT's final hidden state (after the last LayerNorm). The terms apply at positions
//! that predict a target token and have a future (x_{t+2} exists), as in `fsp-*`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use models::{Gpt, GptConfig};
use serde::{Deserialize, Serialize};

use super::frozen::{Serves, load_frozen};
use super::future::{FutureEncoder, PoolerKind, future_window};
use super::infonce::{Negatives, Scorer, ScorerKind, info_nce, unit_rows};
use super::token_reward::{RolloutHead, action_set, mean_entropy, reward_weighted_nll, rewards};
use super::{BuildContext, Heads, LabModel, LossOutput, Objective, heads, masked_cross_entropy};

/// What the future encoder reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderInput {
    /// The LM's hidden states, gradients flowing back into the LM.
    #[default]
    Live,
    /// The LM's hidden states without gradient.
    StopGradient,
    /// The hidden states of a frozen LM loaded from `frozen_lm_run`.
    FrozenCopy,
}

/// How the λs move over training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MiSchedule {
    /// λs constant.
    Constant,
    /// λ_RL ramps linearly from 0 over `ramp_steps`, while λ_InfoNCE falls to
    /// `final_infonce_ratio` of its value.
    Joint,
    /// Steps before `stage1_steps`: NTP + InfoNCE. From there: the future encoder frozen,
    /// InfoNCE off, NTP + token-RL.
    #[default]
    TwoStage,
}

/// `[objective] kind = "mi"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiConfig {
    /// L: the future encoder pools h_{t+1..t+L} (clipped at the end of the sequence).
    pub horizon: usize,
    /// `mean` or `attention` (query from h_t).
    pub pooler: PoolerKind,
    /// `live`, `stop-gradient` or `frozen-copy`.
    pub encoder_input: EncoderInput,
    /// The run whose latest checkpoint is the frozen LM of `encoder_input = "frozen-copy"`.
    pub frozen_lm_run: Option<PathBuf>,
    /// Width of the summaries F_t.
    pub summary_dim: usize,
    /// Score f(h, F): `dot` (cosine), `bilinear` or `mlp`.
    pub scorer: ScorerKind,
    /// Temperature of the InfoNCE scores.
    pub temperature: f64,
    /// Negatives: `batch` (every other position) or `other-sequences`.
    pub negatives: Negatives,
    /// λ_InfoNCE (its peak under the joint schedule, its stage-1 value under two-stage).
    pub lambda_infonce: f64,
    /// k of the action set TopK_k ∪ {x_{t+1}}.
    pub top_k: usize,
    /// λ_gt: the score bonus of the ground-truth token.
    pub lambda_gt: f64,
    /// τ of the reward softmax.
    pub reward_tau: f64,
    /// λ_RL (its final value under the joint schedule, its stage-2 value under two-stage).
    pub lambda_rl: f64,
    /// Weight of the rollout head's own loss, 1 − cos(F̂_t(x_{t+1}), F_t).
    pub lambda_rollout: f64,
    /// `constant`, `joint` or `two-stage`.
    pub schedule: MiSchedule,
    /// Two-stage: the first step of stage 2.
    pub stage1_steps: u64,
    /// Joint: steps over which the λs move.
    pub ramp_steps: u64,
    /// Joint: λ_InfoNCE ends at this fraction of its value.
    pub final_infonce_ratio: f64,
}

impl Default for MiConfig {
    fn default() -> Self {
        MiConfig {
            horizon: 4,
            pooler: PoolerKind::Mean,
            encoder_input: EncoderInput::Live,
            frozen_lm_run: None,
            summary_dim: 32,
            scorer: ScorerKind::Dot,
            temperature: 0.1,
            negatives: Negatives::Batch,
            lambda_infonce: 0.1,
            top_k: 3,
            lambda_gt: 0.5,
            reward_tau: 0.1,
            lambda_rl: 1.0,
            lambda_rollout: 1.0,
            schedule: MiSchedule::TwoStage,
            stage1_steps: 750,
            ramp_steps: 750,
            final_infonce_ratio: 0.1,
        }
    }
}

/// The parameters the MI objective adds.
#[derive(Module, Debug)]
pub struct MiHeads<B: Backend> {
    /// The future encoder (pooler + projection).
    pub encoder: FutureEncoder<B>,
    /// f(h, F).
    pub scorer: Scorer<B>,
    /// F̂(h, a).
    pub rollout: RolloutHead<B>,
}

/// The weights of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// λ_InfoNCE.
    pub infonce: f64,
    /// λ_RL.
    pub rl: f64,
    /// Whether the future encoder is frozen (two-stage, stage 2).
    pub encoder_frozen: bool,
}

/// The MI-shaped objective; see the module docs.
pub struct Mi<B: AutodiffBackend> {
    config: MiConfig,
    frozen_lm: Option<Gpt<B::InnerBackend>>,
    model: GptConfig,
    vocab: usize,
}

impl<B: AutodiffBackend> Mi<B> {
    /// Checks the parameters and loads the frozen LM, if one is asked for.
    pub fn new(config: &MiConfig, cx: &BuildContext<'_, B>) -> Result<Self> {
        let vocab = cx.task.vocab().len();
        if config.horizon == 0 || config.summary_dim == 0 {
            bail!("objective.horizon and objective.summary_dim must be positive");
        }
        if config.top_k == 0 || config.top_k >= vocab {
            bail!("objective.top_k must be between 1 and the vocabulary size - 1 ({})", vocab - 1);
        }
        if config.temperature <= 0.0 || config.reward_tau <= 0.0 {
            bail!("objective.temperature and objective.reward_tau must be positive");
        }
        let frozen_lm = match (config.encoder_input, &config.frozen_lm_run) {
            (EncoderInput::FrozenCopy, Some(run)) => Some(load_frozen::<B::InnerBackend>(
                run,
                "objective.frozen_lm_run",
                Serves::ForwardLm,
                cx.model,
                cx.device,
            )?),
            (EncoderInput::FrozenCopy, None) => {
                bail!("objective.encoder_input = \"frozen-copy\" needs objective.frozen_lm_run (a finished run)")
            }
            (_, Some(_)) => bail!("objective.frozen_lm_run is read only with encoder_input = \"frozen-copy\""),
            (_, None) => None,
        };
        Ok(Mi { config: config.clone(), frozen_lm, model: cx.model.clone(), vocab })
    }

    /// The λs at optimizer step `step`.
    pub fn weights(&self, step: u64) -> Weights {
        let c = &self.config;
        match c.schedule {
            MiSchedule::Constant => Weights { infonce: c.lambda_infonce, rl: c.lambda_rl, encoder_frozen: false },
            MiSchedule::Joint => {
                let f = if c.ramp_steps == 0 { 1.0 } else { (step as f64 / c.ramp_steps as f64).min(1.0) };
                Weights {
                    infonce: c.lambda_infonce * (1.0 - f * (1.0 - c.final_infonce_ratio)),
                    rl: c.lambda_rl * f,
                    encoder_frozen: false,
                }
            }
            MiSchedule::TwoStage if step < c.stage1_steps => {
                Weights { infonce: c.lambda_infonce, rl: 0.0, encoder_frozen: false }
            }
            MiSchedule::TwoStage => Weights { infonce: 0.0, rl: c.lambda_rl, encoder_frozen: true },
        }
    }
}

/// Flat indices (`row * t + position`) of the positions that predict a target token and have a
/// future, with the row of each: positions prefix_len - 1 ..= len - 3.
pub fn future_positions(prefix_lens: &[usize], target_lens: &[usize], t: usize) -> (Vec<i32>, Vec<usize>) {
    let (mut index, mut rows) = (Vec::new(), Vec::new());
    for (r, (&p, &q)) in prefix_lens.iter().zip(target_lens).enumerate() {
        let len = p + q;
        for i in p.saturating_sub(1)..len.saturating_sub(2).min(t) {
            index.push((r * t + i) as i32);
            rows.push(r);
        }
    }
    (index, rows)
}

fn constant<B: Backend>(x: f64, device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(vec![x as f32], [1]), device)
}

impl<B: AutodiffBackend> Objective<B> for Mi<B> {
    fn init_heads(&self, device: &B::Device) -> Option<Heads<B>> {
        let (c, d, std) = (&self.config, self.model.d_model, self.model.init_std);
        Some(Heads::Mi(MiHeads {
            encoder: FutureEncoder::new(c.pooler, d, c.summary_dim, std, device),
            scorer: Scorer::new(c.scorer, d, c.summary_dim, std, device),
            rollout: RolloutHead::new(d, c.summary_dim, std, device),
        }))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, step: u64) -> LossOutput<B> {
        let Heads::Mi(h) = heads(model) else { unreachable!("mi builds its heads") };
        let c = &self.config;
        let w = self.weights(step);
        let device = batch.inputs.device();
        let out = model.gpt.forward(batch.inputs.clone());
        let ntp = masked_cross_entropy(out.logits.clone(), batch.targets.clone(), batch.target_mask.clone());
        let (index, rows) = future_positions(&batch.prefix_lens, &batch.target_lens, batch.inputs.dims()[1]);
        if index.is_empty() {
            return LossOutput::single("ntp", ntp);
        }
        let [b, t, d] = out.hidden.dims();
        let (n, s, v) = (index.len(), c.summary_dim, self.vocab);
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [n]), &device);
        let pick = |x: Tensor<B, 3>, width: usize| x.reshape([b * t, width]).select(0, index.clone());

        // Future summaries of every position, then those with a future.
        let states = match (c.encoder_input, &self.frozen_lm) {
            (EncoderInput::Live, _) => out.hidden.clone(),
            (EncoderInput::StopGradient, _) => out.hidden.clone().detach(),
            (EncoderInput::FrozenCopy, Some(lm)) => Tensor::from_inner(lm.forward(batch.inputs.clone().inner()).hidden),
            (EncoderInput::FrozenCopy, None) => unreachable!("checked when built"),
        };
        let lens = batch.lens();
        let window = future_window(&lens, t, c.horizon);
        let mut summaries = h.encoder.forward(states.clone(), states, &window); // [b, t, s]
        if w.encoder_frozen {
            summaries = summaries.detach();
        }
        let f = pick(summaries, s); // [n, s]
        let hs = pick(out.hidden.clone(), d); // [n, d]

        // InfoNCE. With λ = 0 it is only measured, on the inner backend, so that no gradient
        // (not even a zero one, which AdamW's momentum would still act on) reaches the scorer.
        let (nce, log_k) = if w.infonce > 0.0 {
            info_nce(h.scorer.scores(hs.clone(), f.clone()), c.temperature, c.negatives, &rows)
        } else {
            let scores = h.scorer.valid().scores(hs.clone().inner(), f.clone().inner());
            let (loss, log_k) = info_nce(scores, c.temperature, c.negatives, &rows);
            (Tensor::from_inner(loss), log_k)
        };

        // The token-level reward.
        let logits = pick(out.logits, v); // [n, v]
        let gt = batch.targets.clone().reshape([b * t]).select(0, index);
        let (actions, valid, is_gt) = action_set(logits.clone().detach(), gt, c.top_k);
        let embedded = model.gpt.embed_tokens(actions.clone()).detach(); // [n, k + 1, d]
        let predicted = h.rollout.forward(hs.detach(), embedded); // [n, k + 1, s]
        let target = f.detach();
        let predicted_gt = (predicted.clone() * is_gt.clone().unsqueeze_dim::<3>(2)).sum_dim(1).reshape([n, s]);
        let rollout = (unit_rows(predicted_gt) * unit_rows(target.clone())).sum().neg() / n as f64 + 1.0;
        let reward = rewards(predicted.detach(), target, valid, is_gt.clone(), c.lambda_gt, c.reward_tau);
        let rl = reward_weighted_nll(logits.clone(), actions, reward.clone());

        let total = ntp.clone()
            + nce.clone().mul_scalar(w.infonce)
            + rl.clone().mul_scalar(w.rl)
            + rollout.clone().mul_scalar(c.lambda_rollout);
        let stats = vec![
            ("mi_bound".to_string(), nce.clone().neg() + log_k),
            ("mi_log_k".to_string(), constant(log_k, &device)),
            ("reward_gt".to_string(), (reward * is_gt).sum() / n as f64),
            ("entropy".to_string(), mean_entropy(logits.detach())),
            ("lambda_infonce".to_string(), constant(w.infonce, &device)),
            ("lambda_rl".to_string(), constant(w.rl, &device)),
        ];
        let parts = vec![
            ("ntp".to_string(), ntp),
            ("infonce".to_string(), nce),
            ("token_rl".to_string(), rl),
            ("rollout".to_string(), rollout),
        ];
        LossOutput { total, parts, stats }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;

    use super::super::test_util::*;
    use super::*;

    fn mi(config: MiConfig) -> Mi<B> {
        let task = tasks::TaskSpec::default_of("path-star").unwrap().build().unwrap();
        let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &tiny(), device: &FlexDevice };
        let mut m = Mi::new(&config, &cx).unwrap();
        m.vocab = 12; // the test batch's vocabulary
        m
    }

    #[test]
    fn positions_with_a_future() {
        // Rows of test_util::batch: (prefix, target) = (3, 4), (2, 2), (4, 3); t = 6.
        let (index, rows) = future_positions(&[3, 2, 4], &[4, 2, 3], 6);
        assert_eq!(index, [2, 3, 4, 7, 15, 16]);
        assert_eq!(rows, [0, 0, 0, 1, 2, 2]);
    }

    #[test]
    fn schedules() {
        let base =
            MiConfig { lambda_infonce: 0.4, lambda_rl: 2.0, stage1_steps: 10, ramp_steps: 10, ..Default::default() };
        let two = mi(base.clone());
        assert_eq!(two.weights(9), Weights { infonce: 0.4, rl: 0.0, encoder_frozen: false });
        assert_eq!(two.weights(10), Weights { infonce: 0.0, rl: 2.0, encoder_frozen: true });
        let joint = mi(MiConfig { schedule: MiSchedule::Joint, final_infonce_ratio: 0.5, ..base.clone() });
        assert_eq!(joint.weights(0), Weights { infonce: 0.4, rl: 0.0, encoder_frozen: false });
        let mid = joint.weights(5);
        assert!((mid.infonce - 0.3).abs() < 1e-12 && (mid.rl - 1.0).abs() < 1e-12);
        let end = joint.weights(50);
        assert!((end.infonce - 0.2).abs() < 1e-12 && (end.rl - 2.0).abs() < 1e-12);
        let constant = mi(MiConfig { schedule: MiSchedule::Constant, ..base });
        assert_eq!(constant.weights(1000), Weights { infonce: 0.4, rl: 2.0, encoder_frozen: false });
    }

    #[test]
    fn the_total_is_the_weighted_sum_of_its_parts_and_the_bound_is_log_k_minus_the_loss() {
        let obj = mi(MiConfig {
            schedule: MiSchedule::Constant,
            lambda_infonce: 0.3,
            lambda_rl: 0.7,
            lambda_rollout: 0.2,
            ..Default::default()
        });
        let m = model(&obj, &tiny());
        let out = obj.loss(&m, &batch(), 0);
        let p: Vec<f64> = out.parts.iter().map(|(_, x)| scalar(x.clone()) as f64).collect();
        let want = p[0] + 0.3 * p[1] + 0.7 * p[2] + 0.2 * p[3];
        assert!((scalar(out.total) as f64 - want).abs() < 1e-5);
        let stat = |name: &str| scalar(out.stats.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
        // Six positions with a future, all negatives of one another: K = 6.
        assert!((stat("mi_log_k") - 6f64.ln()).abs() < 1e-6);
        assert!((stat("mi_bound") - (6f64.ln() - p[1])).abs() < 1e-5);
        assert!((0.0..=1.0).contains(&stat("reward_gt")));
        assert!(stat("entropy") > 0.0 && stat("entropy") <= 12f64.ln() + 1e-6);
    }

    #[test]
    fn rewards_carry_no_gradient() {
        // The token-RL gradient on the logits is exactly that of −Σ r log π with r held fixed:
        // compare against the same loss with the rewards entered as data.
        let obj = mi(MiConfig {
            schedule: MiSchedule::Constant,
            lambda_infonce: 0.0,
            lambda_rollout: 0.0,
            ..Default::default()
        });
        let m = model(&obj, &tiny());
        let out = obj.loss(&m, &batch(), 0);
        let rl = out.parts.iter().find(|(n, _)| n == "token_rl").unwrap().1.clone();
        let grads = rl.backward();
        // The rollout head and the encoder get nothing from the token-RL term.
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        struct Any<'a>(&'a <B as AutodiffBackend>::Gradients, usize);
        impl burn::module::ModuleVisitor<B> for Any<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
                if p.val().grad(self.0).is_some() {
                    self.1 += 1;
                }
            }
        }
        let mut any = Any(&grads, 0);
        h.rollout.visit(&mut any);
        h.encoder.visit(&mut any);
        h.scorer.visit(&mut any);
        assert_eq!(any.1, 0, "the reward is a constant: no gradient flows through it");
        // While the policy (the GPT) does get one: the check above can see gradients.
        let mut policy = Any(&grads, 0);
        m.gpt.visit(&mut policy);
        assert!(policy.1 > 0);
    }

    #[test]
    fn the_future_encoder_is_unchanged_in_stage_two() {
        let obj = mi(MiConfig { stage1_steps: 1, ..Default::default() });
        let m = model(&obj, &tiny());
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        let (enc, scorer) = (params(&h.encoder), params(&h.scorer));
        // Step 1 is in stage 2.
        let loss = obj.loss(&m, &batch(), 1).total;
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &m);
        let m =
            burn::optim::Optimizer::step(&mut burn::optim::AdamWConfig::new().init::<B, LabModel<B>>(), 1e-2, m, grads);
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        assert_eq!(params(&h.encoder), enc);
        assert_eq!(params(&h.scorer), scorer);
        // In stage 1 both learn.
        let m = model(&obj, &tiny());
        let m = step(&obj, m, &batch());
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        assert_ne!(params(&h.encoder), enc);
        assert_ne!(params(&h.scorer), scorer);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let task = tasks::TaskSpec::default_of("path-star").unwrap().build().unwrap();
        let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &tiny(), device: &FlexDevice };
        for bad in [
            MiConfig { top_k: 0, ..Default::default() },
            MiConfig { reward_tau: 0.0, ..Default::default() },
            MiConfig { encoder_input: EncoderInput::FrozenCopy, ..Default::default() },
            MiConfig { frozen_lm_run: Some("x".into()), ..Default::default() },
        ] {
            assert!(Mi::new(&bad, &cx).is_err(), "{bad:?}");
        }
    }
}
