//! The CPC / InfoNCE term of the MI-shaped objective (docs/method.md, §9.4; van den Oord 2018): a
//! score f(h_t, F) between a state and a future summary, the positive F_t against the summaries of
//! the other positions of the batch as negatives. With K candidates per query (the positive
//! and K - 1 negatives), I(h; F) >= log K - L_InfoNCE, a bound that can never exceed log K.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{gelu, log_softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// The score function f(h, F).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScorerKind {
    /// Cosine similarity of W_q h and F (CLIP-style).
    #[default]
    Dot,
    /// (W_q h)ᵀ W F.
    Bilinear,
    /// A small MLP on [W_q h; F], for every pair.
    Mlp,
}

/// Which summaries are negatives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Negatives {
    /// Every other position of the batch.
    #[default]
    Batch,
    /// Only positions of other sequences (the summaries of nearby positions of the same
    /// sequence overlap with the positive).
    OtherSequences,
    /// The summaries of the example's counterfactual futures at the same position (the task's
    /// `counterfactual_targets`; path-star: the other arms' paths, K = d): they share the prompt,
    /// so only a state that knows the plan tells the true future from them. Needs a future-only
    /// encoder.
    Counterfactual,
    /// Counterfactual futures plus every other position of the batch.
    CounterfactualBatch,
    /// Hard negatives that share the far future with the positive (issue 35): for each
    /// counterfactual future, the true future with its first `swap_depth` inner nodes (the nodes
    /// after the source; path-star: the decision onwards) taken from the counterfactual one. The
    /// goal's parent stays the true one, so the one-hop shortcut (the goal's parent, read from the
    /// prompt) cannot tell them apart; only the near future, the plan, can.
    NearSwap,
    /// Depth-graded hard negatives (issue 35): for each counterfactual future and each inner node
    /// of the answer, the true future with that one node taken from the counterfactual one. The
    /// negative that differs at the goal's parent is won by the one-hop shortcut; the one that
    /// differs one node earlier needs one hop more, and so on back to the decision: the shortcut
    /// becomes the first step of a backward chain instead of its end.
    DepthGraded,
}

impl Negatives {
    /// Whether the task's counterfactual futures are among the negatives.
    pub fn counterfactual(self) -> bool {
        matches!(
            self,
            Negatives::Counterfactual | Negatives::CounterfactualBatch | Negatives::NearSwap | Negatives::DepthGraded
        )
    }

    /// Whether the negatives are the true future with some nodes swapped in from the
    /// counterfactual ones (`near-swap`, `depth-graded`).
    pub fn spliced(self) -> bool {
        matches!(self, Negatives::NearSwap | Negatives::DepthGraded)
    }
}

/// The score function's parameters.
#[derive(Module, Debug)]
pub struct Scorer<B: Backend> {
    /// W_q: `d -> s`.
    query: Linear<B>,
    /// W of the bilinear score, `s -> s`.
    bilinear: Option<Linear<B>>,
    /// The MLP score's layers, `2s -> hidden -> 1`.
    mlp: Option<(Linear<B>, Linear<B>)>,
}

impl<B: Backend> Scorer<B> {
    /// A scorer between `d`-wide states and `s`-wide summaries.
    pub fn new(kind: ScorerKind, d: usize, s: usize, init_std: f64, device: &B::Device) -> Self {
        let lin = |i: usize, o: usize| {
            LinearConfig::new(i, o).with_initializer(Initializer::Normal { mean: 0.0, std: init_std }).init(device)
        };
        Scorer {
            query: lin(d, s),
            bilinear: (kind == ScorerKind::Bilinear).then(|| lin(s, s)),
            mlp: (kind == ScorerKind::Mlp).then(|| (lin(2 * s, 2 * s), lin(2 * s, 1))),
        }
    }

    /// Scores of every state against every summary, `[n, n]` (before the temperature):
    /// `h` `[n, d]`, `f` `[n, s]`.
    pub fn scores(&self, h: Tensor<B, 2>, f: Tensor<B, 2>) -> Tensor<B, 2> {
        let q = self.query.forward(h); // [n, s]
        let [n, s] = q.dims();
        let m = f.dims()[0];
        match (&self.bilinear, &self.mlp) {
            (Some(w), _) => q.matmul(w.forward(f).transpose()),
            (None, Some((l1, l2))) => {
                let pairs = Tensor::cat(
                    vec![q.unsqueeze_dim::<3>(1).expand([n, m, s]), f.unsqueeze_dim::<3>(0).expand([n, m, s])],
                    2,
                ); // [n (query), m (summary), 2s]
                l2.forward(gelu(l1.forward(pairs))).reshape([n, m])
            }
            (None, None) => unit_rows(q).matmul(unit_rows(f).transpose()),
        }
    }

    /// Scores of each state against its own candidates only, `[b, c]`: `h` `[b, d]`, `f`
    /// `[b, c, s]`. The same function as [`Scorer::scores`] on the pairs it computes, without
    /// the b × (b c) pairs a grouped contrast never reads (the MLP scores every pair it is given).
    pub fn scores_grouped(&self, h: Tensor<B, 2>, f: Tensor<B, 3>) -> Tensor<B, 2> {
        let q = self.query.forward(h); // [b, s]
        let [b, c, s] = f.dims();
        let q3 = q.unsqueeze_dim::<3>(1).expand([b, c, s]);
        match (&self.bilinear, &self.mlp) {
            (Some(w), _) => (q3 * w.forward(f)).sum_dim(2).reshape([b, c]),
            (None, Some((l1, l2))) => l2.forward(gelu(l1.forward(kernels::cat_last(q3, f)))).reshape([b, c]),
            (None, None) => (unit_rows(q3) * unit_rows(f)).sum_dim(2).reshape([b, c]),
        }
    }
}

/// Rows scaled to unit length.
pub fn unit_rows<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let norm = x.clone().powi_scalar(2).sum_dim(D - 1).sqrt().clamp_min(1e-8);
    x / norm
}

/// The InfoNCE loss and the mean log K of `scores` `[n, n]` (row i: query i against every
/// summary; the positive on the diagonal), divided by `temperature`. With
/// [`Negatives::OtherSequences`], summaries of the query's own sequence other than the positive
/// are left out (`seq[i]` names row i's sequence).
pub fn info_nce<B: Backend>(
    scores: Tensor<B, 2>,
    temperature: f64,
    negatives: Negatives,
    seq: &[usize],
) -> (Tensor<B, 1>, f64) {
    let [n, _] = scores.dims();
    let mut keep = vec![1f32; n * n];
    if negatives == Negatives::OtherSequences {
        for i in 0..n {
            for j in 0..n {
                if i != j && seq[i] == seq[j] {
                    keep[i * n + j] = 0.0;
                }
            }
        }
    }
    info_nce_among(scores, temperature, &(0..n).collect::<Vec<_>>(), &keep)
}

/// InfoNCE over any candidate set: `scores` `[n, m]` of n anchors against m candidate summaries,
/// `positive[i]` the column of anchor i's own future, `keep` (`[n m]`, row-major) 1.0 where a
/// column is a candidate of that row (the positive included). Returns the mean loss and the mean
/// log K (K = the candidates of a row).
pub fn info_nce_among<B: Backend>(
    scores: Tensor<B, 2>,
    temperature: f64,
    positive: &[usize],
    keep: &[f32],
) -> (Tensor<B, 1>, f64) {
    let [n, m] = scores.dims();
    assert_eq!(keep.len(), n * m, "one keep flag per score");
    assert!(positive.iter().enumerate().all(|(i, &p)| keep[i * m + p] > 0.0), "the positive is a candidate");
    let device = scores.device();
    let log_k = (0..n).map(|i| (keep[i * m..(i + 1) * m].iter().sum::<f32>() as f64).ln()).sum::<f64>() / n as f64;
    let keep = Tensor::<B, 2>::from_data(TensorData::new(keep.to_vec(), [n, m]), &device);
    let logits = scores / temperature + (keep.neg() + 1.0) * -1e9;
    let mut onehot = vec![0f32; n * m];
    for (i, &p) in positive.iter().enumerate() {
        onehot[i * m + p] = 1.0;
    }
    let onehot = Tensor::<B, 2>::from_data(TensorData::new(onehot, [n, m]), &device);
    let loss = (log_softmax(logits, 1) * onehot).sum().neg() / n as f64;
    (loss, log_k)
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;

    use super::*;

    fn t2(v: Vec<f32>, n: usize) -> Tensor<Flex, 2> {
        Tensor::from_data(TensorData::new(v, [n, n]), &FlexDevice)
    }

    #[test]
    fn loss_and_k_by_hand() {
        // Scores [[2, 0, 0], [1, 1, 0], [0, 3, 0]], temperature 0.5: logits double.
        let s = t2(vec![2., 0., 0., 1., 1., 0., 0., 3., 0.], 3);
        let (loss, log_k) = info_nce(s.clone(), 0.5, Negatives::Batch, &[0, 1, 2]);
        let row = |l: [f64; 3], i: usize| -> f64 { l.iter().map(|x| x.exp()).sum::<f64>().ln() - l[i] };
        let want = (row([4., 0., 0.], 0) + row([2., 2., 0.], 1) + row([0., 6., 0.], 2)) / 3.0;
        assert!((loss.into_scalar() as f64 - want).abs() < 1e-5);
        assert!((log_k - 3f64.ln()).abs() < 1e-12);
        // Rows 0 and 1 from one sequence: each loses the other as a negative.
        let (loss, log_k) = info_nce(s, 0.5, Negatives::OtherSequences, &[0, 0, 1]);
        let want = (row([4., -1e9, 0.], 0) + row([-1e9, 2., 0.], 1) + row([0., 6., 0.], 2)) / 3.0;
        assert!((loss.into_scalar() as f64 - want).abs() < 1e-5);
        assert!((log_k - (2f64.ln() * 2.0 + 3f64.ln()) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_perfect_scorer_approaches_the_log_k_ceiling() {
        // Positives score 1, negatives 0, at temperature 0.01: the loss -> 0, the bound -> log K.
        let n = 8;
        let s = t2((0..n * n).map(|k| (k / n == k % n) as u8 as f32).collect(), n);
        let (loss, log_k) = info_nce(s, 0.01, Negatives::Batch, &(0..n).collect::<Vec<_>>());
        let bound = log_k - loss.into_scalar() as f64;
        assert!(bound <= log_k && bound > log_k - 1e-6, "{bound} vs log K {log_k}");
    }

    #[test]
    fn grouped_scores_are_the_matching_entries_of_all_scores() {
        let d = FlexDevice;
        let data = |n: usize, k: usize, seed: usize| -> Tensor<Flex, 2> {
            let v: Vec<f32> = (0..n * k).map(|i| (((i + seed) * 29 % 13) as f32 - 6.0) / 4.0).collect();
            Tensor::from_data(TensorData::new(v, [n, k]), &d)
        };
        let (h, f) = (data(3, 6, 0), data(6, 4, 5)); // 3 states, 2 candidates each
        for kind in [ScorerKind::Dot, ScorerKind::Bilinear, ScorerKind::Mlp] {
            let scorer = models::seeded::<Flex, _>(3, &d, || Scorer::<Flex>::new(kind, 6, 4, 0.3, &d));
            let all = scorer.scores(h.clone(), f.clone()).into_data().to_vec::<f32>().unwrap(); // [3, 6]
            let grouped =
                scorer.scores_grouped(h.clone(), f.clone().reshape([3, 2, 4])).into_data().to_vec::<f32>().unwrap();
            for r in 0..3 {
                for c in 0..2 {
                    let (a, b) = (all[r * 6 + r * 2 + c], grouped[r * 2 + c]);
                    assert!((a - b).abs() < 1e-5, "{kind:?} row {r} candidate {c}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn scorers_have_the_right_shape_and_dot_is_a_cosine() {
        let d = FlexDevice;
        // Deterministic inputs, and scorers drawn under the seed lock (burn's generator is
        // global: an unlocked draw would interleave with other tests' seeded draws).
        let data = |n: usize, k: usize| -> Tensor<Flex, 2> {
            let v: Vec<f32> = (0..n * k).map(|i| ((i * 29 % 13) as f32 - 6.0) / 4.0).collect();
            Tensor::from_data(TensorData::new(v, [n, k]), &d)
        };
        let (h, f) = (data(5, 6), data(5, 3));
        let scorer = |kind| {
            models::seeded::<Flex, _>(3, &d, || {
                let s = Scorer::<Flex>::new(kind, 6, 3, 0.3, &d);
                let _ = burn::module::Module::num_params(&s);
                s
            })
        };
        for kind in [ScorerKind::Dot, ScorerKind::Bilinear, ScorerKind::Mlp] {
            assert_eq!(scorer(kind).scores(h.clone(), f.clone()).dims(), [5, 5]);
        }
        let dot = scorer(ScorerKind::Dot).scores(h, f);
        let max = dot.abs().max().into_scalar();
        assert!(max <= 1.0 + 1e-5, "a cosine is at most 1, got {max}");
    }
}
