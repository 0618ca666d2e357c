//! Multi-token prediction with independent heads (Gloeckle et al. 2024, arXiv 2404.19737).
//!
//! A shared trunk feeds n heads, each one transformer block, through a shared final norm and
//! unembedding; head i predicts x_{t+i}. Here the trunk is the GPT up to its second-to-last
//! block and head 1 is the GPT's own last block, exactly Gloeckle's layout, so the model that
//! evaluation decodes with is the next-token path and the n - 1 extra blocks are dropped after
//! training. Loss = Σ_i w_i · CE_i (Gloeckle: all w_i = 1).

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use lab_core::Batch;
use models::{Block, GptConfig};
use serde::{Deserialize, Serialize};

use super::{Heads, LabModel, LossOutput, Objective, heads, masked_cross_entropy, masked_cross_entropy_from};

/// `[objective] kind = "mtp"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MtpConfig {
    /// Tokens predicted at each position, the next one included (Gloeckle's n): n - 1 extra
    /// heads. At least 2.
    pub n: usize,
    /// Loss weight of each head, the next-token head first; empty means 1 for every head.
    pub weights: Vec<f64>,
}

impl Default for MtpConfig {
    fn default() -> Self {
        MtpConfig { n: 4, weights: Vec::new() }
    }
}

/// The extra heads: block `i` predicts the token `i + 2` ahead.
#[derive(Module, Debug)]
pub struct MtpHeads<B: Backend> {
    blocks: Vec<Block<B>>,
}

/// Independent multi-token prediction; see the module docs.
pub struct Mtp {
    weights: Vec<f64>,
    model: GptConfig,
}

impl Mtp {
    /// Checks the parameters against the model.
    pub fn new(config: &MtpConfig, model: &GptConfig) -> Result<Self> {
        if config.n < 2 {
            bail!("objective.n = {} predicts only the next token; use kind = \"ntp\" for that", config.n);
        }
        if model.n_layers < 2 {
            bail!("kind = \"mtp\" branches its heads off the second-to-last block: it needs n_layers >= 2");
        }
        let weights = if config.weights.is_empty() { vec![1.0; config.n] } else { config.weights.clone() };
        if weights.len() != config.n {
            bail!("objective.weights has {} entries but objective.n = {}", weights.len(), config.n);
        }
        Ok(Mtp { weights, model: model.clone() })
    }
}

impl<B: AutodiffBackend> Objective<B> for Mtp {
    fn init_heads(&self, device: &B::Device) -> Option<Heads<B>> {
        let blocks = (1..self.weights.len()).map(|_| self.model.init_block(device)).collect();
        Some(Heads::Mtp(MtpHeads { blocks }))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        let Heads::Mtp(h) = heads(model) else { unreachable!("mtp builds mtp heads") };
        let [b, t] = batch.inputs.dims();
        // Every head's loss reads the positions whose k-th next token is a target: from the
        // first target on for the next-token path, k - 1 earlier for head k. Each head's block
        // (the GPT's last block included) computes only those rows beyond its keys and values.
        let from = batch.first_target();
        let out = model.gpt.forward_from(batch.inputs.clone(), from);
        let ntp = masked_cross_entropy_from(out.logits, out.from, batch);
        let trunk = out.trunk.last().expect("mtp checks n_layers >= 2").clone(); // [b, t, d]
        let mut total = ntp.clone().mul_scalar(self.weights[0]);
        let mut parts = vec![("ntp".to_string(), ntp)];
        for (i, block) in h.blocks.iter().enumerate() {
            // Head k predicts x_{j+k} = targets[j + k - 1] from position j.
            let k = i + 2;
            if k > t {
                break;
            }
            // Positions j in from_k..t + 1 - k, never empty since from <= t - 1.
            let from_k = from.saturating_sub(k - 1);
            let logits = model.gpt.output(block.forward_from(trunk.clone(), from_k)); // [b, t - from_k, v]
            let v = logits.dims()[2];
            let loss = masked_cross_entropy(
                logits.slice([0..b, 0..t + 1 - k - from_k, 0..v]),
                batch.targets.clone().slice([0..b, from_k + k - 1..t]),
                batch.target_mask.clone().slice([0..b, from_k + k - 1..t]),
            );
            total = total + loss.clone().mul_scalar(self.weights[k - 1]);
            parts.push((format!("mtp{k}"), loss));
        }
        LossOutput { total, parts, stats: vec![] }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use tasks::Example;

    use super::super::test_util::*;
    use super::*;
    use crate::objective::Ntp;

    #[test]
    fn loss_matches_an_independent_computation() {
        let config = tiny();
        let obj = Mtp::new(&MtpConfig { n: 3, weights: vec![1.0, 0.5, 0.25] }, &config).unwrap();
        let m = model(&obj, &config);
        // test_util's rows (the first target at position 1), and the same tokens with longer
        // prompts (the first target at position 3), where every head's block skips positions.
        let longer: [(&[u32], usize); 3] = [(ROWS[0].0, 5), (ROWS[1].0, 3), (ROWS[2].0, 4)];
        for rows in [ROWS, longer] {
            let examples: Vec<Example> = rows.iter().map(|(t, p)| Example::new(&t[..*p], &t[*p..])).collect();
            let batch = Batch::<B>::new(&examples.iter().collect::<Vec<_>>(), 0, &FlexDevice);
            let out = obj.loss(&m, &batch, 0);
            let got: Vec<f32> = out.parts.iter().map(|(_, t)| scalar(t.clone())).collect();
            assert_eq!(out.parts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["ntp", "mtp2", "mtp3"]);

            // Position j of head k predicts tokens[j + k] when that token is a target token.
            let (t, v) = (6, 12);
            let o = m.gpt.forward(batch.inputs.clone());
            let Some(Heads::Mtp(h)) = &m.heads else { panic!() };
            for k in 1..=3 {
                let logits =
                    if k == 1 { o.logits.clone() } else { m.gpt.output(h.blocks[k - 2].forward(o.layers[0].clone())) };
                let flat = logits.into_data().to_vec::<f32>().unwrap();
                let mut picks = vec![];
                for (r, (tokens, prefix)) in rows.iter().enumerate() {
                    for j in 0..t {
                        if j + k < tokens.len() && j + k >= *prefix {
                            picks.push((r * t + j, tokens[j + k] as usize));
                        }
                    }
                }
                let want = host_ce(&flat, v, &picks);
                assert!((got[k - 1] as f64 - want).abs() < 1e-5, "head {k}: {} vs {want}", got[k - 1]);
            }
            let total = scalar(out.total) as f64;
            let want = got[0] as f64 + 0.5 * got[1] as f64 + 0.25 * got[2] as f64;
            assert!((total - want).abs() < 1e-5);
        }
    }

    #[test]
    fn heads_learn_and_the_next_token_path_is_ntp() {
        let config = tiny();
        let obj = Mtp::new(&MtpConfig { n: 3, weights: vec![] }, &config).unwrap();
        let m = model(&obj, &config);
        let before = params(&m);
        let after = params(&step(&obj, m, &batch()));
        // Every parameter tensor moves: trunk, last block (via head 1), both extra heads.
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert_eq!(moved, before.len(), "{moved} of {} parameter tensors changed", before.len());
        // The first part is exactly the NTP loss of the same GPT.
        let m = model(&obj, &config);
        let ntp = scalar(Ntp.loss(&m, &batch(), 0).total);
        assert_eq!(scalar(obj.loss(&m, &batch(), 0).parts[0].1.clone()), ntp);
    }

    #[test]
    fn bad_parameters_are_errors() {
        let config = tiny();
        assert!(Mtp::new(&MtpConfig { n: 1, weights: vec![] }, &config).is_err());
        assert!(Mtp::new(&MtpConfig { n: 3, weights: vec![1.0] }, &config).is_err());
        assert!(Mtp::new(&MtpConfig::default(), &config.clone().with_n_layers(1)).is_err());
    }
}
