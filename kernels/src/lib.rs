//! The lab's CPU kernels for burn's flex backend, beneath the model crate: linear maps, causal attention over packed heads, GELU,
//! SwiGLU's gate, LayerNorm and RMSNorm, forward and backward, so that a training step on flex is
//! a few passes over memory instead of a chain of small ops.
//!
//! Why: under `Autodiff<Flex>`, burn 0.21 runs attention as its generic fallback (a mask, a scale,
//! a softmax decomposed into five recorded ops, two batched products, each with its backward) on
//! heads split and merged by strided copies, GELU through a scalar `erf` from `libm`, LayerNorm as
//! nine recorded ops, and the weight gradient of a linear map on `[b, t, d]` as b zero-filled
//! products summed. On the d 128 benchmark the first three took ~18, ~17 and ~7 ms of a 91 ms
//! step, for a few percent of its FLOPs (docs/log/2026-11.md, 2026-11-27).
//!
//! How: every function here takes any backend. On `Autodiff<Flex>` (training) it records one op
//! whose backward is written out in the op's file; on plain `Flex` (evaluation, decoding) it runs
//! the forward kernel (for LayerNorm, flex's own); on every other backend (wgpu, CUDA) it runs
//! burn's ops, so GPU backends keep their fused kernels and the library stays generic. The backend
//! is recognised by its type at run time (`Any`), which needs no trait bound beyond `Backend`.
//!
//! The kernels are plain loops over contiguous `f32` rows, compiled three times (AVX-512, AVX2 +
//! FMA, baseline) and picked by the CPU at run time, like flex's own matrix products; products go
//! to the `gemm` crate that flex uses. `erf` and `exp` are polynomial approximations (errors below
//! 1e-6, tested) that vectorize. Each kernel's work is cut into parts by shape alone and spread
//! over the cores by [`par`], so results do not depend on the thread count.
//!
//! Beside the model's ops: the concatenation along the last dimension through which heads read
//! pairs of vectors ([`cat_last`], whose backward hands out contiguous gradients), the residual
//! connection of a block that computes only the positions from the first target on
//! ([`add_suffix`]), two weighted row-wise losses that objectives' heads use ([`smooth_l1`],
//! [`distillation_kl`]), the AdamW update ([`adamw()`], bit for bit burn's) and the squared norm
//! gradient clipping needs ([`sum_of_squares`]), which were most of what the training step still
//! ran serially.
//!
//! Layout: this file holds the public re-exports and the helpers that recognise the backend and
//! move tensors between burn's types; each op has a file of its own with its dispatch, its autodiff
//! op and its kernels (`linear.rs`, `attention.rs`, `gelu.rs`, `swiglu.rs`, `layer_norm.rs`,
//! `concat.rs`, `residual.rs`, `loss.rs`, and `adamw.rs` for the optimizer's math). `product.rs`
//! holds the matrix products through `gemm` that the linear map and attention share, `bf16.rs` the
//! linear map's optional bf16 products (`bf16/amx.rs` on AMX tiles), and `simd.rs` the
//! compile-per-CPU macro, the cut into parts and the vectorizable row helpers (`dot`, `exp`, `erf`,
//! ...) that every kernel uses; `par.rs` the fork-join over the cores that every kernel's parts
//! run on.
//!
//! The crate knows no model: the `models` crate builds its GPT from these ops, and the trainer
//! takes AdamW and the bf16 setting from here.

use std::any::Any;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

mod adamw;
mod attention;
mod bf16;
mod concat;
mod gelu;
mod layer_norm;
mod linear;
mod loss;
mod product;
mod residual;
mod simd;
mod swiglu;

pub mod par;

pub use adamw::{AdamWStep, adamw, sum_of_squares};
pub use attention::{causal_attention, causal_attention_qkv};
pub use bf16::{bf16_kernel, bf16_supported, set_bf16_products};
pub use concat::cat_last;
pub use gelu::gelu;
pub use layer_norm::{layer_norm, rms_norm};
pub use linear::linear;
pub use loss::{distillation_kl, smooth_l1};
pub use product::multiply_adds;
pub use residual::add_suffix;
pub use swiglu::swiglu;

/// The training backend the kernels serve.
type Ad = Autodiff<Flex>;

// ---------------------------------------------------------------------------------------------
// Plumbing between burn's types.

/// Puts a prepared op into the graph, with the state its backward needs when the graph tracks it
/// (the state is dropped otherwise), and wraps its output.
fn record<O: Backward<Flex, N>, const N: usize, const D: usize>(
    kind: OpsKind<O, Flex, O::State, NoCheckpointing, N>,
    state: O::State,
    out: FlexTensor,
) -> Tensor<Ad, D> {
    let out = match kind {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Whether these kernels serve the backend `B` (the CPU training backend, `Autodiff<Flex>`); every
/// other backend runs burn's ops, so settings of the kernels (bf16 products) do not apply to it.
pub fn serves<B: 'static>() -> bool {
    is::<B, Ad>()
}

/// Whether the backend `B` is `C`.
fn is<B: 'static, C: 'static>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<C>()
}

/// `t` as the type `U` that it is (checked by [`is`] before).
fn same<T: 'static, U: 'static>(t: T) -> U {
    let mut slot = Some(t);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
        .unwrap_or_else(|| unreachable!("the backend was recognised by its type"))
}

fn primitive<const D: usize>(x: Tensor<Flex, D>) -> FlexTensor {
    x.into_primitive().tensor().to_contiguous()
}

fn float<B: Backend, const D: usize>(x: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// The tensor's values when it is contiguous `f32` (other dtypes take burn's ops).
fn f32s(x: &FlexTensor) -> Option<&[f32]> {
    if x.dtype() != DType::F32 {
        return None;
    }
    x.as_slice::<f32>()
}

/// An optional tensor's values: `Some(None)` for no tensor, `None` when it is not contiguous f32.
fn optional(x: Option<&FlexTensor>) -> Option<Option<&[f32]>> {
    match x {
        None => Some(None),
        Some(x) => f32s(x).map(Some),
    }
}

/// The values of a tensor the forward pass checked to be contiguous f32, or of its gradient (made
/// contiguous; the gradient of an f32 output is f32).
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32, checked in the forward pass")
}

fn flex(values: Vec<f32>, dims: impl Into<Vec<usize>>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims.into()))
}

/// The helpers the ops' tests share, and the test that every backend but flex's takes burn's ops.
#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::tensor::{Distribution, Tolerance};

    use super::attention::attention_reference;
    use super::layer_norm::layer_norm_reference;
    use super::*;

    pub(super) fn random<B: Backend, const D: usize>(dims: [usize; D], seed: u64) -> Tensor<B, D> {
        // burn's generator is global to the process and the tests run in parallel: seeding and
        // drawing under one lock keeps each test's inputs its own.
        static SEED_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = SEED_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Flex::seed(&FlexDevice, seed);
        let x = Tensor::<Flex, D>::random(dims, Distribution::Normal(0.0, 1.5), &FlexDevice);
        Tensor::<B, D>::from_data(x.into_data(), &Default::default())
    }

    pub(super) fn close<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) {
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(2e-5));
    }

    #[test]
    fn other_backends_take_burns_ops() {
        // A backend the kernels do not serve (here autodiff over autodiff) gets burn's result.
        type Other = Autodiff<Ad>;
        let x = random::<Other, 3>([2, 4, 6], 7);
        close(gelu(x.clone()), burn::tensor::activation::gelu(x.clone()));
        close(
            causal_attention(x.clone(), x.clone(), x.clone(), 3),
            attention_reference(x.clone(), x.clone(), x.clone(), 3),
        );
        let qkv = random::<Other, 3>([2, 4, 18], 17);
        let third = |i: usize| qkv.clone().slice_dim(2, i * 6..(i + 1) * 6);
        close(causal_attention_qkv(qkv.clone(), 3), attention_reference(third(0), third(1), third(2), 3));
        let (gamma, beta) = (random::<Other, 1>([6], 12), random::<Other, 1>([6], 13));
        close(
            layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5),
            layer_norm_reference(x.clone(), gamma, beta, 1e-5),
        );
        let (rows, weight) = (x.clone().reshape([8, 6]), random::<Other, 2>([6, 5], 14));
        close(linear(rows.clone(), weight.clone(), None), burn::tensor::module::linear(rows, weight, None));
        let w = random::<Other, 2>([2, 4], 15);
        close(
            smooth_l1(x.clone(), x.clone().mul_scalar(0.5), w.clone()),
            loss::smooth_l1_reference(x.clone(), x.clone().mul_scalar(0.5), w.clone()),
        );
        close(
            distillation_kl(x.clone(), x.clone().mul_scalar(2.0), w.clone()),
            loss::kl_reference(x.clone(), x.clone().mul_scalar(2.0), w),
        );
        close(
            swiglu(x.clone(), x.clone().mul_scalar(0.5)),
            swiglu::swiglu_reference(x.clone(), x.clone().mul_scalar(0.5)),
        );
        let gamma = random::<Other, 1>([6], 16);
        close(rms_norm(x.clone(), gamma.clone(), 1e-5), layer_norm::rms_norm_reference(x, gamma, 1e-5));
    }
}
