//! The MI objective's configuration (`[objective] kind = "mi"`): what the future encoder reads,
//! how the λs move, and every parameter with its default (docs/method.md, §9.8).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::super::future::PoolerKind;
use super::super::infonce::{Negatives, ScorerKind};

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
    /// Scheme A (docs/method.md, §9.3.3): the states of a right-to-left LM trained jointly with its
    /// own loss (`fsp-summary`'s reverse LM), s_j = its state after reading x_{len-2} down to x_j,
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

/// What the token-level reward scores each candidate token against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardKind {
    /// The seed's form (docs/method.md, §9.5): the rollout head's F̂_t(a) against the true
    /// future's summary F_t, plus λ_gt for the ground truth, over TopK ∪ {x_(t+1)}. Scored against
    /// the true future, it is a soft copy of the label (LOG.md, 2026-12-01 (later)).
    #[default]
    Label,
    /// Issue 35: each candidate is the first step of a future the environment rolls out (the true
    /// one and the task's counterfactual ones, unmarked), scored by the critic f(h_t, F(future)),
    /// over TopK ∪ {every future's first step}. Neither the ground truth nor the true future is
    /// marked, so the reward favours the goal's arm only as far as h_t knows the plan. Needs a
    /// future-only encoder and a task with counterfactual futures.
    OnPolicy,
}

/// `[objective] kind = "mi"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiConfig {
    /// L: the future encoder pools h_{t+1..t+L} (clipped at the end of the sequence).
    pub horizon: usize,
    /// Multi-horizon summaries (docs/method.md, §9.3.6): a second summary over t+1..t+far_horizon,
    /// with its own encoder and scorer and its own InfoNCE term (same λ, same negatives), beside
    /// the near one; 0 = one horizon. The token reward reads the near summary.
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
    /// Negatives: `batch` (every other position), `other-sequences`, `counterfactual`,
    /// `counterfactual-batch`, `near-swap` or `depth-graded` (see [`Negatives`]).
    pub negatives: Negatives,
    /// `negatives = "near-swap"`: how many inner nodes of the answer (from the one after the
    /// source on) each hard negative takes from a counterfactual future; at most the answer's
    /// inner nodes.
    pub swap_depth: usize,
    /// λ_InfoNCE (its peak under the joint schedule, its stage-1 value under two-stage).
    pub lambda_infonce: f64,
    /// k of the action set TopK_k ∪ {x_{t+1}}.
    pub top_k: usize,
    /// `label` (the seed's reward, scored against the true future) or `on-policy` (the critic's
    /// score of each candidate's rolled-out future, no label); see `RewardKind`.
    pub reward: RewardKind,
    /// λ_gt: the score bonus of the ground-truth token (`reward = "label"` only).
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
            swap_depth: 1,
            lambda_infonce: 0.1,
            top_k: 3,
            reward: RewardKind::Label,
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
