//! The token-level reward of the MI-shaped objective (docs/method.md, §9.5), all (t, a) pairs in
//! one batched pass, no rollout:
//!
//! - action set A_t = TopK_k(π(·|s_t)) ∪ {x_{t+1}} (k + 1 columns; the ground-truth column is
//!   masked out when the ground truth is already among the top k);
//! - a rollout head predicts the future summary of taking a, F̂_t(a) = MLP([h_t; e(a)]), trained
//!   (on the ground-truth action, whose future is the one observed) to match F_t;
//! - score s_t(a) = cos(F̂_t(a), F_t) + λ_gt · 1[a = x_{t+1}], reward r_t = softmax(s_t / τ) over
//!   A_t, held constant;
//! - loss −Σ_{a ∈ A_t} r_t(a) · log π(a | s_t).
//!
//! The rollout head reads h_t and e(a) without gradient: it is an evaluator, and the policy is
//! shaped only through the reward-weighted log-probabilities.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use models::linear_rows;

use super::infonce::unit_rows;

/// F̂(h, a) = W_2 gelu(W_1 [h; e(a)]).
#[derive(Module, Debug)]
pub struct RolloutHead<B: Backend> {
    hidden: Linear<B>,
    out: Linear<B>,
}

impl<B: Backend> RolloutHead<B> {
    /// A head from `d`-wide states and embeddings to `s`-wide summaries.
    pub fn new(d: usize, s: usize, init_std: f64, device: &B::Device) -> Self {
        let lin = |i: usize, o: usize| {
            LinearConfig::new(i, o).with_initializer(Initializer::Normal { mean: 0.0, std: init_std }).init(device)
        };
        RolloutHead { hidden: lin(2 * d, 2 * d), out: lin(2 * d, s) }
    }

    /// Predicted summaries `[n, c, s]` for states `h` `[n, d]` and action embeddings `e`
    /// `[n, c, d]`.
    pub fn forward(&self, h: Tensor<B, 2>, e: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, c, d] = e.dims();
        let joined = kernels::cat_last(h.unsqueeze_dim::<3>(1).expand([n, c, d]), e);
        linear_rows(&self.out, kernels::gelu(linear_rows(&self.hidden, joined)))
    }
}

/// The action set of each row: `actions` `[n, k + 1]` (top k of `logits` `[n, v]`, then the
/// ground truth `gt` `[n]`), `valid` `[n, k + 1]` (0 on the ground-truth column when it repeats
/// a top-k token) and `is_gt` `[n, k + 1]` (1 on the valid column holding the ground truth).
pub fn action_set<B: Backend>(
    logits: Tensor<B, 2>,
    gt: Tensor<B, 1, Int>,
    k: usize,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>, Tensor<B, 2>) {
    let [n, _] = logits.dims();
    let (_, top) = logits.topk_with_indices(k, 1); // [n, k]
    let gt = gt.reshape([n, 1]);
    let gt_in_top = top.clone().equal(gt.clone().expand([n, k])).int().sum_dim(1).float(); // [n, 1], 0 or 1
    let actions = Tensor::cat(vec![top, gt.clone()], 1); // [n, k + 1]
    let device = actions.device();
    let valid = Tensor::cat(vec![Tensor::ones([n, k], &device), gt_in_top.neg() + 1.0], 1);
    let is_gt = actions.clone().equal(gt.expand([n, k + 1])).float() * valid.clone();
    (actions, valid, is_gt)
}

/// Rewards `[n, c]`: softmax over the valid actions of (cos(F̂(a), F) + λ_gt 1[a = gt]) / τ.
/// `predicted` `[n, c, s]`, `summary` `[n, s]`. Callers detach the inputs: a reward is a
/// constant.
pub fn rewards<B: Backend>(
    predicted: Tensor<B, 3>,
    summary: Tensor<B, 2>,
    valid: Tensor<B, 2>,
    is_gt: Tensor<B, 2>,
    lambda_gt: f64,
    tau: f64,
) -> Tensor<B, 2> {
    let [n, c, s] = predicted.dims();
    let cos = (unit_rows(predicted) * unit_rows(summary).unsqueeze_dim::<3>(1).expand([n, c, s])).sum_dim(2);
    let score = cos.reshape([n, c]) + is_gt * lambda_gt;
    softmax(score / tau + (valid.neg() + 1.0) * -1e9, 1)
}

/// −Σ_a r(a) log π(a), averaged over rows: `logits` `[n, v]`, `actions` and `reward` `[n, c]`.
pub fn reward_weighted_nll<B: Backend>(
    logits: Tensor<B, 2>,
    actions: Tensor<B, 2, Int>,
    reward: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1).gather(1, actions); // [n, c]
    (logp * reward).sum().neg() / n as f64
}

/// Mean entropy of the rows of `logits` `[n, v]`, in nats.
pub fn mean_entropy<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    (logp.clone().exp() * logp).sum().neg() / n as f64
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;
    use burn::tensor::TensorData;

    use super::*;

    fn floats(t: Tensor<Flex, 2>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn the_ground_truth_joins_the_top_k_once() {
        let d = FlexDevice;
        // Row 0: top 2 = {3, 1}, ground truth 1 (inside); row 1: top 2 = {0, 2}, ground truth 3.
        let logits = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0., 2., -1., 5., 9., 1., 4., 0.], [2, 4]), &d);
        let gt = Tensor::<Flex, 1, Int>::from_data(TensorData::new(vec![1, 3], [2]), &d);
        let (actions, valid, is_gt) = action_set(logits, gt, 2);
        assert_eq!(actions.into_data().convert::<i64>().to_vec::<i64>().unwrap(), vec![3, 1, 1, 0, 2, 3]);
        assert_eq!(floats(valid), vec![1., 1., 0., 1., 1., 1.]);
        assert_eq!(floats(is_gt), vec![0., 1., 0., 0., 0., 1.]);
    }

    #[test]
    fn rewards_by_hand_and_their_temperature_limits() {
        let d = FlexDevice;
        // One row, three actions (the third invalid); F = (1, 0); F̂ = (1, 0), (0, 1), (1, 0).
        let pred = Tensor::<Flex, 3>::from_data(TensorData::new(vec![1., 0., 0., 1., 1., 0.], [1, 3, 2]), &d);
        let f = Tensor::<Flex, 2>::from_data(TensorData::new(vec![1., 0.], [1, 2]), &d);
        let valid = Tensor::<Flex, 2>::from_data(TensorData::new(vec![1., 1., 0.], [1, 3]), &d);
        let is_gt = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0., 1., 0.], [1, 3]), &d);
        let r =
            |lambda: f64, tau: f64| floats(rewards(pred.clone(), f.clone(), valid.clone(), is_gt.clone(), lambda, tau));
        // Scores: cos = (1, 0) + λ_gt (0, 0.5) = (1, 0.5); τ = 1: softmax.
        let got = r(0.5, 1.0);
        let e = (0.5f64).exp();
        assert!((got[0] as f64 - e / (e + 1.0)).abs() < 1e-6 && (got[1] as f64 - 1.0 / (e + 1.0)).abs() < 1e-6);
        assert_eq!(got[2], 0.0, "an invalid action gets nothing");
        assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-6, "rewards are a distribution");
        // τ -> 0: all reward on the best score; τ -> ∞: uniform over the valid actions.
        let cold = r(0.5, 1e-4);
        assert!((cold[0] - 1.0).abs() < 1e-6 && cold[1] < 1e-6);
        let hot = r(0.5, 1e6);
        assert!((hot[0] - 0.5).abs() < 1e-5 && (hot[1] - 0.5).abs() < 1e-5 && hot[2] == 0.0);
        // A large λ_gt hands the reward to the ground truth.
        let gt_wins = r(10.0, 1.0);
        assert!(gt_wins[1] > 0.99);
    }

    #[test]
    fn reward_weighted_nll_by_hand() {
        let d = FlexDevice;
        // π = softmax(0, ln 3) = (1/4, 3/4); rewards (0.2, 0.8) on actions (0, 1).
        let logits = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0., 3f32.ln()], [1, 2]), &d);
        let actions = Tensor::<Flex, 2, Int>::from_data(TensorData::new(vec![0, 1], [1, 2]), &d);
        let r = Tensor::<Flex, 2>::from_data(TensorData::new(vec![0.2, 0.8], [1, 2]), &d);
        let got = reward_weighted_nll(logits.clone(), actions, r).into_scalar() as f64;
        let want = -(0.2 * 0.25f64.ln() + 0.8 * 0.75f64.ln());
        assert!((got - want).abs() < 1e-6);
        let h = mean_entropy(logits).into_scalar() as f64;
        assert!((h - -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln())).abs() < 1e-6);
    }
}
