//! Examples into tensors: the next-token layout every objective and every evaluation shares.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use tasks::Example;

/// A batch in next-token layout: position `j` of `inputs` predicts position `j` of `targets`
/// (`targets[j] = tokens[j + 1]`). Rows are right-padded to the longest example; padding is
/// masked out of `target_mask`, and right padding never leaks into a causal model's earlier
/// positions.
#[derive(Debug, Clone)]
pub struct Batch<B: Backend> {
    /// Input tokens `[b, t]`, `t` = longest example - 1.
    pub inputs: Tensor<B, 2, Int>,
    /// Next tokens `[b, t]` (padding positions hold the pad token).
    pub targets: Tensor<B, 2, Int>,
    /// 1.0 where `targets` is a target token (the prompt is masked out of the loss), else 0.0,
    /// `[b, t]`.
    pub target_mask: Tensor<B, 2>,
    /// Prompt length of each row.
    pub prefix_lens: Vec<usize>,
    /// Target length of each row.
    pub target_lens: Vec<usize>,
}

impl<B: Backend> Batch<B> {
    /// Builds a batch; `pad` fills short rows (any token id: it is masked out).
    pub fn new(examples: &[&Example], pad: u32, device: &B::Device) -> Batch<B> {
        let b = examples.len();
        let t = examples.iter().map(|e| e.tokens.len()).max().unwrap_or(1).saturating_sub(1).max(1);
        let mut inputs = vec![pad as i32; b * t];
        let mut targets = vec![pad as i32; b * t];
        let mut mask = vec![0f32; b * t];
        for (r, ex) in examples.iter().enumerate() {
            let n = ex.tokens.len() - 1;
            for j in 0..n {
                inputs[r * t + j] = ex.tokens[j] as i32;
                targets[r * t + j] = ex.tokens[j + 1] as i32;
                // Target token i sits at tokens[prefix_len + i] and is predicted at j = prefix_len + i - 1.
                if j + 1 >= ex.prefix_len {
                    mask[r * t + j] = 1.0;
                }
            }
        }
        Batch {
            inputs: Tensor::from_data(TensorData::new(inputs, [b, t]), device),
            targets: Tensor::from_data(TensorData::new(targets, [b, t]), device),
            target_mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
            prefix_lens: examples.iter().map(|e| e.prefix_len).collect(),
            target_lens: examples.iter().map(|e| e.target().len()).collect(),
        }
    }

    /// The first position whose target any row's loss reads: the shortest prompt's last token
    /// (`target_mask` is zero before it in every row). A model can skip the rows before it
    /// where it can (`Gpt::forward_from`).
    pub fn first_target(&self) -> usize {
        let [_, t] = self.inputs.dims();
        self.prefix_lens.iter().min().map_or(0, |&p| p.saturating_sub(1)).min(t - 1)
    }

    /// Each row's whole length, prompt plus target (its tokens are `inputs[..len - 1]` plus the
    /// last target).
    pub fn lens(&self) -> Vec<usize> {
        self.prefix_lens.iter().zip(&self.target_lens).map(|(p, q)| p + q).collect()
    }

    /// The same batch with every input at a target position replaced by `dummy`, as
    /// teacherless training and decoding do (NTF's `$`): the model must produce all target
    /// tokens from the prompt alone.
    pub fn teacherless(&self, dummy: u32) -> Tensor<B, 2, Int> {
        let [b, t] = self.inputs.dims();
        let device = self.inputs.device();
        let mut keep = vec![true; b * t];
        for (r, &p) in self.prefix_lens.iter().enumerate() {
            for j in p..t {
                keep[r * t + j] = false;
            }
        }
        let keep = Tensor::<B, 2, burn::tensor::Bool>::from_data(TensorData::new(keep, [b, t]), &device);
        self.inputs.clone().mask_fill(keep.bool_not(), dummy as i32)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;

    use super::*;

    #[test]
    fn layout_masks_and_teacherless_inputs() {
        let a = Example::new(&[7, 8, 9], &[1, 2]);
        let b = Example::new(&[7, 9], &[3]);
        let batch = Batch::<Flex>::new(&[&a, &b], 0, &FlexDevice);
        let ints = |t: Tensor<Flex, 2, Int>| t.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert_eq!(ints(batch.inputs.clone()), vec![7, 8, 9, 1, 7, 9, 0, 0]);
        assert_eq!(ints(batch.targets.clone()), vec![8, 9, 1, 2, 9, 3, 0, 0]);
        let mask = batch.target_mask.clone().into_data().to_vec::<f32>().unwrap();
        assert_eq!(mask, vec![0., 0., 1., 1., 0., 1., 0., 0.]);
        // Position 1 is the first any row's loss reads (the second row's first target).
        assert_eq!(batch.first_target(), 1);
        // `$` = 5 replaces inputs from the first target token on.
        assert_eq!(ints(batch.teacherless(5)), vec![7, 8, 9, 5, 7, 9, 5, 5]);
    }
}
