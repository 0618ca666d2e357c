//! The future encoder of the MI-shaped objective (docs/method.md, §9.3.2, scheme B): the summary of
//! the future at position t is a pooling of the forward LM's own hidden states over the next L
//! positions, F_t = Pooler(h_{t+1}, ..., h_{t+L}), clipped at the end of each row, then
//! projected to the summary width. Two poolers: the mean, and an attention pooler whose query
//! comes from the prefix state h_t.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use models::linear_rows;
use serde::{Deserialize, Serialize};

/// How the future's hidden states are pooled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolerKind {
    /// The mean of h_{t+1..t+L}.
    #[default]
    Mean,
    /// Attention over h_{t+1..t+L} with a query from h_t.
    Attention,
}

/// The positions each summary reads: `window[r][t][j] = 1` if `t + 1 <= j <= t + L` and input
/// position j exists in row r (j <= len_r - 2: the inputs hold tokens 0..len_r - 2).
pub fn future_window(lens: &[usize], t: usize, horizon: usize) -> Vec<f32> {
    let mut w = vec![0f32; lens.len() * t * t];
    for (r, &len) in lens.iter().enumerate() {
        let last_input = len.saturating_sub(2);
        for i in 0..t {
            for j in i + 1..=(i + horizon).min(last_input).min(t.saturating_sub(1)) {
                w[(r * t + i) * t + j] = 1.0;
            }
        }
    }
    w
}

/// The pooler and the projection to the summary width.
#[derive(Module, Debug)]
pub struct FutureEncoder<B: Backend> {
    /// Attention pooler's query (from h_t), key and value maps; absent for the mean pooler.
    attention: Option<(Linear<B>, Linear<B>, Linear<B>)>,
    /// `d -> summary_dim`.
    proj: Linear<B>,
}

impl<B: Backend> FutureEncoder<B> {
    /// An encoder over `d`-wide hidden states giving `summary_dim`-wide summaries.
    pub fn new(kind: PoolerKind, d: usize, summary_dim: usize, init_std: f64, device: &B::Device) -> Self {
        let lin = |i: usize, o: usize| {
            LinearConfig::new(i, o).with_initializer(Initializer::Normal { mean: 0.0, std: init_std }).init(device)
        };
        FutureEncoder {
            attention: (kind == PoolerKind::Attention).then(|| (lin(d, d), lin(d, d), lin(d, d))),
            proj: lin(d, summary_dim),
        }
    }

    /// Summaries `[b, t, s]` of the future hidden states `future` `[b, t, d]`, for queries
    /// `prefix` `[b, t, d]` (read by the attention pooler), over `window` (see
    /// [`future_window`]). Rows whose window is empty get an arbitrary finite summary; callers
    /// mask them out.
    pub fn forward(&self, prefix: Tensor<B, 3>, future: Tensor<B, 3>, window: &[f32]) -> Tensor<B, 3> {
        let [b, t, d] = future.dims();
        let device = future.device();
        let w = Tensor::<B, 3>::from_data(TensorData::new(window.to_vec(), [b, t, t]), &device);
        let pooled = match &self.attention {
            None => {
                let count = w.clone().sum_dim(2).clamp_min(1.0); // [b, t, 1]
                w.matmul(future) / count
            }
            Some((q, k, v)) => {
                let scores =
                    linear_rows(q, prefix).matmul(linear_rows(k, future.clone()).swap_dims(1, 2)) / (d as f64).sqrt();
                // Outside the window: -1e9, not -inf, so that an empty window stays finite.
                let scores = scores + (w.neg() + 1.0) * -1e9; // [b, t, t]
                softmax(scores, 2).matmul(linear_rows(v, future))
            }
        };
        linear_rows(&self.proj, pooled)
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::backend::flex::FlexDevice;

    use super::*;

    /// An encoder drawn under the process-wide seed lock: burn's generator is global, and a
    /// draw outside the lock would interleave with other tests' seeded draws.
    fn encoder(kind: PoolerKind, d: usize, s: usize, std: f64) -> FutureEncoder<Flex> {
        models::seeded::<Flex, _>(7, &FlexDevice, || {
            let e = FutureEncoder::new(kind, d, s, std, &FlexDevice);
            let _ = e.num_params();
            e
        })
    }

    /// Deterministic stand-in hidden states, `[1, t, d]`.
    fn states(t: usize, d: usize) -> Tensor<Flex, 3> {
        let v: Vec<f32> = (0..t * d).map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0).collect();
        Tensor::from_data(TensorData::new(v, [1, t, d]), &FlexDevice)
    }

    #[test]
    fn windows_are_clipped_at_each_rows_end() {
        // Two rows of lengths 6 and 4 (inputs 0..=4 and 0..=2), t = 5, horizon 2.
        let w = future_window(&[6, 4], 5, 2);
        let row = |r: usize, i: usize| -> Vec<usize> { (0..5).filter(|&j| w[(r * 5 + i) * 5 + j] > 0.0).collect() };
        assert_eq!(row(0, 0), [1, 2]);
        assert_eq!(row(0, 3), [4]);
        assert!(row(0, 4).is_empty());
        assert_eq!(row(1, 1), [2]);
        assert!(row(1, 2).is_empty());
    }

    #[test]
    fn the_mean_pooler_averages_the_window() {
        let d = FlexDevice;
        let enc = encoder(PoolerKind::Mean, 2, 2, 0.1);
        // Hidden state j = (j, 10 j); position 0 with horizon 2 averages j = 1, 2: (1.5, 15).
        let h: Vec<f32> = (0..4).flat_map(|j| [j as f32, 10.0 * j as f32]).collect();
        let h = Tensor::<Flex, 3>::from_data(TensorData::new(h, [1, 4, 2]), &d);
        let w = future_window(&[5], 4, 2);
        let got = enc.forward(h.clone(), h, &w).slice([0..1, 0..1, 0..2]);
        let want = enc.proj.forward(Tensor::<Flex, 3>::from_data(TensorData::new(vec![1.5f32, 15.0], [1, 1, 2]), &d));
        got.into_data().assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::default());
    }

    #[test]
    fn the_attention_pooler_reads_only_its_window() {
        let enc = encoder(PoolerKind::Attention, 4, 3, 0.5);
        let h = states(6, 4);
        let w = future_window(&[7], 6, 2);
        let a = enc.forward(h.clone(), h.clone(), &w).slice([0..1, 0..3, 0..3]);
        // Changing hidden state 5 (outside the windows of positions 0..=2) changes nothing there.
        let other =
            Tensor::cat(vec![h.clone().slice([0..1, 0..5, 0..4]), h.clone().slice([0..1, 0..1, 0..4]) * 7.0], 1);
        let b = enc.forward(other.clone(), other, &w).slice([0..1, 0..3, 0..3]);
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), burn::tensor::Tolerance::default());
    }
}
