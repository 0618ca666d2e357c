//! A right-to-left language model: the GPT reads each row's whole sequence reversed and
//! predicts the token before, -log Q(x_t | x_{>t}). It is the summariser of learned future
//! summary prediction (`fsp-summary`), trained by the ordinary trainer from a config and then
//! loaded by path, or trained jointly inside `fsp-summary`.

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use lab_core::Batch;

use super::{LabModel, LossOutput, Objective, full_tokens, masked_cross_entropy};

/// A batch's rows reversed, in next-token layout.
pub struct Reversed<B: Backend> {
    /// Reversed tokens `[b, t]`: position j holds x_{len-1-j} (padding stays at the end).
    pub inputs: Tensor<B, 2, Int>,
    /// The token each position predicts, x_{len-2-j}, `[b, t]`.
    pub targets: Tensor<B, 2, Int>,
    /// 1.0 where position j has a token to predict (j <= len - 2), `[b, t]`.
    pub mask: Tensor<B, 2>,
    /// Each row's length (prompt + target).
    pub lens: Vec<usize>,
}

/// Reverses every row of `batch` within its own length.
pub fn reverse_rows<B: Backend>(batch: &Batch<B>) -> Reversed<B> {
    let full = full_tokens(batch); // [b, t + 1]
    let [b, n] = full.dims();
    let t = n - 1;
    let lens = batch.lens();
    let device = full.device();
    let mut index = Vec::with_capacity(b * n);
    let mut mask = Vec::with_capacity(b * t);
    for &len in &lens {
        index.extend((0..n).map(|j| if j < len { (len - 1 - j) as i32 } else { j as i32 }));
        mask.extend((0..t).map(|j| (j + 1 < len) as u8 as f32));
    }
    let index = Tensor::<B, 2, Int>::from_data(TensorData::new(index, [b, n]), &device);
    let rev = full.gather(1, index);
    Reversed {
        inputs: rev.clone().slice([0..b, 0..t]),
        targets: rev.slice([0..b, 1..n]),
        mask: Tensor::from_data(TensorData::new(mask, [b, t]), &device),
        lens,
    }
}

/// How many reversed positions of `batch`'s rows a reader of the future's states needs when
/// nothing reads the reverse LM's own loss: the state of a future that starts after the prompt
/// (the MI objective's windows, `fsp-summary`'s targets) sits at reversed position
/// target_len - 2 or earlier, and the LM is causal, so later positions (the prompt, most of a
/// path-star row) need not be computed. At least 1, at most the batch's width.
pub fn future_depth<B: Backend>(batch: &Batch<B>) -> usize {
    let [_, t] = batch.inputs.dims();
    batch.target_lens.iter().max().map_or(1, |&q| q.saturating_sub(1)).clamp(1, t)
}

/// The right-to-left LM objective; see the module docs.
pub struct ReverseLm;

impl<B: AutodiffBackend> Objective<B> for ReverseLm {
    fn loss(&self, model: &LabModel<B>, batch: &Batch<B>, _step: u64) -> LossOutput<B> {
        let rev = reverse_rows(batch);
        let logits = model.gpt.forward(rev.inputs).logits;
        LossOutput::single("reverse_lm", masked_cross_entropy(logits, rev.targets, rev.mask))
    }

    fn decodes_forward(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn rows_reverse_within_their_length() {
        let r = reverse_rows(&batch());
        let ints = |t: Tensor<B, 2, Int>| t.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert_eq!(ints(r.inputs), vec![7, 6, 5, 4, 3, 2, 9, 8, 3, 1, 0, 0, 4, 11, 10, 1, 2, 2]);
        assert_eq!(ints(r.targets), vec![6, 5, 4, 3, 2, 1, 8, 3, 1, 0, 0, 0, 11, 10, 1, 2, 2, 2]);
        let m = r.mask.into_data().to_vec::<f32>().unwrap();
        assert_eq!(m, vec![1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0., 1., 1., 1., 1., 1., 1.]);
        assert_eq!(r.lens, [7, 4, 7]);
    }
}
