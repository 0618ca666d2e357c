//! The on-policy token reward (issue 35, item 2; `reward = "on-policy"`).
//!
//! The seed's reward scores each candidate token against the summary of the *true* future, so
//! the ground truth always wins: at the decision it put 0.99 of its mass on the goal's arm
//! whatever the state knew (LOG.md, 2026-12-01 (later)). Here the environment rolls out every
//! future the anchor can have (the true one and the task's counterfactual ones: path-star, one
//! per arm), none of them marked, and the critic that InfoNCE trains scores each against h_t.
//! A candidate token's score is that of the future it starts; the action set is TopK(π_t) and
//! every future's first step, so that the ground truth is not the one candidate added by hand.
//! The reward at the decision favours the goal's arm exactly as far as h_t knows the plan: with a
//! critic that cannot read h_t it is uniform over the arms (the test below).

use super::loss::Untracked;
use super::negatives::{Alternatives, at_anchors};
use super::*;

/// Per anchor, the action set and its rewards: the columns are TopK(π) (`top[i]`), then the
/// first step of each rolled-out future (`futures[i]`: its first token and the critic's score).
/// A column gets a reward only if its token starts some future (the best-scored one, if several
/// do) and no earlier column holds it; the rewards are a softmax of the scores over those columns
/// at temperature `tau`. Nothing here knows which future is the true one.
pub(super) fn on_policy_rewards(top: &[Vec<u32>], futures: &[Vec<(u32, f32)>], tau: f64) -> (Vec<u32>, Vec<f32>) {
    let (mut actions, mut rewards) = (Vec::new(), Vec::new());
    for (top, futures) in top.iter().zip(futures) {
        let row: Vec<u32> = top.iter().copied().chain(futures.iter().map(|&(a, _)| a)).collect();
        let score = |j: usize| -> Option<f64> {
            let a = row[j];
            if row[..j].contains(&a) {
                return None;
            }
            futures.iter().filter(|&&(x, _)| x == a).map(|&(_, s)| s as f64).reduce(f64::max)
        };
        let scores: Vec<Option<f64>> = (0..row.len()).map(score).collect();
        let max = scores.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = scores.iter().map(|s| s.map_or(0.0, |s| ((s - max) / tau).exp())).collect();
        let total: f64 = weights.iter().sum();
        actions.extend(&row);
        rewards.extend(weights.iter().map(|w| (w / total) as f32));
    }
    (actions, rewards)
}

impl<B: AutodiffBackend> Mi<B> {
    /// The on-policy reward's actions `[n, k + m + 1]` and rewards (constants) at the anchors
    /// (`index`, `rows`; states `hs` `[n, d]`, the true futures' summaries `own` `[n, s]` as the
    /// contrast computed them, logits `[n, v]`), and the rewards' mean mass on the ground truth (a
    /// statistic, computed after the rewards). `counterfactual`: the batch's counterfactual
    /// futures if the caller has them already (built here otherwise).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_policy(
        &self,
        untracked: &Untracked<B>,
        batch: &Batch<B>,
        counterfactual: Option<&Alternatives<B>>,
        own: &Tensor<B, 2>,
        hs: &Tensor<B, 2>,
        index: &[i32],
        rows: &[usize],
        logits: &Tensor<B, 2>,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2>, f64) {
        let c = &self.config;
        let built;
        let alt = match counterfactual {
            Some(alt) => alt,
            None => {
                built = self.alternatives_as(batch, Negatives::Counterfactual).expect(
                    "on-policy reward: a row of the batch has no counterfactual futures of the answer's length",
                );
                &built
            }
        };
        let ([_, t], m, n) = (batch.inputs.dims(), alt.per_row, index.len());
        let device = batch.inputs.device();
        let (encoder, scorer) = (&untracked.heads.encoder, &untracked.heads.scorer);
        let alt_lens: Vec<usize> = batch.lens().iter().flat_map(|&l| std::iter::repeat_n(l, m)).collect();
        let alt_states = untracked.future_states(&alt.batch).inner();
        let others = encoder.forward(alt_states.clone(), alt_states, &future_window(&alt_lens, t, c.horizon));
        let others = at_anchors(others, index, rows, m); // [n m, s]
        let own = own.clone().inner();
        let scores = scorer.scores(hs.clone().inner(), Tensor::cat(vec![own, others], 0)); // [n, n + n m]
        let scores = scores.into_data().convert::<f32>().to_vec::<f32>().expect("floats");
        let width = n + n * m;
        let mut futures = Vec::with_capacity(n);
        let mut truth = Vec::with_capacity(n);
        for (i, &k) in index.iter().enumerate() {
            let (r, next) = (k as usize / t, k as usize % t + 1);
            truth.push(alt.truth[r][next]);
            let mut row = vec![(alt.truth[r][next], scores[i * width + i])];
            row.extend((0..m).map(|a| (alt.tokens[r * m + a][next], scores[i * width + n + i * m + a])));
            futures.push(row);
        }
        let (_, top) = logits.clone().inner().topk_with_indices(c.top_k, 1);
        let top = top.into_data().convert::<i64>().to_vec::<i64>().expect("ints");
        let top: Vec<Vec<u32>> = top.chunks(c.top_k).map(|r| r.iter().map(|&x| x as u32).collect()).collect();
        let (actions, rewards) = on_policy_rewards(&top, &futures, c.reward_tau);
        let cols = c.top_k + m + 1;
        let gt_mass = (0..n)
            .map(|i| {
                (0..cols)
                    .filter(|&j| actions[i * cols + j] == truth[i])
                    .map(|j| rewards[i * cols + j] as f64)
                    .sum::<f64>()
            })
            .sum::<f64>()
            / n.max(1) as f64;
        let actions: Vec<i64> = actions.into_iter().map(i64::from).collect();
        (
            Tensor::from_data(TensorData::new(actions, [n, cols]), &device),
            Tensor::from_data(TensorData::new(rewards, [n, cols]), &device),
            gt_mass,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_follow_the_critic_over_the_futures_first_steps() {
        // Top 3 = {5, 7, 9}; futures start with 7 (score 0.9) and 8 (0.1). Columns 5, 7, 9, 7, 8:
        // 5 and 9 start no future, the second 7 repeats a column, so 7 and 8 share the reward.
        let (actions, rewards) = on_policy_rewards(&[vec![5, 7, 9]], &[vec![(7, 0.9), (8, 0.1)]], 0.1);
        assert_eq!(actions, [5, 7, 9, 7, 8]);
        let want = 1.0 / (1.0 + (-8f64).exp());
        assert!((rewards[1] as f64 - want).abs() < 1e-6 && (rewards[4] as f64 - (1.0 - want)).abs() < 1e-6);
        assert_eq!([rewards[0], rewards[2], rewards[3]], [0.0; 3]);
        // Futures with one first step (the source, before the decision): all of the reward.
        let (_, rewards) = on_policy_rewards(&[vec![1, 2]], &[vec![(3, -0.5), (3, 0.2)]], 0.1);
        assert_eq!(rewards, [0.0, 0.0, 1.0, 0.0]);
    }
}
