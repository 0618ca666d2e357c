//! The AvataRL-style reward baseline (github tokenbender/avataRL, `compute_avatarl_loss`):
//!
//! - action set per position: the student's top k ∪ the critic's top k ∪ the ground truth
//!   (duplicates kept once);
//! - reality expert with active-token label smoothing: the ground truth gets 1 − ε, the ε is
//!   split evenly over the other actions;
//! - ideal distribution ∝ P_reality^0.7 · P_critic^0.3 over the action set;
//! - rewards: the ideal probabilities renormalised over the action set, kept only above their
//!   mean (1 / |A|), times `reward_scale`, rows rescaled so that no reward exceeds `max_reward`;
//! - loss −Σ_a r_a log π(a) / |A| − c_H · H(π), averaged over target positions (+ λ_NTP · NTP,
//!   0 by default: AvataRL trains on the reward alone).
//!
//! One difference from the published code: its "above the mean" threshold compares the
//! normalised probabilities against the mean of the *unnormalised* products, an artefact that
//! makes the threshold depend on the critic's overall confidence; the lab compares against the
//! mean of the normalised ones. The critic is a frozen checkpoint of another lab run.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use models::Gpt;
use serde::{Deserialize, Serialize};

use super::frozen::{Serves, load_frozen};
use super::{BuildContext, LabModel, LossOutput, Objective, masked_cross_entropy};

/// `[objective] kind = "avatarl"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AvatarlConfig {
    /// The run whose latest checkpoint is the critic (required).
    pub critic_run: Option<PathBuf>,
    /// k of the student's and the critic's top k.
    pub top_k: usize,
    /// Exponent of the reality expert.
    pub reality_weight: f64,
    /// Exponent of the critic ("mentor").
    pub mentor_weight: f64,
    /// ε of the active-token label smoothing.
    pub label_smoothing: f64,
    /// Multiplier of the kept rewards.
    pub reward_scale: f64,
    /// Largest reward of a row after rescaling.
    pub max_reward: f64,
    /// c_H, the entropy bonus.
    pub entropy_coefficient: f64,
    /// λ_NTP: weight of a next-token term beside the reward loss.
    pub lambda_ntp: f64,
}

impl Default for AvatarlConfig {
    fn default() -> Self {
        AvatarlConfig {
            critic_run: None,
            top_k: 4,
            reality_weight: 0.7,
            mentor_weight: 0.3,
            label_smoothing: 0.1,
            reward_scale: 100.0,
            max_reward: 1.5,
            entropy_coefficient: 0.01,
            lambda_ntp: 0.0,
        }
    }
}

/// The AvataRL-style objective; see the module docs.
pub struct Avatarl<B: AutodiffBackend> {
    config: AvatarlConfig,
    critic: Gpt<B::InnerBackend>,
}

impl<B: AutodiffBackend> Avatarl<B> {
    /// Loads the critic.
    pub fn new(config: &AvatarlConfig, cx: &BuildContext<'_, B>) -> Result<Self> {
        let Some(run) = &config.critic_run else {
            bail!("kind = \"avatarl\" needs objective.critic_run: a finished run whose model is the critic")
        };
        if 2 * config.top_k + 1 > cx.task.vocab().len() || config.top_k == 0 {
            bail!("objective.top_k must be between 1 and (vocabulary - 1) / 2");
        }
        let critic =
            load_frozen::<B::InnerBackend>(run, "objective.critic_run", Serves::ForwardLm, cx.model, cx.device)?;
        Ok(Avatarl { config: config.clone(), critic })
    }
}

/// What [`avatarl_rewards`] gives, for rows of the flattened batch.
pub struct Rewards<B: AutodiffBackend> {
    /// Action ids `[m, 2k + 1]`.
    pub actions: Tensor<B, 2, Int>,
    /// 1 on the first occurrence of each action, `[m, 2k + 1]`.
    pub valid: Tensor<B, 2>,
    /// 1 on the valid ground-truth column.
    pub is_gt: Tensor<B, 2>,
    /// Rewards, 0 on invalid columns.
    pub reward: Tensor<B, 2>,
}

/// The action sets and rewards of `student` and `critic` logits `[m, v]` (no gradient) for the
/// ground truth `gt` `[m]`.
pub fn avatarl_rewards<B: AutodiffBackend>(
    c: &AvatarlConfig,
    student: Tensor<B, 2>,
    critic: Tensor<B, 2>,
    gt: Tensor<B, 1, Int>,
) -> Rewards<B> {
    let [m, _] = student.dims();
    let k = c.top_k;
    let width = 2 * k + 1;
    let device = student.device();
    let (_, s_top) = student.topk_with_indices(k, 1);
    let (_, c_top) = critic.clone().topk_with_indices(k, 1);
    let gt = gt.reshape([m, 1]);
    let actions = Tensor::cat(vec![s_top, c_top, gt.clone()], 1); // [m, w]
    // A column repeats an earlier one if it equals any column to its left.
    let same = actions
        .clone()
        .unsqueeze_dim::<3>(2)
        .expand([m, width, width])
        .equal(actions.clone().unsqueeze_dim::<3>(1).expand([m, width, width]))
        .float(); // [m, w, w]
    let left: Vec<f32> = (0..width * width).map(|i| ((i % width) < (i / width)) as u8 as f32).collect();
    let left = Tensor::<B, 2>::from_data(TensorData::new(left, [width, width]), &device).unsqueeze::<3>();
    let repeats = (same * left).sum_dim(2).reshape([m, width]).clamp_max(1.0);
    let valid = repeats.neg() + 1.0;
    let is_gt = actions.clone().equal(gt.expand([m, width])).float() * valid.clone();
    let active = valid.clone().sum_dim(1); // [m, 1]
    let eps = c.label_smoothing;
    let others = (valid.clone() - is_gt.clone()) * ((active.clone() - 1.0).clamp_min(1.0).recip() * eps);
    let reality = is_gt.clone() * (1.0 - eps) + others;
    let mentor = softmax(critic, 1).gather(1, actions.clone());
    let ideal = reality.powf_scalar(c.reality_weight) * mentor.powf_scalar(c.mentor_weight) * valid.clone();
    let normalised = ideal.clone() / (ideal.sum_dim(1) + 1e-8);
    let above = normalised.clone().greater(active.recip()).float() * valid.clone();
    let raw = normalised * above * c.reward_scale;
    let factor = (raw.clone().max_dim(1).clamp_min(1e-8).recip() * c.max_reward).clamp_max(1.0);
    Rewards { actions, valid, is_gt, reward: raw * factor }
}

impl<B: AutodiffBackend> Objective<B> for Avatarl<B> {
    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        self.loss_from(model, batch, batch.first_target())
    }
}

impl<B: AutodiffBackend> Avatarl<B> {
    /// The loss over positions `from..t`: every term is a per-position quantity masked to the
    /// target positions, so from the first target on (`Batch::first_target`) it is the loss over
    /// every position, and both the student's and the critic's last blocks skip the prompt
    /// (`Gpt::forward_from`).
    fn loss_from(&self, model: &LabModel<B>, batch: &Batch<B>, from: usize) -> LossOutput<B> {
        let c = &self.config;
        let out = model.gpt.forward_from(batch.inputs.clone(), from);
        let [b, t, v] = out.logits.dims(); // t positions from `from` on
        let m = b * t;
        let student = out.logits.clone().reshape([m, v]);
        let critic = Tensor::<B, 2>::from_inner(
            self.critic.forward_from(batch.inputs.clone().inner(), from).logits.reshape([m, v]),
        );
        let [_, whole] = batch.targets.dims();
        let (targets, target_mask) =
            (batch.targets.clone().slice([0..b, from..whole]), batch.target_mask.clone().slice([0..b, from..whole]));
        let gt = targets.clone().reshape([m]);
        let r = avatarl_rewards(c, student.clone().detach(), critic, gt);
        let logp = log_softmax(student, 1);
        let entropy = (logp.clone().exp() * logp.clone()).sum_dim(1).neg(); // [m, 1]
        let active = r.valid.clone().sum_dim(1);
        let per_row = (logp.gather(1, r.actions) * r.reward.clone()).sum_dim(1).neg() / active.clone()
            - entropy.clone() * c.entropy_coefficient; // [m, 1]
        let mask = target_mask.clone().reshape([m, 1]);
        let count = mask.clone().sum().clamp_min(1.0);
        let policy = (per_row * mask.clone()).sum() / count.clone();
        let ntp = masked_cross_entropy(out.logits, targets, target_mask);
        let total = policy.clone() + ntp.clone().mul_scalar(c.lambda_ntp);
        let stats = vec![
            ("reward_gt".to_string(), ((r.reward * r.is_gt).sum_dim(1) * mask.clone()).sum() / count.clone()),
            ("action_set".to_string(), (active * mask.clone()).sum() / count.clone()),
            ("entropy".to_string(), (entropy.detach() * mask).sum() / count),
        ];
        LossOutput { total, parts: vec![("avatarl".into(), policy), ("ntp".into(), ntp)], stats }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;

    use super::super::test_util::{B, assert_same_loss, long_prompt_batch, model, tiny};
    use super::*;

    fn t2(v: Vec<f32>, m: usize, n: usize) -> Tensor<B, 2> {
        Tensor::from_data(TensorData::new(v, [m, n]), &FlexDevice)
    }

    #[test]
    fn rewards_by_hand() {
        // Vocabulary 5, k = 1. Student top 1 = token 0; critic top 1 = token 0 (repeat);
        // ground truth 2. Actions [0, 0, 2] with the second masked: |A| = 2.
        let c = AvatarlConfig { top_k: 1, ..Default::default() };
        let student = t2(vec![3., 0., 1., 0., 0.], 1, 5);
        let critic_logits = vec![2f32, 0., 1., 0., 0.];
        let critic = t2(critic_logits.clone(), 1, 5);
        let gt = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![2], [1]), &FlexDevice);
        let r = avatarl_rewards(&c, student, critic, gt);
        let f = |t: Tensor<B, 2>| t.into_data().to_vec::<f32>().unwrap();
        assert_eq!(r.actions.into_data().convert::<i64>().to_vec::<i64>().unwrap(), vec![0, 0, 2]);
        assert_eq!(f(r.valid), vec![1., 0., 1.]);
        assert_eq!(f(r.is_gt), vec![0., 0., 1.]);
        // Reality: gt 0.9, token 0 gets 0.1. Critic probabilities p0, p2 from softmax.
        let z: f64 = critic_logits.iter().map(|&x| (x as f64).exp()).sum();
        let (p0, p2) = (2f64.exp() / z, 1f64.exp() / z);
        let i0 = 0.1f64.powf(0.7) * p0.powf(0.3);
        let i2 = 0.9f64.powf(0.7) * p2.powf(0.3);
        let (n0, n2) = (i0 / (i0 + i2), i2 / (i0 + i2));
        // Only the ground truth is above the mean 1/2; 100 x n2 is rescaled to the cap 1.5.
        assert!(n2 > 0.5 && n0 < 0.5);
        let got = f(r.reward);
        assert_eq!(got[0], 0.0);
        assert_eq!(got[1], 0.0);
        assert!((got[2] - 1.5).abs() < 1e-5, "{got:?}");
        // With a small scale nothing is capped: the reward is the scaled probability.
        let c = AvatarlConfig { top_k: 1, reward_scale: 1.0, ..Default::default() };
        let r = avatarl_rewards(
            &c,
            t2(vec![3., 0., 1., 0., 0.], 1, 5),
            t2(critic_logits, 1, 5),
            Tensor::<B, 1, Int>::from_data(TensorData::new(vec![2], [1]), &FlexDevice),
        );
        assert!((f(r.reward)[2] as f64 - n2).abs() < 1e-5);
    }

    #[test]
    fn skipping_the_prompt_changes_neither_the_loss_nor_its_gradients() {
        // Both GPTs' last blocks skip three positions of every row; with the NTP term on, every
        // part is compared.
        let batch = long_prompt_batch();
        let obj = Avatarl::<B> {
            config: AvatarlConfig { lambda_ntp: 0.5, ..Default::default() },
            critic: tiny().init_seeded(7, &FlexDevice),
        };
        let m = model(&obj, &tiny());
        assert_same_loss(&m, obj.loss_from(&m, &batch, 0), obj.loss(&m, &batch, 0), "avatarl");
    }
}
