//! Future summary prediction with a hand-crafted summary (Mahajan et al. 2025, arXiv
//! 2510.14751): beside next-token prediction, one head on h_t predicts the bag of words of
//! x_{t+2..t+τ}, the tokens after the next one, with a binary cross-entropy per vocabulary
//! entry weighted by tf-idf on the training data. Windows are clipped at the end of the
//! sequence; positions with no token after the next one are left out.
//!
//! The targets are binary, so term frequency is 0 or 1 and the weight of entry v is its inverse
//! document frequency over the training targets, `ln((1 + N) / (1 + df_v)) + 1` (smoothed as
//! scikit-learn does), scaled to mean 1 so that turning the weights off keeps the loss's scale.
//! Total = L_NTP + λ · L_BoW, L_BoW = mean over positions of Σ_v w_v · BCE(σ(z_v), a_v).

use anyhow::{Result, bail};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use serde::{Deserialize, Serialize};
use tasks::Example;

use super::{AuxHead, BuildContext, Heads, LabModel, LossOutput, Objective, future_mask, heads, masked_cross_entropy};

/// `[objective] kind = "fsp-bow"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BowConfig {
    /// τ: the summary of position t is the set of tokens x_{t+2..t+τ}. Absent: to the end of
    /// the sequence. At least 2.
    pub tau: Option<usize>,
    /// Weight each vocabulary entry's cross-entropy by its idf on the training targets; false
    /// gives every entry weight 1.
    pub tfidf: bool,
    /// λ, the weight of the bag-of-words loss.
    pub weight: f64,
}

impl Default for BowConfig {
    fn default() -> Self {
        BowConfig { tau: None, tfidf: true, weight: 1.0 }
    }
}

/// Bag-of-words future summary prediction; see the module docs.
pub struct FspBow {
    tau: Option<usize>,
    weights: Vec<f32>,
    weight: f64,
    model: models::GptConfig,
}

/// Inverse document frequencies of every token over the targets of `examples` (a document is
/// one target), smoothed and scaled to mean 1.
pub fn idf_weights(vocab: usize, examples: &[Example]) -> Vec<f32> {
    let mut df = vec![0usize; vocab];
    let mut seen = vec![usize::MAX; vocab];
    for (i, ex) in examples.iter().enumerate() {
        for &tok in ex.target() {
            if seen[tok as usize] != i {
                seen[tok as usize] = i;
                df[tok as usize] += 1;
            }
        }
    }
    let n = examples.len() as f64;
    let idf: Vec<f64> = df.iter().map(|&d| ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0).collect();
    let mean = idf.iter().sum::<f64>() / vocab as f64;
    idf.iter().map(|w| (w / mean) as f32).collect()
}

impl FspBow {
    /// Computes the weights on the training split.
    pub fn new<B: AutodiffBackend>(config: &BowConfig, cx: &BuildContext<'_, B>) -> Result<Self> {
        if config.tau.is_some_and(|t| t < 2) {
            bail!("objective.tau must be at least 2 (the window x_(t+2..t+tau) would be empty)");
        }
        let vocab = cx.task.vocab().len();
        let weights = if config.tfidf { idf_weights(vocab, cx.train) } else { vec![1.0; vocab] };
        Ok(FspBow { tau: config.tau, weights, weight: config.weight, model: cx.model.clone() })
    }

    /// The multi-hot summaries `a[b, t, v]`: a[., t, v] = 1 if token v occurs among the target
    /// tokens x_{t+2..t+τ}. x_{j+1} is `targets[j]`, so the window is targets[t+1..=t+τ-1], a
    /// band of a [t, t] matrix applied to the one-hot targets.
    fn summaries<B: AutodiffBackend>(&self, batch: &Batch<B>) -> Tensor<B, 3> {
        let [b, t] = batch.targets.dims();
        let v = self.weights.len();
        let device = batch.targets.device();
        let classes = Tensor::<B, 1, Int>::arange(0..v as i64, &device).reshape([1, 1, v]).expand([b, t, v]);
        let one_hot = batch.targets.clone().unsqueeze_dim::<3>(2).expand([b, t, v]).equal(classes).float()
            * batch.target_mask.clone().unsqueeze_dim::<3>(2); // [b, t, v], padding and prompt zeroed
        let last = |row: usize| self.tau.map_or(t - 1, |tau| (row + tau - 1).min(t - 1));
        let band: Vec<f32> = (0..t).flat_map(|r| (0..t).map(move |c| (c > r && c <= last(r)) as u8 as f32)).collect();
        let band = Tensor::<B, 2>::from_data(TensorData::new(band, [t, t]), &device).unsqueeze::<3>().expand([b, t, t]);
        band.matmul(one_hot).clamp_max(1.0)
    }
}

impl<B: AutodiffBackend> Objective<B> for FspBow {
    fn init_heads(&self, device: &B::Device) -> Option<Heads<B>> {
        Some(Heads::Bow(AuxHead::new(&self.model, self.weights.len(), device)))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        let Heads::Bow(head) = heads(model) else { unreachable!("fsp-bow builds a bag-of-words head") };
        let out = model.gpt.forward(batch.inputs.clone());
        let ntp = masked_cross_entropy(out.logits, batch.targets.clone(), batch.target_mask.clone());
        // The bag is read from the first target on (`future_mask`), so the head's block
        // computes those positions alone.
        let from = batch.first_target();
        let z = head.forward_from(out.layers.last().expect("at least one block").clone(), from); // [b, t - from, v]
        let [b, t, v] = z.dims();
        let a = self.summaries(batch).slice([0..b, from..from + t, 0..v]);
        // Stable BCE with logits: softplus(z) - a z, softplus(z) = max(z, 0) + ln(1 + e^-|z|).
        let bce = z.clone().clamp_min(0.0) + z.clone().abs().neg().exp().log1p() - a * z;
        let w = Tensor::<B, 1>::from_data(TensorData::new(self.weights.clone(), [v]), &batch.targets.device());
        let per_position = (bce * w.reshape([1, 1, v])).sum_dim(2).reshape([b, t]);
        let mask = future_mask(batch).slice([0..b, from..from + t]);
        let bow = (per_position * mask.clone()).sum() / mask.sum().clamp_min(1.0);
        let total = ntp.clone() + bow.clone().mul_scalar(self.weight);
        LossOutput { total, parts: vec![("ntp".into(), ntp), ("bow".into(), bow)], stats: vec![] }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;

    use super::super::test_util::*;
    use super::*;

    fn objective(tau: Option<usize>, weights: Vec<f32>) -> FspBow {
        FspBow { tau, weights, weight: 0.5, model: tiny() }
    }

    #[test]
    fn idf_by_hand() {
        // Three targets over 4 tokens: token 1 in all, 2 in one, 0 and 3 in none.
        let ex = [Example::new(&[0], &[1, 2, 1]), Example::new(&[0], &[1]), Example::new(&[3], &[1])];
        let raw = [(4f64 / 1.0).ln() + 1.0, (4f64 / 4.0).ln() + 1.0, (4f64 / 2.0).ln() + 1.0, (4f64 / 1.0).ln() + 1.0];
        let mean = raw.iter().sum::<f64>() / 4.0;
        let got = idf_weights(4, &ex);
        for (g, r) in got.iter().zip(raw) {
            assert!((*g as f64 - r / mean).abs() < 1e-6);
        }
        // A token in every target counts least.
        assert!(got[1] < got[2] && got[2] < got[0]);
    }

    #[test]
    fn windows_are_clipped_and_skip_the_next_token() {
        let batch = batch();
        let full = objective(None, vec![1.0; 12]).summaries(&batch).into_data().to_vec::<f32>().unwrap();
        let tau3 = objective(Some(3), vec![1.0; 12]).summaries(&batch).into_data().to_vec::<f32>().unwrap();
        let at = |s: &[f32], r: usize, t: usize| -> Vec<usize> {
            (0..12).filter(|&v| s[(r * 6 + t) * 12 + v] > 0.5).collect()
        };
        // Row a = [1 2 3 | 4 5 6 7]: position 2 predicts 4; its window is {5, 6, 7} (τ = 3: {5, 6}).
        assert_eq!(at(&full, 0, 2), [5, 6, 7]);
        assert_eq!(at(&tau3, 0, 2), [5, 6]);
        assert_eq!(at(&full, 0, 4), [7]);
        assert!(at(&full, 0, 5).is_empty());
        // Row b = [1 3 | 8 9]: position 1 predicts 8, window {9}; padding never enters.
        assert_eq!(at(&full, 1, 1), [9]);
        assert!(at(&full, 1, 2).is_empty());
        // Row c = [2 2 2 1 | 10 11 4]: position 3 predicts 10, window {11, 4}.
        assert_eq!(at(&full, 2, 3), [4, 11]);
    }

    #[test]
    fn loss_matches_an_independent_computation() {
        let weights: Vec<f32> = (0..12).map(|i| 0.5 + i as f32 / 12.0).collect();
        let obj = objective(None, weights.clone());
        let config = tiny();
        let m = model(&obj, &config);
        let batch = batch();
        let out = obj.loss(&m, &batch, 0);
        let bow = scalar(out.parts[1].1.clone()) as f64;
        let Some(Heads::Bow(head)) = &m.heads else { panic!() };
        let z = head
            .forward(m.gpt.forward(batch.inputs.clone()).layers.last().unwrap().clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let rows = ROWS;
        let (mut sum, mut n) = (0.0f64, 0);
        for (r, (tokens, prefix)) in rows.iter().enumerate() {
            for t in 0..6 {
                // Positions predicting a target token with one more after it.
                if t + 1 >= *prefix && t + 2 < tokens.len() {
                    let window = &tokens[t + 2..];
                    for v in 0..12 {
                        let zz = z[(r * 6 + t) * 12 + v] as f64;
                        let a = window.contains(&(v as u32)) as u8 as f64;
                        let p = 1.0 / (1.0 + (-zz).exp());
                        sum += weights[v] as f64 * -(a * p.ln() + (1.0 - a) * (1.0 - p).ln());
                    }
                    n += 1;
                }
            }
        }
        assert_eq!(n, 6);
        assert!((bow - sum / n as f64).abs() < 1e-5, "{bow} vs {}", sum / n as f64);
        let total = scalar(out.total) as f64;
        assert!((total - scalar(out.parts[0].1.clone()) as f64 - 0.5 * bow).abs() < 1e-5);
    }

    #[test]
    fn head_and_trunk_learn() {
        let obj = objective(Some(4), vec![1.0; 12]);
        let m = model(&obj, &tiny());
        let before = params(&m);
        let after = params(&step(&obj, m, &batch()));
        assert_eq!(before.iter().zip(&after).filter(|(a, b)| a != b).count(), before.len());
        let task = tasks::TaskSpec::default_of("path-star").unwrap().build().unwrap();
        let cx = BuildContext::<B> { task: task.as_ref(), train: &[], model: &tiny(), device: &FlexDevice };
        assert!(FspBow::new(&BowConfig { tau: Some(1), ..BowConfig::default() }, &cx).is_err());
    }
}
