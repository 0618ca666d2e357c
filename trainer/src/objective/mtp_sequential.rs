//! Multi-token prediction with sequential modules (DeepSeek-V3, arXiv 2412.19437 §2.2).
//!
//! Module k (1..=D) keeps the causal chain: at position i it combines the previous depth's
//! representation h^{k-1}_i (h^0 = the GPT's last residual stream) with the embedding of the
//! token k ahead, h'_i = M_k [RMSNorm(h^{k-1}_i); RMSNorm(Emb(x_{i+k}))] with M_k a d × 2d
//! projection, runs one transformer block over h', and the shared output head (final norm and
//! unembedding) predicts x_{i+k+1}. The embedding and output head are the GPT's own.
//! Loss = L_NTP + (λ / D) Σ_k L^k.

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use lab_core::Batch;
use models::{Block, GptConfig, linear_rows};
use serde::{Deserialize, Serialize};

use super::{Heads, LabModel, LossOutput, Objective, heads, masked_cross_entropy};

/// `[objective] kind = "mtp-sequential"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SequentialMtpConfig {
    /// Modules D: module k predicts the token k + 1 ahead. At least 1.
    pub depth: usize,
    /// λ in L_NTP + (λ / D) Σ_k L^k (DeepSeek-V3: 0.3, later 0.1).
    pub lambda: f64,
}

impl Default for SequentialMtpConfig {
    fn default() -> Self {
        SequentialMtpConfig { depth: 2, lambda: 0.3 }
    }
}

/// One sequential module.
#[derive(Module, Debug)]
pub struct SequentialModule<B: Backend> {
    norm_h: RmsNorm<B>,
    norm_e: RmsNorm<B>,
    /// M_k, `2d -> d`, no bias.
    proj: Linear<B>,
    block: Block<B>,
}

/// The D modules, in order.
#[derive(Module, Debug)]
pub struct SequentialHeads<B: Backend> {
    modules: Vec<SequentialModule<B>>,
}

/// Sequential multi-token prediction; see the module docs.
pub struct SequentialMtp {
    depth: usize,
    lambda: f64,
    model: GptConfig,
}

impl SequentialMtp {
    /// Checks the parameters.
    pub fn new(config: &SequentialMtpConfig, model: &GptConfig) -> Result<Self> {
        if config.depth == 0 {
            bail!("objective.depth must be at least 1 (depth 0 is kind = \"ntp\")");
        }
        Ok(SequentialMtp { depth: config.depth, lambda: config.lambda, model: model.clone() })
    }
}

impl<B: AutodiffBackend> Objective<B> for SequentialMtp {
    fn init_heads(&self, device: &B::Device) -> Option<Heads<B>> {
        let d = self.model.d_model;
        let modules = (0..self.depth)
            .map(|_| SequentialModule {
                norm_h: RmsNormConfig::new(d).init(device),
                norm_e: RmsNormConfig::new(d).init(device),
                proj: LinearConfig::new(2 * d, d)
                    .with_bias(false)
                    .with_initializer(Initializer::Normal { mean: 0.0, std: self.model.init_std })
                    .init(device),
                block: self.model.init_block(device),
            })
            .collect();
        Some(Heads::Sequential(SequentialHeads { modules }))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        let Heads::Sequential(h) = heads(model) else { unreachable!("mtp-sequential builds its modules") };
        let [b, t] = batch.inputs.dims();
        let out = model.gpt.forward(batch.inputs.clone());
        let ntp = masked_cross_entropy(out.logits, batch.targets.clone(), batch.target_mask.clone());
        let mut prev = out.layers.last().expect("at least one block").clone(); // h^0, [b, t, d]
        let mut extra = Vec::new();
        let mut parts = vec![("ntp".to_string(), ntp.clone())];
        for (i, m) in h.modules.iter().enumerate() {
            let k = i + 1;
            if k >= t {
                break;
            }
            let len = t - k;
            let d = prev.dims()[2];
            let emb = model.gpt.embed_tokens(batch.inputs.clone().slice([0..b, k..t])); // Emb(x_{i+k}), [b, len, d]
            let joined = kernels::cat_last(m.norm_h.forward(prev.slice([0..b, 0..len, 0..d])), m.norm_e.forward(emb));
            prev = m.block.forward(linear_rows(&m.proj, joined)); // h^k, [b, len, d]
            let loss = masked_cross_entropy(
                model.gpt.output(prev.clone()),
                batch.targets.clone().slice([0..b, k..t]), // x_{i+k+1}
                batch.target_mask.clone().slice([0..b, k..t]),
            );
            parts.push((format!("mtp{}", k + 1), loss.clone()));
            extra.push(loss);
        }
        let total = if extra.is_empty() {
            ntp
        } else {
            ntp + Tensor::cat(extra, 0).sum().mul_scalar(self.lambda / self.depth as f64)
        };
        LossOutput { total, parts, stats: vec![] }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn loss_matches_an_independent_computation() {
        let config = tiny();
        let obj = SequentialMtp::new(&SequentialMtpConfig { depth: 2, lambda: 0.3 }, &config).unwrap();
        let m = model(&obj, &config);
        let batch = batch();
        let out = obj.loss(&m, &batch, 0);
        let got: Vec<f64> = out.parts.iter().map(|(_, t)| scalar(t.clone()) as f64).collect();
        let rows = ROWS;
        let (t, v) = (6usize, 12usize);
        let Some(Heads::Sequential(h)) = &m.heads else { panic!() };
        // Recompute the chain one row at a time (no batching, no slicing of a batched tensor):
        // module k at position i reads h^{k-1}_i and Emb(tokens[i + k]) and predicts tokens[i + k + 1].
        for k in 1..=2usize {
            let mut picks_logits = vec![];
            let mut picks = vec![];
            for (tokens, prefix) in rows.iter() {
                let padded: Vec<i32> = (0..t).map(|j| tokens.get(j).copied().unwrap_or(0) as i32).collect();
                let x = Tensor::<B, 2, burn::tensor::Int>::from_data(
                    burn::tensor::TensorData::new(padded.clone(), [1, t]),
                    &Default::default(),
                );
                let mut prev = m.gpt.forward(x).layers.last().unwrap().clone();
                for (kk, module) in h.modules.iter().enumerate().take(k) {
                    let kk = kk + 1;
                    let len = t - kk;
                    let e = Tensor::<B, 2, burn::tensor::Int>::from_data(
                        burn::tensor::TensorData::new(padded[kk..].to_vec(), [1, len]),
                        &Default::default(),
                    );
                    let joined = Tensor::cat(
                        vec![
                            module.norm_h.forward(prev.slice([0..1, 0..len, 0..16])),
                            module.norm_e.forward(m.gpt.embed_tokens(e)),
                        ],
                        2,
                    );
                    prev = module.block.forward(module.proj.forward(joined));
                }
                let logits = m.gpt.output(prev).into_data().to_vec::<f32>().unwrap();
                for i in 0..t - k {
                    if i + k + 1 < tokens.len() && i + k + 1 >= *prefix {
                        picks.push((picks_logits.len() / v, tokens[i + k + 1] as usize));
                        picks_logits.extend_from_slice(&logits[i * v..(i + 1) * v]);
                    }
                }
            }
            let want = host_ce(&picks_logits, v, &picks);
            assert!((got[k] - want).abs() < 1e-4, "module {k}: {} vs {want}", got[k]);
        }
        let total = scalar(out.total) as f64;
        assert!((total - (got[0] + 0.3 / 2.0 * (got[1] + got[2]))).abs() < 1e-5);
    }

    #[test]
    fn every_parameter_learns() {
        let config = tiny();
        let obj = SequentialMtp::new(&SequentialMtpConfig::default(), &config).unwrap();
        let m = model(&obj, &config);
        let before = params(&m);
        let after = params(&step(&obj, m, &batch()));
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(moved, before.len());
    }
}
