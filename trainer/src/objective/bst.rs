//! The Belief State Transformer (Hu et al., ICLR 2025), as microsoft/BST's `model_bst.py` trains
//! it on star graphs.
//!
//! A forward encoder (the lab's GPT; f_t its final hidden state after reading x_0..x_t) and a
//! backward encoder (a second GPT of the same shape that reads the sequence right to left after
//! an end marker, so its state b_j has read x_j..x_{L-1}; b_L, the end marker alone, is the empty
//! suffix) feed a text head on [f_t; b_{t+k}] that predicts the next token x_{t+1} and the
//! previous token x_{t+k-1} ([`models::BeliefHead`]). The pairs are the official star-graph
//! pairs: every t from the prompt's last position on and every gap k ≥ `min_gap` with t + k ≤ L
//! (G(2,5,50): 15 pairs a sequence), all trained. Loss: the mean over pairs of
//! (CE_next + CE_prev) / 2 (the official mean per sequence, then over sequences, is the same when
//! every row has the same pairs, as path-star rows do).
//!
//! The GPT's own head is never trained: evaluation decodes with the text head's next-token half
//! and the empty suffix (`Objective::decoder`), as the official `generate` does.
//!
//! Differences from the official code, each a simplification the lab's GPT imposes: learned
//! absolute positions instead of RoPE (the backward encoder's positions count from the end
//! marker, as the official flipped RoPE positions do), LayerNorm instead of RMSNorm in the
//! encoders, and separate token embeddings for the two encoders (the official ones share it).
//! The end marker is the vocabulary's `$`, which no path-star training sequence contains.

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;
use models::{BeliefDecoder, BeliefHead, BeliefHeadConfig, Decoder, DecoderKind, Gpt, GptConfig};
use serde::{Deserialize, Serialize};

use super::{BuildContext, Heads, LabModel, LossOutput, Objective, heads, host_rows, masked_cross_entropy};

/// `[objective] kind = "bst"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BstConfig {
    /// Smallest gap k between the prefix's last position t and the suffix's first position
    /// t + k (the official star-graph config: 2, so both predicted tokens lie between them).
    pub min_gap: usize,
}

impl Default for BstConfig {
    fn default() -> Self {
        BstConfig { min_gap: 2 }
    }
}

/// The backward encoder and the text head.
#[derive(Module, Debug)]
pub struct BstHeads<B: Backend> {
    backward: Gpt<B>,
    head: BeliefHead<B>,
}

/// The belief-state objective; see the module documentation.
pub struct Bst {
    min_gap: usize,
    model: GptConfig,
    /// The end marker the backward encoder reads first.
    end: u32,
}

impl Bst {
    /// Checks the parameters.
    pub fn new<B: Backend>(config: &BstConfig, cx: &BuildContext<'_, B>) -> Result<Self> {
        if config.min_gap == 0 {
            bail!("objective.min_gap must be at least 1 (the suffix starts after the prefix)");
        }
        Ok(Bst { min_gap: config.min_gap, model: cx.model.clone(), end: cx.task.vocab().dummy() })
    }

    /// The backward encoder's shape: the GPT's, with room for a whole sequence and the marker.
    fn backward_config(&self) -> GptConfig {
        GptConfig { max_seq_len: self.model.max_seq_len + 2, ..self.model.clone() }
    }

    /// The (t, j = t + k) pairs of a row of `len` tokens whose prompt has `prefix` tokens.
    pub fn pairs(&self, prefix: usize, len: usize) -> Vec<(usize, usize)> {
        let first = prefix.saturating_sub(1);
        (first..len.saturating_sub(1)).flat_map(|t| (t + self.min_gap..=len).map(move |j| (t, j))).collect()
    }
}

impl<B: AutodiffBackend> Objective<B> for Bst {
    fn init_heads(&self, device: &B::Device) -> Option<Heads<B>> {
        Some(Heads::Bst(BstHeads {
            backward: self.backward_config().init(device),
            head: BeliefHeadConfig::new(self.model.d_model, self.model.vocab_size)
                .with_init_std(self.model.init_std)
                .init(device),
        }))
    }

    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        let Heads::Bst(h) = heads(model) else { unreachable!("bst builds its encoder and head") };
        let device = batch.inputs.device();
        let [b, t] = batch.inputs.dims();
        let rows = host_rows(batch);
        let pairs: Vec<Vec<(usize, usize)>> =
            rows.iter().enumerate().map(|(r, row)| self.pairs(batch.prefix_lens[r], row.len())).collect();

        // The backward encoder reads [end, x_{L-1}, ..., x_0], padded on the right: its causal
        // state at reversed position p has read the suffix x_{L-p..}, so b_j sits at p = L - j.
        // Being causal, its states up to the deepest p a pair reads depend on those positions
        // alone, so it reads no further: the suffixes are short (G(2,4,10): 4 of 26 positions,
        // G(2,5,50): 5 of 33) and the rest of the reversed prompt would be computed only to be
        // thrown away. The states it keeps are the same values as over the whole row.
        let deepest = rows.iter().zip(&pairs).flat_map(|(row, p)| p.iter().map(|&(_, j)| row.len() - j)).max();
        let width = deepest.map_or(1, |p| p + 1);
        let mut reversed = vec![self.end as i32; b * width];
        for (r, row) in rows.iter().enumerate() {
            for (p, &x) in row.iter().rev().take(width - 1).enumerate() {
                reversed[r * width + 1 + p] = x as i32;
            }
        }
        let reversed = Tensor::<B, 2, Int>::from_data(TensorData::new(reversed, [b, width]), &device);
        let back = h.backward.forward(reversed).hidden; // [b, width, d]
        // The pairs' prefixes start at the prompt's last token, so the forward encoder's last
        // block skips the positions before it.
        let from = batch.first_target();
        let fwd = model.gpt.forward_from(batch.inputs.clone(), from).hidden; // [b, t - from, d]
        let (d, tf) = (fwd.dims()[2], t - from);

        let (mut fi, mut bi, mut next, mut prev) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (r, (row, pairs)) in rows.iter().zip(&pairs).enumerate() {
            let len = row.len();
            for &(tt, j) in pairs {
                fi.push((r * tf + tt - from) as i32);
                bi.push((r * width + len - j) as i32);
                next.push(row[tt + 1] as i32);
                prev.push(row[j - 1] as i32);
            }
        }
        let n = fi.len();
        let index = |v: Vec<i32>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), &device);
        let f = fwd.reshape([b * tf, d]).select(0, index(fi)).reshape([1, n, d]);
        let bb = back.reshape([b * width, d]).select(0, index(bi)).reshape([1, n, d]);
        let (next_logits, prev_logits) = h.head.forward(f, bb);
        let ones = Tensor::<B, 2>::ones([1, n], &device);
        let target = |v: Vec<i32>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, n]), &device);
        let ce_next = masked_cross_entropy(next_logits, target(next), ones.clone());
        let ce_prev = masked_cross_entropy(prev_logits, target(prev), ones);
        let total = (ce_next.clone() + ce_prev.clone()).div_scalar(2.0);
        LossOutput {
            total,
            parts: vec![("next".to_string(), ce_next), ("prev".to_string(), ce_prev)],
            stats: vec![("pairs".to_string(), Tensor::from_data(TensorData::new(vec![n as f32], [1]), &device))],
        }
    }

    fn decoder(&self, model: &LabModel<B>) -> Decoder<B> {
        let Heads::Bst(h) = heads(model) else { unreachable!("bst builds its encoder and head") };
        let device = model.gpt.devices().into_iter().next().expect("a model lives on a device");
        let end = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![self.end as i32], [1, 1]), &device);
        let d = self.model.d_model;
        let empty = h.backward.forward(end).hidden.reshape([d]).detach();
        Decoder::BeliefState(model.gpt.clone(), BeliefDecoder::new(h.head.clone(), empty))
    }

    fn decoder_kind(&self) -> DecoderKind {
        DecoderKind::BeliefState
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::module::AutodiffModule;

    use super::super::test_util::*;
    use super::*;

    fn bst() -> Bst {
        Bst { min_gap: 2, model: tiny(), end: 11 }
    }

    #[test]
    fn pairs_are_the_official_star_graph_pairs() {
        // G(2,5,50): a 27-token prompt and a 5-token path, 15 pairs.
        let p = bst().pairs(27, 32);
        assert_eq!(p.len(), 15);
        assert_eq!(p[0], (26, 28));
        assert!(p.iter().all(|&(t, j)| t >= 26 && j >= t + 2 && j <= 32));
        // Every position from the prompt's last to the second-to-last is paired with the empty
        // suffix (j = 32): the decoder's next-token half is trained where it decodes.
        let empty: Vec<usize> = p.iter().filter(|&&(_, j)| j == 32).map(|&(t, _)| t).collect();
        assert_eq!(empty, vec![26, 27, 28, 29, 30]);
    }

    #[test]
    fn the_loss_is_the_text_heads_cross_entropy_over_the_pairs() {
        let obj = bst();
        let m = model(&obj, &tiny());
        let batch = batch();
        let out = Objective::<B>::loss(&obj, &m, &batch, 0);
        let get = |name: &str| scalar(out.parts.iter().find(|(n, _)| n == name).unwrap().1.clone());
        let total = scalar(out.total.clone());
        assert!((total - (get("next") + get("prev")) / 2.0).abs() < 1e-5);
        // By hand for row 0 (tokens 1..7, prompt 3): pairs (2, 4..=7), (3, 5..=7), (4, 6..=7), (5, 7).
        let Heads::Bst(h) = m.heads.as_ref().unwrap() else { panic!() };
        let rows = [(&[1u32, 2, 3, 4, 5, 6, 7][..], 3usize), (&[1, 3, 8, 9], 2), (&[2, 2, 2, 1, 10, 11, 4], 4)];
        let mut picks_next = Vec::new();
        let mut picks_prev = Vec::new();
        let mut logits_next = Vec::new();
        let mut logits_prev = Vec::new();
        for (tokens, prefix) in rows {
            let len = tokens.len();
            let ids =
                |v: Vec<i32>| Tensor::<B, 2, Int>::from_data(TensorData::new(v.clone(), [1, v.len()]), &FlexDevice);
            let f = m.gpt.forward(ids(tokens[..len - 1].iter().map(|&x| x as i32).collect())).hidden;
            let mut rev = vec![11];
            rev.extend(tokens.iter().rev().map(|&x| x as i32));
            let back = h.backward.forward(ids(rev)).hidden;
            for (t, j) in obj.pairs(prefix, len) {
                let ft = f.clone().slice([0..1, t..t + 1]);
                let bj = back.clone().slice([0..1, len - j..len - j + 1]);
                let (a, bq) = h.head.forward(ft, bj);
                logits_next.extend(a.into_data().to_vec::<f32>().unwrap());
                logits_prev.extend(bq.into_data().to_vec::<f32>().unwrap());
                picks_next.push((picks_next.len(), tokens[t + 1] as usize));
                picks_prev.push((picks_prev.len(), tokens[j - 1] as usize));
            }
        }
        let want_next = host_ce(&logits_next, 12, &picks_next);
        let want_prev = host_ce(&logits_prev, 12, &picks_prev);
        assert!((get("next") as f64 - want_next).abs() < 1e-4, "{} vs {want_next}", get("next"));
        assert!((get("prev") as f64 - want_prev).abs() < 1e-4, "{} vs {want_prev}", get("prev"));
    }

    #[test]
    fn training_moves_both_encoders_and_the_decoder_uses_the_text_head() {
        let obj = bst();
        let m = model(&obj, &tiny());
        let before = params(&m);
        let after = params(&step(&obj, m, &batch()));
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        // Every parameter upstream of f or b moves (the final LayerNorms included: f and b are
        // read after them); only an untied unembedding of either GPT would not.
        assert!(moved + 2 >= before.len(), "{moved} of {} parameter tensors moved", before.len());

        let m = model(&obj, &tiny());
        let decoder = Objective::<B>::decoder(&obj, &m).valid();
        assert_eq!(decoder.kind(), DecoderKind::BeliefState);
        let tokens = Tensor::from_data(TensorData::new(vec![1i32, 2, 3, 4], [1, 4]), &FlexDevice);
        let gpt_logits = m.gpt.valid().forward(tokens.clone()).logits;
        let logits = decoder.logits(tokens);
        assert_eq!(logits.dims(), [1, 4, 12]);
        assert_ne!(logits.into_data(), gpt_logits.into_data(), "the text head decodes, not the GPT's head");
    }
}
