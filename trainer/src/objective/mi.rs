//! The MI-shaped future-aware objective (seed §2.2-2.5), the objective the lab exists for, as a
//! composition of parts that the config switches on and off:
//!
//! - future encoder ([`super::future`]): F_t = Pooler(s_{t+1..t+L}) over per-position states s:
//!   scheme B's, the LM's own hidden states (live, stop-gradient, or those of a frozen copy of
//!   an LM), which have read the prompt; or the future tokens alone (`future-tokens`:
//!   s_j = GELU(W e(x_j)) with the GPT's token embedding held fixed, a mean + MLP summary that
//!   cannot see the prompt, the "causally clean" summary of seed §2.2.1);
//! - InfoNCE between h_t and F_t ([`super::infonce`]), logged with its bound log K − L and K;
//!   negatives from the batch, or counterfactual: the summaries of the futures the same prompt
//!   would have had down another path (the task's `counterfactual_targets`; path-star: K = d; graph-walk:
//!   K = out-degree, walks of the same length to other goals),
//!   which only a state that knows the plan can tell from the true one;
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
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use models::{Gpt, GptConfig, linear_rows};
use serde::{Deserialize, Serialize};
use tasks::Task;

use super::frozen::{Serves, load_frozen};
use super::future::{FutureEncoder, PoolerKind, future_window};
use super::infonce::{Negatives, Scorer, ScorerKind, info_nce, info_nce_among, unit_rows};
use super::reverse_lm::{future_depth, reverse_rows};
use super::token_reward::{RolloutHead, action_set, mean_entropy, reward_weighted_nll, rewards};
use super::{
    BuildContext, Heads, LabModel, LossOutput, Objective, at_batch_positions, heads, host_rows, masked_cross_entropy,
    masked_cross_entropy_from,
};

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
    /// The future tokens alone, through the GPT's token embedding (held fixed) and a learned
    /// GELU layer: a summary that cannot see the prompt.
    FutureTokens,
    /// Scheme A (seed §2.2.1): the states of a right-to-left LM trained jointly with its own
    /// loss (`fsp-summary`'s reverse LM), s_j = its state after reading x_{len-2} down to x_j,
    /// which has seen only the future of any t < j (not the last token, which on path-star is the
    /// goal the prompt names). Held fixed by the InfoNCE term (only its own loss trains it), as in
    /// `fsp-summary`.
    ReverseLm,
}

impl EncoderInput {
    /// Whether F_t is a function of the future tokens alone (so the prompt cannot leak into it).
    pub fn future_only(self) -> bool {
        matches!(self, EncoderInput::FutureTokens | EncoderInput::ReverseLm)
    }
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
    /// Multi-horizon summaries (seed §4.4): a second summary over t+1..t+far_horizon, with its
    /// own encoder and scorer and its own InfoNCE term (same λ, same negatives), beside the near
    /// one; 0 = one horizon. The token reward reads the near summary.
    pub far_horizon: usize,
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
            far_horizon: 0,
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
    /// The per-token layer of `encoder_input = "future-tokens"` (absent otherwise, and in
    /// checkpoints written before it existed).
    pub tokens: Option<Linear<B>>,
    /// The right-to-left LM of `encoder_input = "reverse-lm"` (scheme A).
    pub reverse: Option<Gpt<B>>,
    /// The far summary's encoder and scorer (`far_horizon > 0`).
    pub far_encoder: Option<FutureEncoder<B>>,
    /// See `far_encoder`.
    pub far_scorer: Option<Scorer<B>>,
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
    /// The task, for its counterfactual futures and (path-star) the decision's reward mass.
    task: Box<dyn Task>,
}

impl<B: AutodiffBackend> Mi<B> {
    /// Checks the parameters and loads the frozen LM, if one is asked for.
    pub fn new(config: &MiConfig, cx: &BuildContext<'_, B>) -> Result<Self> {
        let vocab = cx.task.vocab().len();
        if config.horizon == 0 || config.summary_dim == 0 {
            bail!("objective.horizon and objective.summary_dim must be positive");
        }
        if config.far_horizon != 0 && config.far_horizon <= config.horizon {
            bail!("objective.far_horizon must be 0 (one horizon) or longer than objective.horizon");
        }
        if config.top_k == 0 || config.top_k >= vocab {
            bail!("objective.top_k must be between 1 and the vocabulary size - 1 ({})", vocab - 1);
        }
        if config.temperature <= 0.0 || config.reward_tau <= 0.0 {
            bail!("objective.temperature and objective.reward_tau must be positive");
        }
        let weights = [config.lambda_infonce, config.lambda_rl, config.lambda_rollout, config.lambda_gt];
        if weights.iter().any(|&x| !(x >= 0.0) || !x.is_finite()) {
            bail!("objective.lambda_infonce, lambda_rl, lambda_rollout and lambda_gt must be finite and >= 0");
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
        let task = cx.task.spec().build().map_err(|e| anyhow::anyhow!("{e}"))?;
        if config.encoder_input.future_only() && config.pooler == PoolerKind::Attention {
            // The attention pooler's query is the pooled states' own s_t, not h_t: with a
            // future-only encoder it would read x_t, which differs between a future and its
            // counterfactuals after the decision and gives the scorer a cue that needs no plan.
            bail!("objective.pooler = \"attention\" is defined for scheme B; future-only encoders pool by the mean");
        }
        if config.negatives.counterfactual() {
            if !config.encoder_input.future_only() {
                bail!(
                    "objective.negatives = {:?} needs a future-only encoder (encoder_input = \"future-tokens\" or \
                     \"reverse-lm\"): \
                     a summary of hidden states that read the prompt cannot be computed for a future that did not \
                     happen without running the LM on it",
                    config.negatives
                );
            }
            let probe = cx.train.first().cloned().unwrap_or_else(|| {
                use rand::SeedableRng;
                task.sample(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
            });
            match task.counterfactual_targets(&probe) {
                Some(alt) if !alt.is_empty() => {}
                _ => bail!(
                    "objective.negatives = {:?}: task {} has no counterfactual futures (path-star and graph-walk have them); use \
                     \"batch\" or \"other-sequences\"",
                    config.negatives,
                    task.spec().name()
                ),
            }
        }
        Ok(Mi { config: config.clone(), frozen_lm, model: cx.model.clone(), vocab, task })
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
            tokens: (c.encoder_input == EncoderInput::FutureTokens)
                .then(|| LinearConfig::new(d, d).with_initializer(Initializer::Normal { mean: 0.0, std }).init(device)),
            reverse: (c.encoder_input == EncoderInput::ReverseLm).then(|| self.model.init(device)),
            far_encoder: (c.far_horizon > 0).then(|| FutureEncoder::new(c.pooler, d, c.summary_dim, std, device)),
            far_scorer: (c.far_horizon > 0).then(|| Scorer::new(c.scorer, d, c.summary_dim, std, device)),
        }))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, step: u64) -> LossOutput<B> {
        self.loss_from(model, batch, step, batch.first_target())
    }
}

impl<B: AutodiffBackend> Mi<B> {
    /// The loss with the LM's last block run on positions `from..t` alone (`Gpt::forward_from`).
    /// From the first target on (`Batch::first_target`) that is the loss over every position:
    /// NTP reads the targets, the anchors are target positions, and the summaries of scheme B
    /// (the LM's own states, or a frozen copy's) pool positions after an anchor. The states of
    /// earlier positions are zeros (`at_batch_positions`) that no term reads; the test
    /// `skipping_the_prompt_changes_no_term` compares every variant with the full pass.
    fn loss_from(&self, model: &LabModel<B>, batch: &Batch<B>, step: u64, from: usize) -> LossOutput<B> {
        let Heads::Mi(h) = heads(model) else { unreachable!("mi builds its heads") };
        let c = &self.config;
        let w = self.weights(step);
        let device = batch.inputs.device();
        let out = model.gpt.forward_from(batch.inputs.clone(), from);
        let ntp = masked_cross_entropy_from(out.logits.clone(), from, batch);
        let (hidden, logits) = (at_batch_positions(out.hidden, from), at_batch_positions(out.logits, from));
        let (index, rows) = future_positions(&batch.prefix_lens, &batch.target_lens, batch.inputs.dims()[1]);
        if index.is_empty() {
            return LossOutput::single("ntp", ntp);
        }
        let [b, t, d] = hidden.dims();
        let (n, s, v) = (index.len(), c.summary_dim, self.vocab);
        let index_host = index.clone();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [n]), &device);
        let pick = |x: Tensor<B, 3>, width: usize| x.reshape([b * t, width]).select(0, index.clone());

        // Future summaries of every position, then those with a future.
        let mut reverse_loss = None;
        // No gradient reaches the encoder when it is frozen (stage 2) or InfoNCE is only
        // measured (λ = 0): the rollout head's target is detached.
        let no_encoder_gradient = w.encoder_frozen || w.infonce == 0.0;
        let untracked_cell = std::cell::OnceCell::new();
        let untracked =
            |h: &MiHeads<B>, model: &LabModel<B>| untracked_cell.get_or_init(|| Untracked::new(h, &model.gpt));
        let states = match (c.encoder_input, &self.frozen_lm) {
            (EncoderInput::Live, _) => hidden.clone(),
            (EncoderInput::StopGradient, _) => hidden.clone().detach(),
            (EncoderInput::FrozenCopy, Some(lm)) => {
                Tensor::from_inner(at_batch_positions(lm.forward_from(batch.inputs.clone().inner(), from).hidden, from))
            }
            (EncoderInput::FrozenCopy, None) => unreachable!("checked when built"),
            (EncoderInput::FutureTokens, _) if no_encoder_gradient => untracked(h, model).future_states(batch),
            (EncoderInput::FutureTokens | EncoderInput::ReverseLm, _) => {
                let (states, reverse_lm) =
                    future_states(h.tokens.as_ref(), h.reverse.as_ref(), &model.gpt, batch, true);
                reverse_loss = reverse_lm;
                states
            }
        };
        let lens = batch.lens();
        // The decision's reward mass is read for forward path-star answers (whose second token is
        // the arm's first node).
        let forward_star = self.task.as_path_star().is_some_and(|p| !p.params().reverse);
        let host = c.negatives.counterfactual() || forward_star;
        let alternatives = host.then(|| self.alternatives(batch)).flatten();
        // Checked when built: the task has counterfactual futures. A batch whose rows do not (a
        // malformed prompt) must not quietly fall back to in-batch negatives.
        assert!(
            alternatives.is_some() || !c.negatives.counterfactual(),
            "counterfactual negatives: a row of the batch has no counterfactual futures of the answer's length"
        );
        let alt_states = match (&alternatives, c.negatives.counterfactual()) {
            // The counterfactual futures' reverse-LM states are detached and its loss is not
            // taken on them, so they never need a gradient.
            (Some(alt), true) if no_encoder_gradient || c.encoder_input == EncoderInput::ReverseLm => {
                Some(untracked(h, model).future_states(&alt.batch))
            }
            (Some(alt), true) => Some(future_states(h.tokens.as_ref(), None, &model.gpt, &alt.batch, false).0),
            _ => None,
        };
        let hs = pick(hidden, d); // [n, d]

        // One contrast: the summaries F_t at `horizon` of the anchors, and InfoNCE of h_t against
        // them. The candidates of each anchor are its own summary and those the negatives name
        // (columns 0..n the batch's summaries; after them, anchor-major, each anchor's
        // counterfactual summaries). With λ = 0 InfoNCE is only measured, on the inner backend,
        // so that no gradient (not even a zero one, which AdamW's momentum would still act on)
        // reaches the scorer.
        let contrast = |encoder: &FutureEncoder<B>, scorer: &Scorer<B>, horizon: usize| {
            let window = future_window(&lens, t, horizon);
            // An encoder no gradient reaches runs on the inner backend (see `Untracked`).
            let encode = |states: &Tensor<B, 3>, window: &[f32]| match no_encoder_gradient {
                true => {
                    Tensor::from_inner(encoder.valid().forward(states.clone().inner(), states.clone().inner(), window))
                }
                false => encoder.forward(states.clone(), states.clone(), window),
            };
            let summaries = encode(&states, &window); // [b, t, s]
            let f = pick(summaries, s); // [n, s]
            let (candidates, keep) = match (&alternatives, &alt_states) {
                (Some(alt), Some(alt_states)) => {
                    let m = alt.per_row;
                    let alt_lens: Vec<usize> = lens.iter().flat_map(|&l| std::iter::repeat_n(l, m)).collect();
                    let alt_window = future_window(&alt_lens, t, horizon);
                    let alt_summaries = encode(alt_states, &alt_window); // [b m, t, s]
                    let flat: Vec<i32> = index_host
                        .iter()
                        .zip(&rows)
                        .flat_map(|(&k, &r)| (0..m).map(move |a| ((r * m + a) * t + k as usize - r * t) as i32))
                        .collect();
                    let picked = alt_summaries
                        .reshape([b * m * t, s])
                        .select(0, Tensor::<B, 1, Int>::from_data(TensorData::new(flat, [n * m]), &device));
                    let width = n + n * m;
                    let mut keep = vec![0f32; n * width];
                    for i in 0..n {
                        if c.negatives == Negatives::CounterfactualBatch {
                            keep[i * width..i * width + n].fill(1.0);
                        }
                        keep[i * width + i] = 1.0;
                        keep[i * width + n + i * m..i * width + n + (i + 1) * m].fill(1.0);
                    }
                    (Tensor::cat(vec![f.clone(), picked], 0), Some(keep))
                }
                _ => (f.clone(), None),
            };
            let positives: Vec<usize> = (0..n).collect();
            let (nce, log_k) = if w.infonce > 0.0 {
                let scores = scorer.scores(hs.clone(), candidates);
                match &keep {
                    Some(keep) => info_nce_among(scores, c.temperature, &positives, keep),
                    None => info_nce(scores, c.temperature, c.negatives, &rows),
                }
            } else {
                let scores = scorer.valid().scores(hs.clone().inner(), candidates.inner());
                let (loss, log_k) = match &keep {
                    Some(keep) => info_nce_among(scores, c.temperature, &positives, keep),
                    None => info_nce(scores, c.temperature, c.negatives, &rows),
                };
                (Tensor::from_inner(loss), log_k)
            };
            (f, nce, log_k)
        };
        let (f, nce, log_k) = contrast(&h.encoder, &h.scorer, c.horizon);
        let far = match (&h.far_encoder, &h.far_scorer) {
            (Some(encoder), Some(scorer)) => Some(contrast(encoder, scorer, c.far_horizon)),
            _ => None,
        };

        // The token-level reward.
        let logits = pick(logits, v); // [n, v]
        let gt = batch.targets.clone().reshape([b * t]).select(0, index);
        let (actions, valid, is_gt) = action_set(logits.clone().detach(), gt, c.top_k);
        let embedded = model.gpt.embed_tokens(actions.clone()).detach(); // [n, k + 1, d]
        let predicted = h.rollout.forward(hs.detach(), embedded); // [n, k + 1, s]
        let target = f.detach();
        let predicted_gt = (predicted.clone() * is_gt.clone().unsqueeze_dim::<3>(2)).sum_dim(1).reshape([n, s]);
        let rollout = (unit_rows(predicted_gt) * unit_rows(target.clone())).sum().neg() / n as f64 + 1.0;
        let reward = rewards(predicted.detach(), target, valid, is_gt.clone(), c.lambda_gt, c.reward_tau);
        let decision = alternatives
            .as_ref()
            .filter(|_| forward_star)
            .map(|alt| decision_mass(alt, batch, &index_host, t, &actions, &reward));
        let rl = reward_weighted_nll(logits.clone(), actions, reward.clone());

        let mut total = ntp.clone()
            + nce.clone().mul_scalar(w.infonce)
            + rl.clone().mul_scalar(w.rl)
            + rollout.clone().mul_scalar(c.lambda_rollout);
        let mut stats = vec![
            ("mi_bound".to_string(), nce.clone().neg() + log_k),
            ("mi_log_k".to_string(), constant(log_k, &device)),
            ("reward_gt".to_string(), (reward * is_gt).sum() / n as f64),
            ("entropy".to_string(), mean_entropy(logits.detach())),
            ("lambda_infonce".to_string(), constant(w.infonce, &device)),
            ("lambda_rl".to_string(), constant(w.rl, &device)),
        ];
        if let Some((arm, others)) = decision {
            stats.push(("decision_reward_arm".to_string(), constant(arm, &device)));
            stats.push(("decision_reward_other_arms".to_string(), constant(others, &device)));
        }
        let mut parts = vec![
            ("ntp".to_string(), ntp),
            ("infonce".to_string(), nce),
            ("token_rl".to_string(), rl),
            ("rollout".to_string(), rollout),
        ];
        if let Some(lm) = reverse_loss {
            total = total + lm.clone();
            parts.push(("reverse_lm".to_string(), lm));
        }
        if let Some((_, nce_far, log_k_far)) = far {
            total = total + nce_far.clone().mul_scalar(w.infonce);
            stats.push(("mi_bound_far".to_string(), nce_far.clone().neg() + log_k_far));
            parts.push(("infonce_far".to_string(), nce_far));
        }
        LossOutput { total, parts, stats }
    }
}

/// The per-position states a future-only encoder pools, `[b, t, d]` in the batch's layout, and
/// (scheme A, when `with_loss`) the reverse LM's own loss on the batch. Generic over the backend
/// so that states no gradient may reach are computed on the inner one (see [`Untracked`]).
fn future_states<R: Backend>(
    tokens: Option<&Linear<R>>,
    reverse: Option<&Gpt<R>>,
    gpt: &Gpt<R>,
    batch: &Batch<R>,
    with_loss: bool,
) -> (Tensor<R, 3>, Option<Tensor<R, 1>>) {
    let Some(reverse) = reverse else {
        // GELU(W e(x_j)) with the GPT's token embedding held fixed (no positions: the summary
        // of a future does not depend on where it is).
        let layer = tokens.expect("future-tokens builds its token layer");
        return (gelu(linear_rows(layer, gpt.embed_tokens(batch.inputs.clone()).detach())), None);
    };
    // The reverse LM reads each row without its last token: it would read it first, and on
    // path-star that is the goal, which every state h_t after the prompt knows, so a summary
    // holding it would tell the true future from the other arms' without any plan. The windows
    // never reach the last token either (`future_window`).
    let [b, t] = batch.inputs.dims();
    let device = batch.inputs.device();
    let shortened: Vec<tasks::Example> = host_rows(batch)
        .iter()
        .zip(&batch.prefix_lens)
        .map(|(row, &p)| {
            let tokens: Vec<u32> = row[..row.len() - 1].iter().map(|&x| x as u32).collect();
            tasks::Example { prefix_len: p.min(tokens.len()), tokens }
        })
        .collect();
    let shortened = Batch::<R>::new(&shortened.iter().collect::<Vec<_>>(), 0, &device);
    let rev = reverse_rows(&shortened);
    // Without its loss the reverse LM is read only inside the windows, from the prompt's end on
    // (the counterfactual futures' states: a pass over as many rows as the batch's, most of them
    // prompt), so it stops at `future_depth`.
    let inputs = match with_loss {
        true => rev.inputs.clone(),
        false => rev.inputs.clone().slice([0..b, 0..future_depth(batch)]),
    };
    let out = reverse.forward(inputs);
    let lm = with_loss.then(|| masked_cross_entropy(out.logits, rev.targets, rev.mask));
    // Reversed position p holds the state after reading x_{len-2} down to x_{len-2-p}: the state
    // of original position j is at p = len - 2 - j. Position 0 (which would need the whole
    // sequence), the last token and padding are never in a window; they take position 0.
    let [_, tr, d] = out.hidden.dims();
    let mut index = Vec::with_capacity(b * t);
    for &len in &batch.lens() {
        index.extend((0..t).map(|j| if j >= 1 && j + 2 <= len && len - 2 - j < tr { (len - 2 - j) as i32 } else { 0 }));
    }
    let index = Tensor::<R, 2, Int>::from_data(TensorData::new(index, [b, t]), &device);
    let states = out.hidden.detach().gather(1, index.unsqueeze_dim::<3>(2).expand([b, t, d]));
    (states, lm)
}

/// The modules of a step on the inner backend, for what no gradient may reach: the future
/// encoder when it is frozen (stage 2) or InfoNCE is only measured, and the counterfactual
/// futures' reverse-LM states.
///
/// Computing those on the autodiff backend and detaching the result is not enough: the graph
/// hangs off parameters that get no gradient that step, so the optimizer keeps them (and their
/// graph) alive, and burn never frees it. Stage 2 of a future-only encoder grew by 1.7-3.2 MB a
/// step that way (LOG.md, 2026-12-01).
struct Untracked<B: AutodiffBackend> {
    heads: MiHeads<B::InnerBackend>,
    gpt: Gpt<B::InnerBackend>,
}

impl<B: AutodiffBackend> Untracked<B> {
    fn new(heads: &MiHeads<B>, gpt: &Gpt<B>) -> Self {
        Untracked { heads: heads.valid(), gpt: gpt.valid() }
    }

    /// [`future_states`] without a gradient or the reverse LM's loss.
    fn future_states(&self, batch: &Batch<B>) -> Tensor<B, 3> {
        let inner = Batch {
            inputs: batch.inputs.clone().inner(),
            targets: batch.targets.clone().inner(),
            target_mask: batch.target_mask.clone().inner(),
            prefix_lens: batch.prefix_lens.clone(),
            target_lens: batch.target_lens.clone(),
        };
        let h = &self.heads;
        Tensor::from_inner(future_states(h.tokens.as_ref(), h.reverse.as_ref(), &self.gpt, &inner, false).0)
    }
}

/// Each row's counterfactual examples, `per_row` of them per row, row-major, as a batch of the
/// same layout, and the first token of each counterfactual target (path-star: the other arms'
/// first nodes).
struct Alternatives<B: Backend> {
    batch: Batch<B>,
    per_row: usize,
    /// `firsts[r]`: for row r, the second target token of each alternative (the node after the
    /// source: the arm it goes down).
    arms: Vec<Vec<u32>>,
}

impl<B: AutodiffBackend> Mi<B> {
    /// The batch's counterfactual futures as inputs of the same layout, if the task has them and
    /// every row has as many.
    fn alternatives(&self, batch: &Batch<B>) -> Option<Alternatives<B>> {
        let [b, t] = batch.inputs.dims();
        let rows = host_rows(batch);
        let mut per_row = None;
        let mut examples = Vec::new();
        let mut arms = Vec::with_capacity(b);
        for (r, row) in rows.iter().enumerate() {
            let p = batch.prefix_lens[r];
            let example = tasks::Example { tokens: row.iter().map(|&x| x as u32).collect(), prefix_len: p };
            let alt = self.task.counterfactual_targets(&example)?;
            if *per_row.get_or_insert(alt.len()) != alt.len() || alt.is_empty() {
                return None;
            }
            arms.push(alt.iter().map(|a| a.get(1).copied().unwrap_or(u32::MAX)).collect());
            for target in alt {
                let mut tokens: Vec<u32> = row[..p].iter().map(|&x| x as u32).collect();
                tokens.extend(target);
                examples.push(tasks::Example { tokens, prefix_len: p });
            }
        }
        let per_row = per_row?;
        let refs: Vec<&tasks::Example> = examples.iter().collect();
        let alt = Batch::new(&refs, self.task.vocab().dummy(), &batch.inputs.device());
        // Counterfactual targets have the answer's length, so the layouts agree.
        (alt.inputs.dims()[1] == t).then_some(Alternatives { batch: alt, per_row, arms })
    }
}

/// At the decision position of each row (path-star: target position 2, input position
/// prefix_len), the reward the action set puts on the goal's arm (the true next node) and the
/// total it puts on the other arms' first nodes, averaged over rows.
fn decision_mass<B: Backend>(
    alt: &Alternatives<B>,
    batch: &Batch<B>,
    index: &[i32],
    t: usize,
    actions: &Tensor<B, 2, Int>,
    reward: &Tensor<B, 2>,
) -> (f64, f64) {
    let [_, c] = actions.dims();
    let acts = actions.clone().into_data().convert::<i64>().to_vec::<i64>().expect("ints");
    let rew = reward.clone().into_data().convert::<f32>().to_vec::<f32>().expect("floats");
    let targets = batch.targets.clone().into_data().convert::<i64>().to_vec::<i64>().expect("ints");
    let (mut arm, mut others, mut rows) = (0.0, 0.0, 0);
    for (r, &p) in batch.prefix_lens.iter().enumerate() {
        let Some(k) = index.iter().position(|&i| i as usize == r * t + p) else { continue };
        let truth = targets[r * t + p];
        for j in 0..c {
            let (a, x) = (acts[k * c + j], rew[k * c + j] as f64);
            if a == truth {
                arm += x;
            } else if alt.arms[r].iter().any(|&o| o as i64 == a) {
                others += x;
            }
        }
        rows += 1;
    }
    let n = rows.max(1) as f64;
    (arm / n, others / n)
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

    /// A path-star G(2,4,10) batch, the task, and a model config of its vocabulary.
    fn path_star_case() -> (Box<dyn Task>, Batch<B>, GptConfig) {
        use rand::SeedableRng;
        let spec = tasks::TaskSpec::PathStar(tasks::path_star::PathStarParams {
            degree: 2,
            path_len: 4,
            nodes: 10,
            reverse: false,
        });
        let task = spec.build().unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let examples: Vec<tasks::Example> = (0..4).map(|_| task.sample(&mut rng)).collect();
        let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), task.vocab().dummy(), &FlexDevice);
        let config = GptConfig::tiny(task.vocab().len(), 32).with_d_model(16).with_d_ff(32).with_init_std(0.1);
        (task, batch, config)
    }

    fn mi_on(task: &dyn Task, model: &GptConfig, config: MiConfig) -> Result<Mi<B>> {
        Mi::new(&config, &BuildContext::<B> { task, train: &[], model, device: &FlexDevice })
    }

    #[test]
    fn skipping_the_prompt_changes_no_term() {
        // Every encoder input, pooler, scorer and kind of negatives, both stages, on path-star
        // rows whose first target is position 20: the loss with the LM's last block run from
        // there on equals the full pass in every part, statistic and gradient. A term that read
        // a state before the first target would read zeros there and differ.
        let (task, batch, config) = path_star_case();
        assert!(batch.first_target() >= 20, "first target {}", batch.first_target());
        let constant =
            MiConfig { schedule: MiSchedule::Constant, lambda_infonce: 0.3, lambda_rl: 0.7, ..Default::default() };
        let cases = [
            ("two-stage, stage 1", MiConfig::default(), 0, false),
            ("two-stage, stage 2", MiConfig::default(), 10_000, false),
            (
                "live, attention pooler, bilinear scorer, other sequences",
                MiConfig {
                    pooler: PoolerKind::Attention,
                    scorer: ScorerKind::Bilinear,
                    negatives: Negatives::OtherSequences,
                    ..constant.clone()
                },
                0,
                false,
            ),
            (
                "stop-gradient, mlp scorer, far horizon",
                MiConfig {
                    encoder_input: EncoderInput::StopGradient,
                    scorer: ScorerKind::Mlp,
                    far_horizon: 6,
                    ..constant.clone()
                },
                0,
                false,
            ),
            (
                "future tokens, counterfactual negatives",
                MiConfig {
                    encoder_input: EncoderInput::FutureTokens,
                    negatives: Negatives::Counterfactual,
                    ..constant.clone()
                },
                0,
                false,
            ),
            (
                "reverse LM, counterfactual and batch negatives",
                MiConfig {
                    encoder_input: EncoderInput::ReverseLm,
                    negatives: Negatives::CounterfactualBatch,
                    ..constant.clone()
                },
                0,
                false,
            ),
            // Built as `live` (a frozen copy is loaded from a run), then given another LM below.
            ("frozen copy", constant.clone(), 0, true),
        ];
        for (what, mi_config, step, frozen_copy) in cases {
            let mut obj = mi_on(task.as_ref(), &config, mi_config).unwrap();
            if frozen_copy {
                obj.config.encoder_input = EncoderInput::FrozenCopy;
                obj.frozen_lm = Some(config.init_seeded(3, &FlexDevice));
            }
            let m = model(&obj, &config);
            assert_same_loss(&m, obj.loss_from(&m, &batch, step, 0), obj.loss(&m, &batch, step), what);
        }
    }

    #[test]
    fn without_its_loss_the_reverse_lm_reads_only_as_deep_as_the_windows() {
        // The states every window can read (original positions from the prompt's end to the
        // second-to-last token) are those of the reverse LM over whole rows.
        let (_, batch, config) = path_star_case();
        let (reverse, gpt) = (config.init_seeded::<B>(5, &FlexDevice), config.init_seeded::<B>(6, &FlexDevice));
        let (whole, loss) = future_states(None, Some(&reverse), &gpt, &batch, true);
        let (cut, none) = future_states(None, Some(&reverse), &gpt, &batch, false);
        assert!(loss.is_some() && none.is_none());
        let [_, t, d] = whole.dims();
        let (whole, cut) = (whole.into_data().to_vec::<f32>().unwrap(), cut.into_data().to_vec::<f32>().unwrap());
        let mut compared = 0;
        for (r, (&p, len)) in batch.prefix_lens.iter().zip(batch.lens()).enumerate() {
            for j in p..=len - 2 {
                let at = (r * t + j) * d;
                for (x, y) in whole[at..at + d].iter().zip(&cut[at..at + d]) {
                    assert!((x - y).abs() <= 1e-5 + 1e-4 * x.abs(), "row {r}, position {j}: {x} against {y}");
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 4 * 3, "four rows of four target tokens, whose last is never read");
    }

    #[test]
    fn future_only_summaries_do_not_see_the_prompt() {
        let (task, batch, config) = path_star_case();
        let summaries = |encoder_input, batch: &Batch<B>| {
            let obj = mi_on(task.as_ref(), &config, MiConfig { encoder_input, ..Default::default() }).unwrap();
            let m = model(&obj, &config);
            let Some(Heads::Mi(h)) = &m.heads else { panic!() };
            let out = m.gpt.forward(batch.inputs.clone());
            let states = match encoder_input {
                EncoderInput::FutureTokens | EncoderInput::ReverseLm => {
                    future_states(h.tokens.as_ref(), h.reverse.as_ref(), &m.gpt, batch, false).0
                }
                _ => out.hidden,
            };
            let [_, t, _] = states.dims();
            let w = future_window(&batch.lens(), t, 4);
            let f = h.encoder.forward(states.clone(), states, &w);
            let (index, _) = future_positions(&batch.prefix_lens, &batch.target_lens, t);
            let [b, _, s] = f.dims();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(index.clone(), [index.len()]), &FlexDevice);
            f.reshape([b * t, s]).select(0, idx).into_data().to_vec::<f32>().unwrap()
        };
        // The same futures after other prompts: the first edge and the goal token changed.
        let examples: Vec<tasks::Example> = host_rows(&batch)
            .iter()
            .zip(&batch.prefix_lens)
            .map(|(row, &p)| {
                let mut tokens: Vec<u32> = row.iter().map(|&x| x as u32).collect();
                tokens[0] = (tokens[0] + 1) % 10;
                tokens[p - 2] = (tokens[p - 2] + 3) % 10;
                // And the last token (the goal, again): no window reaches it, and scheme A's
                // reverse LM must not read it first.
                let last = tokens.len() - 1;
                tokens[last] = (tokens[last] + 5) % 10;
                tasks::Example { tokens, prefix_len: p }
            })
            .collect();
        let other = Batch::new(&examples.iter().collect::<Vec<_>>(), task.vocab().dummy(), &FlexDevice);
        assert_ne!(host_rows(&other), host_rows(&batch));
        for future_only in [EncoderInput::FutureTokens, EncoderInput::ReverseLm] {
            assert_eq!(summaries(future_only, &batch), summaries(future_only, &other), "{future_only:?}");
        }
        // Scheme B's summaries read hidden states that read the prompt: they change (the leak).
        assert_ne!(summaries(EncoderInput::Live, &batch), summaries(EncoderInput::Live, &other));
    }

    #[test]
    fn counterfactual_negatives_are_the_other_arms_and_k_is_d() {
        let (task, batch, config) = path_star_case();
        let base = MiConfig {
            encoder_input: EncoderInput::FutureTokens,
            schedule: MiSchedule::Constant,
            ..Default::default()
        };
        let obj =
            mi_on(task.as_ref(), &config, MiConfig { negatives: Negatives::Counterfactual, ..base.clone() }).unwrap();
        let m = model(&obj, &config);
        let out = obj.loss(&m, &batch, 0);
        let stat = |out: &LossOutput<B>, name: &str| {
            scalar(out.stats.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name}")).1.clone()) as f64
        };
        // One counterfactual future per anchor (d = 2): K = 2.
        assert!((stat(&out, "mi_log_k") - 2f64.ln()).abs() < 1e-6);
        let bound = stat(&out, "mi_bound");
        assert!(bound <= 2f64.ln() + 1e-6, "the bound is at most log d, got {bound}");
        // The decision position's reward is split between the goal's arm and the other arm.
        let (arm, others) = (stat(&out, "decision_reward_arm"), stat(&out, "decision_reward_other_arms"));
        assert!(arm > 0.0 && arm + others <= 1.0 + 1e-6, "{arm} + {others}");
        // Adding the batch's summaries: K = n + 1 for every anchor (n = 4 rows × 4 positions).
        let both =
            mi_on(task.as_ref(), &config, MiConfig { negatives: Negatives::CounterfactualBatch, ..base.clone() })
                .unwrap();
        let out = both.loss(&model(&both, &config), &batch, 0);
        let (index, _) = future_positions(&batch.prefix_lens, &batch.target_lens, batch.inputs.dims()[1]);
        assert!((stat(&out, "mi_log_k") - ((index.len() + 1) as f64).ln()).abs() < 1e-6);
        // The counterfactual InfoNCE trains the encoder, the scorer and the token layer.
        let m = model(&obj, &config);
        let Some(Heads::Mi(h0)) = &m.heads else { panic!() };
        let (enc, tok) = (params(&h0.encoder), params(h0.tokens.as_ref().unwrap()));
        let loss = obj.loss(&m, &batch, 0).total;
        let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &m);
        let m =
            burn::optim::Optimizer::step(&mut burn::optim::AdamWConfig::new().init::<B, LabModel<B>>(), 1e-2, m, grads);
        let Some(Heads::Mi(h1)) = &m.heads else { panic!() };
        assert_ne!(params(&h1.encoder), enc);
        assert_ne!(params(h1.tokens.as_ref().unwrap()), tok);
    }

    #[test]
    fn scheme_a_trains_its_reverse_lm_by_its_own_loss_and_takes_counterfactual_negatives() {
        let (task, batch, config) = path_star_case();
        let obj = mi_on(
            task.as_ref(),
            &config,
            MiConfig {
                encoder_input: EncoderInput::ReverseLm,
                negatives: Negatives::Counterfactual,
                schedule: MiSchedule::Constant,
                ..Default::default()
            },
        )
        .unwrap();
        let m = model(&obj, &config);
        let out = obj.loss(&m, &batch, 0);
        let names: Vec<&str> = out.parts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ntp", "infonce", "token_rl", "rollout", "reverse_lm"]);
        let log_k = scalar(out.stats.iter().find(|(n, _)| n == "mi_log_k").unwrap().1.clone()) as f64;
        assert!((log_k - 2f64.ln()).abs() < 1e-6);
        // The InfoNCE term gives the reverse LM no gradient: its states are read held fixed.
        let nce = out.parts.iter().find(|(n, _)| n == "infonce").unwrap().1.clone();
        let grads = nce.backward();
        let Some(Heads::Mi(h)) = &m.heads else { panic!() };
        struct Any<'a>(&'a <B as AutodiffBackend>::Gradients, usize);
        impl burn::module::ModuleVisitor<B> for Any<'_> {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
                self.1 += p.val().grad(self.0).is_some() as usize;
            }
        }
        let mut any = Any(&grads, 0);
        h.reverse.as_ref().unwrap().visit(&mut any);
        assert_eq!(any.1, 0);
    }

    #[test]
    fn a_far_summary_adds_its_own_contrast() {
        let (task, batch, config) = path_star_case();
        for negatives in [Negatives::Batch, Negatives::Counterfactual] {
            let mc = MiConfig {
                encoder_input: EncoderInput::FutureTokens,
                negatives,
                horizon: 1,
                far_horizon: 3,
                schedule: MiSchedule::Constant,
                lambda_infonce: 0.5,
                ..Default::default()
            };
            let obj = mi_on(task.as_ref(), &config, mc).unwrap();
            let m = model(&obj, &config);
            let out = obj.loss(&m, &batch, 0);
            let part = |name: &str| scalar(out.parts.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
            let stat = |name: &str| scalar(out.stats.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
            let log_k = stat("mi_log_k");
            assert!((stat("mi_bound_far") - (log_k - part("infonce_far"))).abs() < 1e-5);
            let want = part("ntp") + 0.5 * (part("infonce") + part("infonce_far")) + part("token_rl") + part("rollout");
            assert!((scalar(out.total.clone()) as f64 - want).abs() < 1e-4, "{negatives:?}");
            // The two horizons summarise different windows, so their contrasts differ.
            assert_ne!(part("infonce"), part("infonce_far"));
        }
        let bad = MiConfig { horizon: 4, far_horizon: 4, ..Default::default() };
        assert!(mi_on(task.as_ref(), &config, bad).is_err());
    }

    #[test]
    fn counterfactual_negatives_need_a_future_only_encoder_and_a_task_that_has_them() {
        let (task, _, config) = path_star_case();
        let e = mi_on(task.as_ref(), &config, MiConfig { negatives: Negatives::Counterfactual, ..Default::default() })
            .err()
            .unwrap();
        assert!(e.to_string().contains("future-only encoder"), "{e}");
        let recall = tasks::TaskSpec::default_of("key-recall").unwrap().build().unwrap();
        let cfg = GptConfig::tiny(recall.vocab().len(), 96).with_d_model(16);
        let counterfactual = MiConfig {
            negatives: Negatives::Counterfactual,
            encoder_input: EncoderInput::FutureTokens,
            ..Default::default()
        };
        let e = mi_on(recall.as_ref(), &cfg, counterfactual.clone()).err().unwrap();
        assert!(e.to_string().contains("no counterfactual futures"), "{e}");
    }

    #[test]
    fn graph_walk_takes_counterfactual_walks_to_other_goals() {
        use rand::SeedableRng;
        let walk = tasks::TaskSpec::GraphWalk(tasks::long_range::GraphWalkParams { nodes: 8, out_degree: 3, steps: 3 })
            .build()
            .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let examples: Vec<tasks::Example> = (0..4).map(|_| walk.sample(&mut rng)).collect();
        let batch = Batch::new(&examples.iter().collect::<Vec<_>>(), walk.vocab().dummy(), &FlexDevice);
        let cfg = GptConfig::tiny(walk.vocab().len(), 96).with_d_model(16).with_d_ff(32);
        let config = MiConfig {
            negatives: Negatives::Counterfactual,
            encoder_input: EncoderInput::FutureTokens,
            schedule: MiSchedule::Constant,
            ..Default::default()
        };
        let obj = mi_on(walk.as_ref(), &cfg, config).unwrap();
        let out = obj.loss(&model(&obj, &cfg), &batch, 0);
        let stat = |name: &str| scalar(out.stats.iter().find(|(n, _)| n == name).unwrap().1.clone()) as f64;
        // out_degree - 1 = 2 counterfactual walks per anchor: K = 3.
        assert!((stat("mi_log_k") - 3f64.ln()).abs() < 1e-6);
        assert!(stat("mi_bound") <= 3f64.ln() + 1e-6);
        assert!(scalar(out.total).is_finite());
    }

    #[test]
    fn bad_parameters_are_errors() {
        let task = tasks::TaskSpec::default_of("path-star").unwrap().build().unwrap();
        let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &tiny(), device: &FlexDevice };
        for bad in [
            MiConfig { top_k: 0, ..Default::default() },
            MiConfig { reward_tau: 0.0, ..Default::default() },
            MiConfig { lambda_infonce: -0.1, ..Default::default() },
            MiConfig { lambda_gt: f64::NAN, ..Default::default() },
            MiConfig { encoder_input: EncoderInput::FrozenCopy, ..Default::default() },
            MiConfig { frozen_lm_run: Some("x".into()), ..Default::default() },
        ] {
            assert!(Mi::new(&bad, &cx).is_err(), "{bad:?}");
        }
    }
}
