//! The Belief State Transformer's text head, and the decoders evaluation can run.
//!
//! BST (Hu et al., ICLR 2025; microsoft/BST `model_bst.py`) reads a prefix with a forward encoder
//! (here the lab's GPT: f_t, its final hidden state at t) and a suffix with a backward encoder
//! (b_j, the state of x_{j..} read right to left from an end marker), and its text head predicts
//! from [f_t; b_{t+k}] both the token after the prefix, x_{t+1}, and the token before the suffix,
//! x_{t+k-1}. As in the official code: x = [f; b] (2d), x + SwiGLU(x) with a hidden width of
//! 8·2d/3 rounded to 128, RMSNorm, the 2d vector split in halves, and one untied unembedding
//! (d → V, no bias) applied to each half.
//!
//! Decoding uses the next-token half with the empty suffix: b_∅ is the backward encoder's state
//! of the end marker alone, the same vector for every prompt, so the decoder is the forward GPT
//! plus this head and one stored vector ([`BeliefDecoder`]). [`Decoder`] is what evaluation
//! decodes with: the GPT's own head for every objective but BST, whose GPT head is never trained.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::gpt::{Gpt, KvCache, linear_rows};

/// The text head's shape.
#[derive(Config, Debug)]
pub struct BeliefHeadConfig {
    /// Width of each encoder's hidden state (the head reads 2d).
    pub d_model: usize,
    /// Vocabulary size of both outputs.
    pub vocab_size: usize,
    /// Initial weights' standard deviation.
    #[config(default = 0.02)]
    pub init_std: f64,
}

impl BeliefHeadConfig {
    /// The SwiGLU's hidden width: 8·2d/3 rounded to a multiple of 128, as the official code.
    pub fn hidden(&self) -> usize {
        let raw = 8.0 * (2 * self.d_model) as f64 / 3.0;
        ((raw / 128.0).round() as usize).max(1) * 128
    }

    /// A freshly initialised head.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BeliefHead<B> {
        let (d2, h) = (2 * self.d_model, self.hidden());
        let init = Initializer::Normal { mean: 0.0, std: self.init_std };
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).with_initializer(init.clone()).init(device);
        BeliefHead {
            gate: linear(d2, h),
            up: linear(d2, h),
            down: linear(h, d2),
            norm: RmsNormConfig::new(d2).init(device),
            lm_head: linear(self.d_model, self.vocab_size),
        }
    }
}

/// The text head; see the module documentation.
#[derive(Module, Debug)]
pub struct BeliefHead<B: Backend> {
    gate: Linear<B>,
    up: Linear<B>,
    down: Linear<B>,
    norm: RmsNorm<B>,
    lm_head: Linear<B>,
}

impl<B: Backend> BeliefHead<B> {
    /// Logits of the next token x_{t+1} and of the previous token x_{t+k-1}, each `[b, n, v]`,
    /// from forward states `f` and backward states `b`, each `[b, n, d]`.
    pub fn forward(&self, f: Tensor<B, 3>, b: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let x = self.mix(f, b);
        let [rows, n, d2] = x.dims();
        let d = d2 / 2;
        let next = x.clone().slice([0..rows, 0..n, 0..d]);
        let prev = x.slice([0..rows, 0..n, d..d2]);
        (linear_rows(&self.lm_head, next), linear_rows(&self.lm_head, prev))
    }

    /// The next-token logits alone, `[b, n, v]`.
    pub fn next(&self, f: Tensor<B, 3>, b: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.mix(f, b);
        let [rows, n, d2] = x.dims();
        linear_rows(&self.lm_head, x.slice([0..rows, 0..n, 0..d2 / 2]))
    }

    /// [f; b] + SwiGLU([f; b]), RMS-normalised, `[b, n, 2d]`.
    fn mix(&self, f: Tensor<B, 3>, b: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = kernels::cat_last(f, b);
        let hidden = kernels::swiglu(linear_rows(&self.gate, x.clone()), linear_rows(&self.up, x.clone()));
        kernels::rms_norm(x + linear_rows(&self.down, hidden), self.norm.gamma.val(), self.norm.epsilon)
    }
}

/// What decodes a BST run: the text head and the empty suffix's backward state b_∅.
#[derive(Module, Debug)]
pub struct BeliefDecoder<B: Backend> {
    head: BeliefHead<B>,
    /// b_∅, `[d]`.
    empty: Param<Tensor<B, 1>>,
}

impl<B: Backend> BeliefDecoder<B> {
    /// The decoder of a head and the backward encoder's state of the empty suffix `[d]`.
    pub fn new(head: BeliefHead<B>, empty: Tensor<B, 1>) -> Self {
        BeliefDecoder { head, empty: Param::from_tensor(empty) }
    }

    /// Next-token logits `[b, t, v]` from forward hidden states `[b, t, d]` and the empty suffix.
    pub fn next_logits(&self, f: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = f.dims();
        let empty = self.empty.val().reshape([1, 1, d]).expand([b, t, d]);
        self.head.next(f, empty)
    }
}

/// Which decoder scored a run, as sidecars and `eval.json` name it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecoderKind {
    /// The GPT's own next-token head.
    #[default]
    Gpt,
    /// BST's text head, next-token half, empty suffix.
    BeliefState,
}

impl DecoderKind {
    /// The name in files and tables.
    pub fn name(self) -> &'static str {
        match self {
            DecoderKind::Gpt => "gpt",
            DecoderKind::BeliefState => "belief-state",
        }
    }
}

/// What evaluation decodes with: one forward pass, cached or not, giving next-token logits.
#[derive(Debug, Clone)]
#[expect(clippy::large_enum_variant, reason = "one decoder per evaluation: its size never matters")]
pub enum Decoder<B: Backend> {
    /// The GPT's own head.
    Gpt(Gpt<B>),
    /// The GPT's hidden states through BST's text head.
    BeliefState(Gpt<B>, BeliefDecoder<B>),
}

impl<B: Backend> Decoder<B> {
    /// Which decoder this is.
    pub fn kind(&self) -> DecoderKind {
        match self {
            Decoder::Gpt(_) => DecoderKind::Gpt,
            Decoder::BeliefState(..) => DecoderKind::BeliefState,
        }
    }

    /// The forward model.
    pub fn gpt(&self) -> &Gpt<B> {
        match self {
            Decoder::Gpt(g) | Decoder::BeliefState(g, _) => g,
        }
    }

    /// Next-token logits over a whole sequence, `[b, t]` -> `[b, t, v]`.
    pub fn logits(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        match self {
            Decoder::Gpt(g) => g.forward(tokens).logits,
            Decoder::BeliefState(g, d) => d.next_logits(g.forward(tokens).hidden),
        }
    }

    /// An empty cache for [`Decoder::logits_cached`].
    pub fn new_cache(&self) -> KvCache<B> {
        self.gpt().new_cache()
    }

    /// Next-token logits of new positions, continuing what `cache` holds (as
    /// [`Gpt::forward_cached`]).
    pub fn logits_cached(&self, tokens: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        match self {
            Decoder::Gpt(g) => g.forward_cached(tokens, cache),
            Decoder::BeliefState(g, d) => d.next_logits(g.forward_cached_hidden(tokens, cache)),
        }
    }

    /// The longest sequence the decoder accepts: `None` with rotary or no positions.
    pub fn position_limit(&self) -> Option<usize> {
        self.gpt().position_limit()
    }

    /// The device the decoder lives on.
    pub fn device(&self) -> B::Device {
        self.gpt().devices().into_iter().next().expect("a model lives on a device")
    }
}

impl<B: AutodiffBackend> Decoder<B> {
    /// The same decoder without autodiff, for evaluation during training.
    pub fn valid(&self) -> Decoder<B::InnerBackend> {
        use burn::module::AutodiffModule;
        match self {
            Decoder::Gpt(g) => Decoder::Gpt(g.valid()),
            Decoder::BeliefState(g, d) => Decoder::BeliefState(g.valid(), d.valid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{TensorData, Tolerance};

    use super::*;
    use crate::GptConfig;

    type B = Flex;

    #[test]
    fn hidden_width_follows_the_official_rounding() {
        assert_eq!(BeliefHeadConfig::new(768, 10).hidden(), 4096);
        assert_eq!(BeliefHeadConfig::new(384, 10).hidden(), 2048);
        assert_eq!(BeliefHeadConfig::new(64, 10).hidden(), 384);
    }

    #[test]
    fn cached_belief_state_decoding_equals_the_full_pass() {
        let gpt: Gpt<B> = GptConfig::tiny(12, 16).init_seeded(2, &FlexDevice);
        let head = crate::seeded::<B, _>(3, &FlexDevice, || {
            BeliefHeadConfig::new(64, 12).with_init_std(0.2).init(&FlexDevice)
        });
        let empty = Tensor::<B, 1>::from_data(
            TensorData::new((0..64).map(|i| (i as f32 * 0.37).sin()).collect(), [64]),
            &FlexDevice,
        );
        let dec = Decoder::BeliefState(gpt, BeliefDecoder::new(head, empty));
        let tokens: Vec<i32> = (0..14).map(|i| i * 5 % 12).collect();
        let all = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.clone(), [2, 7]), &FlexDevice);
        let full = dec.logits(all.clone());
        let mut cache = dec.new_cache();
        let mut parts = vec![dec.logits_cached(all.clone().slice([0..2, 0..4]), &mut cache)];
        for j in 4..7 {
            parts.push(dec.logits_cached(all.clone().slice([0..2, j..j + 1]), &mut cache));
        }
        full.into_data().assert_approx_eq::<f32>(&Tensor::cat(parts, 1).into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn the_frozen_unembedding_passes_gradients_to_its_input_only() {
        type A = Autodiff<Flex>;
        for tied in [true, false] {
            let gpt: Gpt<A> = GptConfig::tiny(12, 16).with_tie_embeddings(tied).init_seeded(2, &FlexDevice);
            let hidden = Tensor::<A, 3>::ones([1, 2, 64], &FlexDevice).require_grad();
            let grads = gpt.unembed_frozen(hidden.clone()).sum().backward();
            assert!(hidden.grad(&grads).is_some(), "the input gets a gradient");
            let plain = gpt.output(hidden.clone()).sum().backward();
            // Through the ordinary head the unembedding is trained; through the frozen one it is not.
            let mut trained = 0;
            let mut frozen = 0;
            struct Count<'a>(&'a <A as AutodiffBackend>::Gradients, &'a mut usize);
            impl burn::module::ModuleVisitor<A> for Count<'_> {
                fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<A, D>>) {
                    *self.1 += p.val().grad(self.0).is_some() as usize;
                }
            }
            gpt.visit(&mut Count(&plain, &mut trained));
            gpt.visit(&mut Count(&grads, &mut frozen));
            assert!(trained > 0);
            assert_eq!(frozen, 0, "tied = {tied}: no parameter of the GPT gets a gradient");
        }
    }
}
