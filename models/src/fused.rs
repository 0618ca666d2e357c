//! Fused kernels for burn's CPU backend: linear maps, causal attention over packed heads, GELU and
//! LayerNorm, forward and backward, so that a training step on flex is a few passes over memory
//! instead of a chain of small ops.
//!
//! Why: under `Autodiff<Flex>`, burn 0.21 runs attention as its generic fallback (a mask, a scale,
//! a softmax decomposed into five recorded ops, two batched products, each with its backward) on
//! heads split and merged by strided copies, GELU through a scalar `erf` from `libm`, LayerNorm as
//! nine recorded ops, and the weight gradient of a linear map on `[b, t, d]` as b zero-filled
//! products summed. On the d 128 benchmark the first three took ~18, ~17 and ~7 ms of a 91 ms
//! step, for a few percent of its FLOPs (LOG.md, 2026-11-27).
//!
//! How: every function here takes any backend. On `Autodiff<Flex>` (training) it records one op
//! whose backward is written out below; on plain `Flex` (evaluation, decoding) it runs the forward
//! kernel (for LayerNorm, flex's own); on every other backend (wgpu, CUDA) it runs burn's ops, so
//! GPU backends keep their fused kernels and the library stays generic. The backend is recognised
//! by its type at run time (`Any`), which needs no trait bound beyond `Backend`.
//!
//! The kernels are plain loops over contiguous `f32` rows, compiled three times (AVX-512, AVX2 +
//! FMA, baseline) and picked by the CPU at run time, like flex's own matrix products; products go
//! to the `gemm` crate that flex uses. `erf` and `exp` are polynomial approximations (errors below
//! 1e-6, tested) that vectorize. Each kernel's work is cut into parts by shape alone and spread
//! over the cores by [`par`], so results do not depend on the thread count.
//!
//! Beside the model's ops: the AdamW update ([`adamw`], bit for bit burn's) and the squared norm
//! gradient clipping needs ([`sum_of_squares`]), which were most of what the training step still
//! ran serially.

use std::any::Any;
use std::mem::MaybeUninit;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use crate::par;

/// The training backend the kernels serve.
type Ad = Autodiff<Flex>;

/// Causal self-attention over packed heads: `q` `[b, tq, d]`, `k` and `v` `[b, tk, d]` with
/// `tq <= tk`, each row holding `heads` heads of width `d / heads` side by side; returns
/// `[b, tq, d]` in the same packing. Query `i` sees keys `0..=i + tk - tq`, which aligns queries
/// with the last keys, as a key/value cache needs. Scores are scaled by `1 / sqrt(d / heads)`.
pub fn causal_attention<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [b, tq, d] = q.dims();
    let tk = k.dims()[1];
    assert!(tq <= tk && d % heads == 0, "attention: {tq} queries over {tk} keys, width {d} in {heads} heads");
    let shape = Shape { b, tq, tk, h: heads, k: d / heads };
    if is::<B, Ad>() {
        return same(attention_autodiff(same(q), same(k), same(v), shape));
    }
    if is::<B, Flex>() {
        let (qp, kp, vp) =
            (primitive::<3>(same(q.clone())), primitive::<3>(same(k.clone())), primitive::<3>(same(v.clone())));
        if let (Some(qs), Some(ks), Some(vs)) = (f32s(&qp), f32s(&kp), f32s(&vp)) {
            let (out, _) = attention_forward(qs, ks, vs, shape);
            return same(float::<Flex, 3>(flex(out, [b, tq, d])));
        }
    }
    attention_reference(q, k, v, heads)
}

/// GELU, `0.5 x (1 + erf(x / sqrt 2))`, elementwise.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if is::<B, Ad>() {
        return same(gelu_autodiff::<D>(same(x)));
    }
    if is::<B, Flex>() {
        let xp = primitive::<D>(same(x.clone()));
        if let Some(xs) = f32s(&xp) {
            return same(float::<Flex, D>(flex(gelu_forward(xs), x.dims())));
        }
    }
    burn::tensor::activation::gelu(x)
}

/// LayerNorm over the last dimension, `(x - mean) / sqrt(var + eps) * gamma + beta` with the
/// biased variance, as burn's `LayerNorm` computes it; `x` `[..., d]`, `gamma` and `beta` `[d]`.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    if is::<B, Ad>() {
        return same(layer_norm_autodiff::<D>(same(x), same(gamma), same(beta), epsilon));
    }
    // Plain flex has a fused forward of its own.
    layer_norm_reference(x, gamma, beta, epsilon)
}

/// burn's LayerNorm, on every backend but the training one.
fn layer_norm_reference<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let out = B::layer_norm(
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        Some(beta.into_primitive().tensor()),
        epsilon,
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// `x W + b` over rows, what burn's `linear` computes: `x` `[n, i]`, `weight` `[i, o]`, `bias`
/// `[o]`. The products go to the `gemm` crate directly, split among the cores from 2^20
/// multiply-adds (flex's are single-threaded without its `rayon` feature, whose elementwise paths
/// cost more than they gain at these sizes), with the bias added in the product.
pub fn linear<B: Backend>(x: Tensor<B, 2>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, 2> {
    let ([n, i], [wi, o]) = (x.dims(), weight.dims());
    assert_eq!(i, wi, "linear: input width {i}, weight [{wi}, {o}]");
    if is::<B, Ad>() {
        return same(linear_autodiff(same(x), same(weight), bias.map(same)));
    }
    if is::<B, Flex>() {
        let (xp, wp) = (primitive::<2>(same(x.clone())), primitive::<2>(same(weight.clone())));
        let bp = bias.clone().map(|b| primitive::<1>(same(b)));
        if let (Some(xs), Some(ws), Some(bs)) = (f32s(&xp), f32s(&wp), optional(bp.as_ref())) {
            return same(float::<Flex, 2>(flex(linear_forward(xs, ws, bs, [n, i, o]), [n, o])));
        }
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// One AdamW step for [`adamw`]: the hyper-parameters as burn's `AdamWConfig` names them, the
/// learning rate and the step's count.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// The learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the second moment's square root.
    pub epsilon: f32,
    /// Decoupled weight decay (the parameter shrinks by `lr * weight_decay`).
    pub weight_decay: f32,
    /// The step's number, from 1 (the moments are new on step 1).
    pub time: usize,
}

/// One AdamW update of a parameter from its gradient and its first and second moments (`None` on
/// the first step); returns the new parameter and moments. It computes what burn 0.21's `AdamW`
/// (without AMSGrad or cautious decay) computes, the same f32 operations in the same order, so
/// its results are bit for bit burn's (tested): on flex in one pass over memory spread over the
/// cores instead of a dozen tensor ops (9% of an `ntf` training step ran in burn's; LOG.md,
/// 2026-11-27), on every other backend with burn's ops.
pub fn adamw<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
    step: AdamWStep,
) -> [Tensor<B, D>; 3] {
    if is::<B, Flex>() {
        let dims = param.dims();
        let (pp, gp) = (primitive::<D>(same(param.clone())), primitive::<D>(same(grad.clone())));
        let mp = moments.clone().map(|(m, v)| (primitive::<D>(same(m)), primitive::<D>(same(v))));
        let m = match &mp {
            None => Some(None),
            Some((m, v)) => f32s(m).zip(f32s(v)).map(Some),
        };
        if let (Some(p), Some(g), Some(m)) = (f32s(&pp), f32s(&gp), m) {
            let updated = adamw_update(p, g, m, step);
            return updated.map(|values| same(float::<Flex, D>(flex(values, dims))));
        }
    }
    adamw_reference(param, grad, moments, step)
}

/// burn's `AdamW` step, op for op (burn-optim 0.21, `adamw.rs`).
fn adamw_reference<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
    s: AdamWStep,
) -> [Tensor<B, D>; 3] {
    let (factor_1, factor_2) = (1.0 - s.beta_1, 1.0 - s.beta_2);
    let (m, v) = match moments {
        Some((m, v)) => (
            m.mul_scalar(s.beta_1).add(grad.clone().mul_scalar(factor_1)),
            v.mul_scalar(s.beta_2).add(grad.square().mul_scalar(factor_2)),
        ),
        None => (grad.clone().mul_scalar(factor_1), grad.square().mul_scalar(factor_2)),
    };
    let time = s.time as i32;
    let m_hat = m.clone().div_scalar(1f32 - s.beta_1.powi(time));
    let v_hat = v.clone().div_scalar(1f32 - s.beta_2.powi(time));
    let delta = m_hat.div(v_hat.sqrt().add_scalar(s.epsilon));
    let decay = s.lr * s.weight_decay as f64;
    let decayed = if decay == 0.0 { param } else { param.mul_scalar(1.0 - decay) };
    [decayed - delta.mul_scalar(s.lr), m, v]
}

/// The sum of the squares of `x`'s elements, as a one-element tensor (what gradient clipping
/// needs): on flex one parallel pass (each part's sum in f32, the parts' in f64, in order), on
/// every other backend burn's `powi(2).sum()`.
pub fn sum_of_squares<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    if is::<B, Flex>() {
        let xp = primitive::<D>(same(x.clone()));
        if let Some(xs) = f32s(&xp) {
            let [partial] = par::outputs(xs.len().div_ceil(PART), [xs.len().div_ceil(PART)], [1], |i, [sum]| {
                let part = &xs[i * PART..][..PART.min(xs.len() - i * PART)];
                sum[0] = squares_kernel(part);
            });
            let total = partial.iter().map(|&s| s as f64).sum::<f64>() as f32;
            return same(float::<Flex, 1>(flex(vec![total], [1])));
        }
    }
    x.powi_scalar(2).sum()
}

/// burn's attention on the same packing: what every backend other than flex runs, and what the
/// kernels are tested against.
fn attention_reference<B: Backend>(q: Tensor<B, 3>, k: Tensor<B, 3>, v: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [b, tq, d] = q.dims();
    let tk = k.dims()[1];
    let split = |x: Tensor<B, 3>, t| x.reshape([b, t, heads, d / heads]).swap_dims(1, 2); // [b, h, t, k]
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    let y = attention(split(q, tq), split(k, tk), split(v, tk), None, None, options); // [b, h, tq, k]
    y.swap_dims(1, 2).reshape([b, tq, d])
}

// ---------------------------------------------------------------------------------------------
// The autodiff ops.

/// Attention's backward: the inputs and the attention weights of the forward pass.
#[derive(Debug)]
struct AttentionOp;

#[derive(Clone, Debug)]
struct AttentionState {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    /// Softmax weights `[b, h, tq, tk]` (zero above the causal diagonal).
    p: Vec<f32>,
    shape: Shape,
}

impl Backward<Flex, 3> for AttentionOp {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let s = &ops.state;
        let go = values(&grad);
        let (dq, dk, dv) = attention_backward(values(&s.q), values(&s.k), values(&s.v), &s.p, go, s.shape);
        let Shape { b, tq, tk, h, k } = s.shape;
        let [pq, pk, pv] = ops.parents;
        for (parent, g, t) in [(pq, dq, tq), (pk, dk, tk), (pv, dv, tk)] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex(g, [b, t, h * k]));
            }
        }
    }
}

fn attention_autodiff(q: Tensor<Ad, 3>, k: Tensor<Ad, 3>, v: Tensor<Ad, 3>, shape: Shape) -> Tensor<Ad, 3> {
    let (q, k, v) = (q.into_primitive().tensor(), k.into_primitive().tensor(), v.into_primitive().tensor());
    let (qc, kc, vc) = (q.primitive.to_contiguous(), k.primitive.to_contiguous(), v.primitive.to_contiguous());
    let (Some(qs), Some(ks), Some(vs)) = (f32s(&qc), f32s(&kc), f32s(&vc)) else {
        return attention_reference(float(q), float(k), float(v), shape.h);
    };
    let (out, p) = attention_forward(qs, ks, vs, shape);
    let out = flex(out, [shape.b, shape.tq, shape.h * shape.k]);
    let op = AttentionOp.prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()]);
    record(op.compute_bound().stateful(), AttentionState { q: qc, k: kc, v: vc, p, shape }, out)
}

/// GELU's backward: the input of the forward pass.
#[derive(Debug)]
struct GeluOp;

impl Backward<Flex, 1> for GeluOp {
    /// The input and its shape.
    type State = (FlexTensor, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let (x, dims) = &ops.state;
            let x = values(x);
            let g = values(&grad);
            grads.register::<Flex>(node.id, flex(gelu_backward(x, g), dims.clone()));
        }
    }
}

fn gelu_autodiff<const D: usize>(x: Tensor<Ad, D>) -> Tensor<Ad, D> {
    let dims = x.dims();
    let x = x.into_primitive().tensor();
    let xc = x.primitive.to_contiguous();
    let Some(xs) = f32s(&xc) else {
        return burn::tensor::activation::gelu(float(x));
    };
    let out = flex(gelu_forward(xs), dims);
    record(GeluOp.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful(), (xc, dims.to_vec()), out)
}

/// LayerNorm's backward: the normalised input, each row's `1 / sqrt(var + eps)`, and gamma.
#[derive(Debug)]
struct LayerNormOp;

#[derive(Clone, Debug)]
struct LayerNormState {
    normalized: Vec<f32>,
    rstd: Vec<f32>,
    gamma: FlexTensor,
    dims: Vec<usize>,
}

impl Backward<Flex, 3> for LayerNormOp {
    type State = LayerNormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let s = &ops.state;
        let gamma = values(&s.gamma);
        let g = values(&grad);
        let (dx, dgamma, dbeta) = layer_norm_backward(g, &s.normalized, &s.rstd, gamma);
        let d = gamma.len();
        let [px, pg, pb] = ops.parents;
        for (parent, value, dims) in [(px, dx, s.dims.clone()), (pg, dgamma, vec![d]), (pb, dbeta, vec![d])] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex(value, dims));
            }
        }
    }
}

fn layer_norm_autodiff<const D: usize>(
    x: Tensor<Ad, D>,
    gamma: Tensor<Ad, 1>,
    beta: Tensor<Ad, 1>,
    epsilon: f64,
) -> Tensor<Ad, D> {
    let dims = x.dims();
    let (x, gamma, beta) =
        (x.into_primitive().tensor(), gamma.into_primitive().tensor(), beta.into_primitive().tensor());
    let (xc, gc, bc) = (x.primitive.to_contiguous(), gamma.primitive.to_contiguous(), beta.primitive.to_contiguous());
    let (Some(xs), Some(gs), Some(bs)) = (f32s(&xc), f32s(&gc), f32s(&bc)) else {
        return layer_norm_reference(float(x), float(gamma), float(beta), epsilon);
    };
    let (out, normalized, rstd) = layer_norm_forward(xs, gs, bs, epsilon as f32);
    let out = flex(out, dims);
    let op = LayerNormOp.prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()]);
    record(op.compute_bound().stateful(), LayerNormState { normalized, rstd, gamma: gc, dims: dims.to_vec() }, out)
}

/// The linear map's backward: its input and weight.
#[derive(Debug)]
struct LinearOp;

#[derive(Clone, Debug)]
struct LinearState {
    x: FlexTensor,
    weight: FlexTensor,
    /// Rows, input width, output width.
    sizes: [usize; 3],
}

// Parents: the input, the weight and, when there is one, the bias.
impl<const N: usize> Backward<Flex, N> for LinearOp {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let s = &ops.state;
        let [n, i, o] = s.sizes;
        let g = values(&grad);
        for (index, parent) in ops.parents.into_iter().enumerate() {
            let Some(node) = parent else { continue };
            let value = match index {
                // dx = g W^T: [n, o] x [o, i], W^T read through W's strides.
                0 => flex(product(g, [o as isize, 1], values(&s.weight), [1, o as isize], [n, o, i], None), [n, i]),
                // dW = x^T g: [i, n] x [n, o], x^T read through x's strides.
                1 => flex(product(values(&s.x), [1, i as isize], g, [o as isize, 1], [i, n, o], None), [i, o]),
                _ => flex(column_sums(g, o), [o]),
            };
            grads.register::<Flex>(node.id, value);
        }
    }
}

fn linear_autodiff(x: Tensor<Ad, 2>, weight: Tensor<Ad, 2>, bias: Option<Tensor<Ad, 1>>) -> Tensor<Ad, 2> {
    let ([n, i], [_, o]) = (x.dims(), weight.dims());
    let (x, weight) = (x.into_primitive().tensor(), weight.into_primitive().tensor());
    let bias = bias.map(|b| b.into_primitive().tensor());
    let (xc, wc) = (x.primitive.to_contiguous(), weight.primitive.to_contiguous());
    let bc = bias.as_ref().map(|b| b.primitive.to_contiguous());
    let (Some(xs), Some(ws), Some(bs)) = (f32s(&xc), f32s(&wc), optional(bc.as_ref())) else {
        return burn::tensor::module::linear(float(x), float(weight), bias.map(float));
    };
    let out = flex(linear_forward(xs, ws, bs, [n, i, o]), [n, o]);
    let state = LinearState { x: xc, weight: wc, sizes: [n, i, o] };
    // The same op with two or three parents.
    match bias {
        Some(b) => {
            let nodes = [x.node.clone(), weight.node.clone(), b.node.clone()];
            record(LinearOp.prepare::<NoCheckpointing>(nodes).compute_bound().stateful(), state, out)
        }
        None => {
            let nodes = [x.node.clone(), weight.node.clone()];
            record(LinearOp.prepare::<NoCheckpointing>(nodes).compute_bound().stateful(), state, out)
        }
    }
}

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

// ---------------------------------------------------------------------------------------------
// The kernels, on contiguous f32 rows.

/// `x W (+ b)`: `x` `[n, i]`, `w` `[i, o]`, `b` `[o]`, row-major.
fn linear_forward(x: &[f32], w: &[f32], b: Option<&[f32]>, [n, i, o]: [usize; 3]) -> Vec<f32> {
    product(x, [i as isize, 1], w, [o as isize, 1], [n, i, o], b)
}

/// `lhs rhs (+ bias)` for `lhs` `[m, k]` and `rhs` `[k, n]` read through (row, column) strides,
/// into a fresh row-major `[m, n]`; `bias` `[n]` is added to every row.
fn product(
    lhs: &[f32],
    lhs_strides: [isize; 2],
    rhs: &[f32],
    rhs_strides: [isize; 2],
    mkn: [usize; 3],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let len = mkn[0] * mkn[2];
    let mut out = Vec::with_capacity(len);
    let threads = if mkn.iter().product::<usize>() >= PARALLEL_MACS { par::threads() } else { 1 };
    // SAFETY: `out` has room for `[m, n]` and nothing else refers to it; the product writes
    // every element (see `gemm_parts`), so all are initialised before `set_len`. Skipping a
    // zero-fill saves a pass over each output (memset took ~5% of the d 128 step).
    unsafe {
        gemm_parts(out.as_mut_ptr(), bias, lhs, lhs_strides, rhs, rhs_strides, mkn, threads);
        out.set_len(len);
    }
    out
}

/// Products smaller than this many multiply-adds run on one thread: below it, starting the
/// helpers and packing an operand twice cost more than the second core gains.
const PARALLEL_MACS: usize = 1 << 20;

/// `dst = lhs rhs (+ bias)`, with `dst` row-major `[m, n]`, in (at most) `parts` blocks that
/// [`par`] spreads over the cores. Every element of `dst` is written and none is read before.
///
/// The output is cut into blocks of rows (or of columns, whichever dimension is longer, so that
/// the operand each block packs again is the smaller one). Every element is still the same sum
/// in the same order: gemm's blocking of the shared dimension depends on `k` alone (and on sizes
/// only when both block dimensions are at most 64, which the cut avoids), so results are bit for
/// bit those of one block, whatever the thread count (tested below). With a bias, each block
/// first fills its rows with it and gemm adds the product.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` elements and not aliased.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_parts(
    dst: *mut f32,
    bias: Option<&[f32]>,
    lhs: &[f32],
    [lhs_rs, lhs_cs]: [isize; 2],
    rhs: &[f32],
    [rhs_rs, rhs_cs]: [isize; 2],
    [m, k, n]: [usize; 3],
    parts: usize,
) {
    // The last element each operand is read at must lie inside it.
    let last = |rows: usize, cols: usize, rs: isize, cs: isize| {
        (rows.max(1) - 1) as isize * rs + (cols.max(1) - 1) as isize * cs
    };
    assert!(m * k == 0 || (last(m, k, lhs_rs, lhs_cs) as usize) < lhs.len(), "gemm: left operand too short");
    assert!(k * n == 0 || (last(k, n, rhs_rs, rhs_cs) as usize) < rhs.len(), "gemm: right operand too short");
    assert!(bias.is_none_or(|b| b.len() == n), "gemm: bias of {} for {n} columns", bias.map_or(0, <[f32]>::len));
    let by_rows = m >= n;
    let (long, short) = if by_rows { (m, n) } else { (n, m) };
    // Blocks of a multiple of 16 rows or columns (whole SIMD registers); blocks of at most 64 by
    // at most 64 would change gemm's blocking of `k`, so those products stay whole.
    let block = long.div_ceil(parts.max(1)).next_multiple_of(16);
    let (block, blocks) =
        if block >= long || (short <= 64 && block <= 64) { (long, 1) } else { (block, long.div_ceil(block)) };
    let (dst, lhs_ptr, rhs_ptr) =
        (par::Shared(dst), par::Shared(lhs.as_ptr() as *mut f32), par::Shared(rhs.as_ptr() as *mut f32));
    par::for_each(blocks, |b| {
        let start = b * block;
        let size = block.min(long - start);
        let (rows, cols) = if by_rows { (size, n) } else { (m, size) };
        let (row0, col0) = if by_rows { (start, 0) } else { (0, start) };
        // SAFETY: the blocks cut `dst` into disjoint rectangles inside `[m, n]` (which the
        // caller lends exclusively), and each operand is read only inside the extent checked
        // above; gemm computes dst := alpha dst + beta lhs rhs, and with `read_dst` false it
        // stores without loading dst (or stores zeros when k = 0).
        unsafe {
            let at = dst.get().add(row0 * n + col0);
            if let Some(bias) = bias {
                for r in 0..rows {
                    std::ptr::copy_nonoverlapping(bias.as_ptr().add(col0), at.add(r * n), cols);
                }
            }
            gemm_once(
                at,
                n as isize,
                bias.is_some(),
                lhs_ptr.get().offset(row0 as isize * lhs_rs),
                [lhs_rs, lhs_cs],
                rhs_ptr.get().offset(col0 as isize * rhs_cs),
                [rhs_rs, rhs_cs],
                [rows, k, cols],
            );
        }
    });
}

/// `dst (+)= lhs rhs` on the calling thread, through gemm: `lhs` `[m, k]` and `rhs` `[k, n]` read
/// through (row, column) strides, `dst` row-major with row stride `dst_rs`, read (and added to)
/// only when `read_dst`, otherwise overwritten without being read.
///
/// # Safety
/// Every element the strides reach must lie inside its allocation, `dst` must not alias the
/// operands, and it must be initialised when `read_dst`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_once(
    dst: *mut f32,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    [lhs_rs, lhs_cs]: [isize; 2],
    rhs: *const f32,
    [rhs_rs, rhs_cs]: [isize; 2],
    [m, k, n]: [usize; 3],
) {
    // SAFETY: forwarded from the caller; gemm computes dst := alpha dst + beta lhs rhs, with
    // alpha taken as zero (dst not loaded) when `read_dst` is false.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Sums of the columns of a row-major matrix with `n` columns: each part's rows summed on its
/// own, then the parts' sums in order.
fn column_sums(g: &[f32], n: usize) -> Vec<f32> {
    let per = rows_per_part(n);
    let rows = g.len() / n.max(1);
    let parts = rows.div_ceil(per);
    let [partial] = par::outputs(parts, [parts * n], [n], |i, [sums]| {
        for row in g[i * per * n..][..per.min(rows - i * per) * n].chunks_exact(n) {
            axpy(1.0, row, sums);
        }
    });
    add_parts(&partial, n)
}

/// The sum of the parts' partial sums, `partial` holding one row of `width` per part, added in
/// part order (so the result does not depend on which thread computed which part).
fn add_parts(partial: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; width];
    for part in partial.chunks_exact(width) {
        axpy(1.0, part, &mut sums);
    }
    sums
}

/// Sizes of an attention call: batch, queries, keys, heads, head width.
#[derive(Clone, Copy, Debug)]
struct Shape {
    b: usize,
    tq: usize,
    tk: usize,
    h: usize,
    k: usize,
}

/// Compiles `$body` for AVX-512, for AVX2 + FMA and for the baseline target, and runs the best
/// the CPU has (what flex's matrix products do too).
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features `v4` is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `v3` is compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

// The kernels' drivers cut the work into parts (a batch element of attention; a fixed number of
// rows or elements otherwise) that `par` spreads over the cores. Parts depend on the shapes only,
// and sums across parts (LayerNorm's and the bias's gradients) add the parts' partial sums in
// order, so results do not depend on the thread count.

/// Elements per part of the elementwise and row-wise kernels: 64 KB of f32, a few microseconds
/// of work, many parts per call at the lab's sizes.
const PART: usize = 1 << 14;

/// Rows of width `d` per part.
fn rows_per_part(d: usize) -> usize {
    (PART / d.max(1)).max(1)
}

fn attention_forward(q: &[f32], k: &[f32], v: &[f32], s: Shape) -> (Vec<f32>, Vec<f32>) {
    let Shape { b, tq, tk, h, k: w } = s;
    let d = h * w;
    let one = Shape { b: 1, ..s };
    let [out, p] = par::outputs(b, [b * tq * d, b * h * tq * tk], [tq * d, h * tq * tk], |i, [out, p]| {
        let (q, k, v) = (&q[i * tq * d..][..tq * d], &k[i * tk * d..][..tk * d], &v[i * tk * d..][..tk * d]);
        attention_forward_kernel(q, k, v, one, out, p);
    });
    (out, p)
}

fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &[f32],
    go: &[f32],
    s: Shape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Shape { b, tq, tk, h, k: w } = s;
    let d = h * w;
    let one = Shape { b: 1, ..s };
    let [dq, dk, dv] = par::outputs(b, [b * tq * d, b * tk * d, b * tk * d], [tq * d, tk * d, tk * d], |i, grads| {
        let (q, k, v) = (&q[i * tq * d..][..tq * d], &k[i * tk * d..][..tk * d], &v[i * tk * d..][..tk * d]);
        let (p, go) = (&p[i * h * tq * tk..][..h * tq * tk], &go[i * tq * d..][..tq * d]);
        attention_backward_kernel(q, k, v, p, go, one, grads);
    });
    (dq, dk, dv)
}

// The kernels below write every element of their outputs, which therefore skip the zero-fill
// (`par::outputs_uninit`).

fn gelu_forward(x: &[f32]) -> Vec<f32> {
    let n = x.len();
    // SAFETY: the kernel writes every element of its part.
    let [y] =
        unsafe { par::outputs_uninit(n.div_ceil(PART), [n], [PART], |i, [y]| gelu_forward_kernel(&x[i * PART..], y)) };
    y
}

fn gelu_backward(x: &[f32], g: &[f32]) -> Vec<f32> {
    let n = x.len();
    // SAFETY: the kernel writes every element of its part.
    let [dx] = unsafe {
        par::outputs_uninit(n.div_ceil(PART), [n], [PART], |i, [dx]| {
            gelu_backward_kernel(&x[i * PART..], &g[i * PART..], dx);
        })
    };
    dx
}

fn layer_norm_forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let rows = x.len() / d;
    let per = rows_per_part(d);
    // SAFETY: the kernel writes every element of its parts (all of a row's values and its rstd).
    let [out, normalized, rstd] = unsafe {
        par::outputs_uninit(
            rows.div_ceil(per),
            [rows * d, rows * d, rows],
            [per * d, per * d, per],
            |i, [out, n, r]| {
                layer_norm_forward_kernel(&x[i * per * d..], gamma, beta, eps, out, n, r);
            },
        )
    };
    (out, normalized, rstd)
}

fn layer_norm_backward(g: &[f32], normalized: &[f32], rstd: &[f32], gamma: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let rows = rstd.len();
    let per = rows_per_part(d);
    let parts = rows.div_ceil(per);
    // Each part's sums for dgamma and dbeta, side by side.
    // SAFETY: the kernel writes every element of `dx`'s part; the sums start zeroed.
    let [dx, partial] = unsafe {
        par::outputs_uninit(parts, [rows * d, parts * 2 * d], [per * d, 2 * d], |i, [dx, sums]| {
            let (rows, at) = (&rstd[i * per..][..per.min(rows - i * per)], i * per * d);
            let (dgamma, dbeta) = par::zero(sums).split_at_mut(d);
            layer_norm_backward_kernel(&g[at..], &normalized[at..], rows, gamma, dx, dgamma, dbeta);
        })
    };
    let mut dgamma = add_parts(&partial, 2 * d);
    let dbeta = dgamma.split_off(d);
    (dx, dgamma, dbeta)
}

/// The scalars of an AdamW step, in f32 where burn's ops take them as f32.
#[derive(Clone, Copy)]
struct AdamWScalars {
    beta_1: f32,
    beta_2: f32,
    factor_1: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon: f32,
    /// `1 - lr * weight_decay`, or `None` without decay (burn skips the product then).
    keep: Option<f32>,
    lr: f32,
}

fn adamw_update(p: &[f32], g: &[f32], moments: Option<(&[f32], &[f32])>, s: AdamWStep) -> [Vec<f32>; 3] {
    let time = s.time as i32;
    let decay = s.lr * s.weight_decay as f64;
    let c = AdamWScalars {
        beta_1: s.beta_1,
        beta_2: s.beta_2,
        factor_1: 1.0 - s.beta_1,
        factor_2: 1.0 - s.beta_2,
        correction_1: 1f32 - s.beta_1.powi(time),
        correction_2: 1f32 - s.beta_2.powi(time),
        epsilon: s.epsilon,
        keep: (decay != 0.0).then_some((1.0 - decay) as f32),
        lr: s.lr as f32,
    };
    let n = p.len();
    // SAFETY: the kernel writes every element of its parts.
    unsafe {
        par::outputs_uninit(n.div_ceil(PART), [n; 3], [PART; 3], |i, out| {
            let at = i * PART;
            adamw_kernel(&p[at..], &g[at..], moments.map(|(m, v)| (&m[at..], &v[at..])), c, out);
        })
    }
}

multiversion! {
    fn adamw_kernel(
        p: &[f32],
        g: &[f32],
        moments: Option<(&[f32], &[f32])>,
        c: AdamWScalars,
        out: [&mut [MaybeUninit<f32>]; 3],
    ) {
        let [po, mo, vo] = out;
        let n = po.len();
        let (p, g) = (&p[..n], &g[..n]);
        match moments {
            Some((m, v)) => {
                let (m, v) = (&m[..n], &v[..n]);
                for i in 0..n {
                    let (mi, vi) = (m[i] * c.beta_1 + g[i] * c.factor_1, v[i] * c.beta_2 + (g[i] * g[i]) * c.factor_2);
                    mo[i].write(mi);
                    vo[i].write(vi);
                    po[i].write(adamw_parameter(p[i], mi, vi, c));
                }
            }
            None => {
                for i in 0..n {
                    let (mi, vi) = (g[i] * c.factor_1, (g[i] * g[i]) * c.factor_2);
                    mo[i].write(mi);
                    vo[i].write(vi);
                    po[i].write(adamw_parameter(p[i], mi, vi, c));
                }
            }
        }
    }
}

/// The updated parameter from the new moments, as burn's `AdamW` computes it.
#[inline(always)]
fn adamw_parameter(p: f32, m: f32, v: f32, c: AdamWScalars) -> f32 {
    let delta = (m / c.correction_1) / ((v / c.correction_2).sqrt() + c.epsilon);
    let decayed = match c.keep {
        Some(keep) => p * keep,
        None => p,
    };
    decayed - delta * c.lr
}

/// One batch element's attention: `q` `[tq, d]`, `k` and `v` `[tk, d]`; writes `out` `[tq, d]`
/// and the softmax weights `p` `[h, tq, tk]` (zero above the causal diagonal). Per head, the
/// scores and the output are two small products (gemm; a dot product per query and key, each
/// with its horizontal sum, ran at ~8 GFLOP/s), the causal softmax a pass over the rows.
fn attention_forward_kernel(q: &[f32], k: &[f32], v: &[f32], s: Shape, out: &mut [f32], p: &mut [f32]) {
    let Shape { tq, tk, h: nh, k: w, .. } = s;
    let d = nh * w;
    let scale = 1.0 / (w as f32).sqrt();
    for h in 0..nh {
        let ph = &mut p[h * tq * tk..][..tq * tk];
        // S = Q_h K_h^T, [tq, tk]: K_h^T read through K's strides.
        head_product(ph, tk, &q[h * w..], [d, 1], &k[h * w..], [1, d], [tq, w, tk]);
        softmax_rows(ph, tq, tk, scale);
        // O_h = P_h V_h, [tq, w], into the head's columns of `out`.
        head_product(&mut out[h * w..], d, ph, [tk, 1], &v[h * w..], [d, 1], [tq, tk, w]);
    }
}

/// One batch element's attention gradients from the forward pass's inputs, its softmax weights
/// `p` and the output's gradient `go` `[tq, d]`: `[dq, dk, dv]`, shaped as `q`, `k` and `v`.
fn attention_backward_kernel(q: &[f32], k: &[f32], v: &[f32], p: &[f32], go: &[f32], s: Shape, grads: [&mut [f32]; 3]) {
    let Shape { tq, tk, h: nh, k: w, .. } = s;
    let d = nh * w;
    let scale = 1.0 / (w as f32).sqrt();
    let [dq, dk, dv] = grads;
    let mut ds = vec![0.0f32; tq * tk];
    for h in 0..nh {
        let ph = &p[h * tq * tk..][..tq * tk];
        // dP = dO_h V_h^T; dS = P (dP - rowsum(P dP)) scale.
        head_product(&mut ds, tk, &go[h * w..], [d, 1], &v[h * w..], [1, d], [tq, w, tk]);
        softmax_backward_rows(ph, &mut ds, tq, tk, scale);
        // dQ_h = dS K_h; dK_h = dS^T Q_h; dV_h = P_h^T dO_h (transposes read through strides).
        head_product(&mut dq[h * w..], d, &ds, [tk, 1], &k[h * w..], [d, 1], [tq, tk, w]);
        head_product(&mut dk[h * w..], d, &ds, [1, tk], &q[h * w..], [d, 1], [tk, tq, w]);
        head_product(&mut dv[h * w..], d, ph, [1, tk], &go[h * w..], [d, 1], [tk, tq, w]);
    }
}

/// `dst = lhs rhs` for one head's small matrices, `lhs` `[m, k]` and `rhs` `[k, n]` read through
/// (row, column) strides, `dst` `[m, n]` with row stride `dst_rs`; every element of it written.
/// One thread: the callers already run one task per batch element.
fn head_product(
    dst: &mut [f32],
    dst_rs: usize,
    lhs: &[f32],
    [lhs_rs, lhs_cs]: [usize; 2],
    rhs: &[f32],
    [rhs_rs, rhs_cs]: [usize; 2],
    [m, k, n]: [usize; 3],
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs;
    assert!(
        m * n == 0
            || (last(m, n, dst_rs, 1) < dst.len()
                && (k == 0 || (last(m, k, lhs_rs, lhs_cs) < lhs.len() && last(k, n, rhs_rs, rhs_cs) < rhs.len()))),
        "attention: a head's product reaches outside its operands"
    );
    // SAFETY: every element the strides reach lies inside the slices (checked above), and `dst`
    // is exclusively borrowed; with `read_dst` false gemm overwrites dst.
    unsafe {
        gemm_once(
            dst.as_mut_ptr(),
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            [lhs_rs as isize, lhs_cs as isize],
            rhs.as_ptr(),
            [rhs_rs as isize, rhs_cs as isize],
            [m, k, n],
        );
    }
}

multiversion! {
    fn squares_kernel(x: &[f32]) -> f32 {
        dot(x, x)
    }
}

multiversion! {
    /// Scaled causal softmax of each row of the scores `p` `[tq, tk]` in place: query `i` sees
    /// keys `0..=i + tk - tq`; the rest become zero.
    fn softmax_rows(p: &mut [f32], tq: usize, tk: usize, scale: f32) {
        for i in 0..tq {
            let seen = i + tk - tq + 1;
            let row = &mut p[i * tk..][..tk];
            let mut max = f32::NEG_INFINITY;
            for pj in row[..seen].iter_mut() {
                *pj *= scale;
                max = max.max(*pj);
            }
            let mut sum = 0.0;
            for pj in row[..seen].iter_mut() {
                *pj = exp(*pj - max);
                sum += *pj;
            }
            let inv = 1.0 / sum;
            for pj in row[..seen].iter_mut() {
                *pj *= inv;
            }
            row[seen..].fill(0.0);
        }
    }
}

multiversion! {
    /// The softmax's backward in place: `ds` holds dP `[tq, tk]` and becomes
    /// `dS_ij = P_ij (dP_ij - sum_j P_ij dP_ij) scale` (zero above the causal diagonal).
    fn softmax_backward_rows(p: &[f32], ds: &mut [f32], tq: usize, tk: usize, scale: f32) {
        for i in 0..tq {
            let seen = i + tk - tq + 1;
            let (row, dsr) = (&p[i * tk..][..seen], &mut ds[i * tk..][..tk]);
            let mut r = 0.0;
            for (dsj, &pj) in dsr[..seen].iter().zip(row) {
                r += pj * *dsj;
            }
            for (dsj, &pj) in dsr[..seen].iter_mut().zip(row) {
                *dsj = pj * (*dsj - r) * scale;
            }
            dsr[seen..].fill(0.0);
        }
    }
}

// Index loops rather than iterator closures: a closure is its own function, compiled without
// the target features of the version that calls it, so it would not vectorize. Each kernel
// fills its output part, reading the inputs from the part's start.
multiversion! {
    fn gelu_forward_kernel(x: &[f32], y: &mut [MaybeUninit<f32>]) {
        let x = &x[..y.len()];
        for i in 0..x.len() {
            y[i].write(0.5 * x[i] * (1.0 + erf(x[i] * std::f32::consts::FRAC_1_SQRT_2)));
        }
    }
}

multiversion! {
    fn gelu_backward_kernel(x: &[f32], g: &[f32], dx: &mut [MaybeUninit<f32>]) {
        // d/dx x Phi(x) = Phi(x) + x phi(x).
        let inv_sqrt_2pi = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;
        let n = dx.len();
        let (x, g) = (&x[..n], &g[..n]);
        for i in 0..n {
            let cdf = 0.5 * (1.0 + erf(x[i] * std::f32::consts::FRAC_1_SQRT_2));
            dx[i].write(g[i] * (cdf + x[i] * inv_sqrt_2pi * exp(-0.5 * x[i] * x[i])));
        }
    }
}

multiversion! {
    fn layer_norm_forward_kernel(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [MaybeUninit<f32>],
        normalized: &mut [MaybeUninit<f32>],
        rstd: &mut [MaybeUninit<f32>],
    ) {
        let d = gamma.len();
        for r in 0..rstd.len() {
            let xr = &x[r * d..][..d];
            let mean = sum(xr) / d as f32;
            let var = squared_deviations(xr, mean) / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            rstd[r].write(inv);
            let (or, nr) = (&mut out[r * d..][..d], &mut normalized[r * d..][..d]);
            for i in 0..d {
                let n = (xr[i] - mean) * inv;
                nr[i].write(n);
                or[i].write(n * gamma[i] + beta[i]);
            }
        }
    }
}

multiversion! {
    fn layer_norm_backward_kernel(
        g: &[f32],
        normalized: &[f32],
        rstd: &[f32],
        gamma: &[f32],
        dx: &mut [MaybeUninit<f32>],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        // dx = rstd (a - mean(a) - x^ mean(a x^)) with a = g gamma; dgamma = sum g x^; dbeta = sum g.
        let d = gamma.len();
        let mut a = vec![0.0f32; d];
        for r in 0..rstd.len() {
            let (gr, nr) = (&g[r * d..][..d], &normalized[r * d..][..d]);
            for i in 0..d {
                a[i] = gr[i] * gamma[i];
                dgamma[i] += gr[i] * nr[i];
                dbeta[i] += gr[i];
            }
            let m1 = sum(&a) / d as f32;
            let m2 = dot(&a, nr) / d as f32;
            let dxr = &mut dx[r * d..][..d];
            for i in 0..d {
                dxr[i].write(rstd[r] * (a[i] - m1 - nr[i] * m2));
            }
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums, so that the loop vectorizes without reassociating floats.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..8 {
            acc[l] += x[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for x in rest {
        s += x;
    }
    s
}

/// `sum (x_i - mean)^2`, in the order `dot` would sum the deviations' squares.
#[inline(always)]
fn squared_deviations(a: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..8 {
            acc[l] += (x[l] - mean) * (x[l] - mean);
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for x in rest {
        s += (x - mean) * (x - mean);
    }
    s
}

/// `y += a x`.
#[inline(always)]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `e^x` for `x <= 0` (what softmax and the Gaussian density need): `2^n e^r` with
/// `r = x - n ln 2` in `[-ln 2 / 2, ln 2 / 2]` and a degree-6 polynomial for `e^r`, relative
/// error < 1e-6; 0 below -87.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a call to `round`.
    const ROUND: f32 = 12_582_912.0;
    let y = x.max(-87.0);
    let t = y * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // n as an integer, read off t's mantissa: integer ops vectorize where a float cast does not.
    let ni = t.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let e = p * f32::from_bits(((ni + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { e }
}

/// `erf(x)`: Eigen's rational approximation on `[-4, 4]` (outside it erf is ±1 in f32), absolute
/// error < 1e-6.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use burn::backend::flex::FlexDevice;
    use burn::tensor::{Distribution, Tolerance};

    use super::*;

    fn random<B: Backend, const D: usize>(dims: [usize; D], seed: u64) -> Tensor<B, D> {
        crate::seeded::<Flex, _>(seed, &FlexDevice, || {
            let x = Tensor::<Flex, D>::random(dims, Distribution::Normal(0.0, 1.5), &FlexDevice);
            Tensor::<B, D>::from_data(x.into_data(), &Default::default())
        })
    }

    fn close<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) {
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::absolute(2e-5));
    }

    #[test]
    fn split_products_equal_whole_ones_bit_for_bit() {
        // The model's products (rows 2048 = 64 x 32; widths 54 to 1536), forward and both
        // gradients' operand layouts, plus odd sizes and a shared dimension beyond gemm's block.
        let cases: &[[usize; 3]] = &[
            [2048, 128, 384],
            [2048, 128, 54],
            [128, 2048, 384],
            [512, 2048, 128],
            [2048, 384, 1536],
            [300, 700, 100],
            [70, 1100, 90],
        ];
        for &[m, k, n] in cases {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 300.0).collect();
            // Row-major operands, then the left one read transposed (as the weight gradient does).
            for (lhs_strides, rhs_strides) in [([k as isize, 1], [n as isize, 1]), ([1, m as isize], [n as isize, 1])] {
                let bias: Vec<f32> = (0..n).map(|j| j as f32 / 7.0).collect();
                for bias in [None, Some(&bias[..])] {
                    let run = |parts| {
                        let mut out = vec![f32::NAN; m * n];
                        // SAFETY: `out` holds [m, n].
                        unsafe {
                            gemm_parts(out.as_mut_ptr(), bias, &a, lhs_strides, &b, rhs_strides, [m, k, n], parts)
                        };
                        out
                    };
                    let whole = run(1);
                    assert!(whole.iter().all(|x| x.is_finite()), "[{m}, {k}, {n}]: an element was not written");
                    for parts in [2, 3, 8] {
                        let split = run(parts);
                        assert!(
                            whole.iter().zip(&split).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "[{m}, {k}, {n}] in {parts} parts differs from the whole product"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn erf_and_exp_match_the_standard_library() {
        for i in -9000..=9000 {
            let x = i as f32 / 1000.0;
            assert!((erf(x) - reference_erf(x)).abs() < 1e-6, "erf({x}) = {} vs {}", erf(x), reference_erf(x));
            let y = -x.abs() * 9.0;
            if y >= -87.0 {
                assert!((exp(y) - y.exp()).abs() <= 1e-6 * y.exp(), "exp({y}) = {} vs {}", exp(y), y.exp());
            }
        }
        assert_eq!(exp(-200.0), 0.0);
    }

    /// erf in f64 by Simpson's rule on its integral: slow and accurate, a reference.
    fn reference_erf(x: f32) -> f32 {
        let x = x as f64;
        // erf(x) = 2/sqrt(pi) * integral_0^x e^{-t^2} dt, by Simpson's rule on 2000 panels.
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        (s * h / 3.0 * std::f64::consts::FRAC_2_SQRT_PI) as f32
    }

    #[test]
    fn attention_matches_burns_forward_and_gradients() {
        // Two heads of width 3, batch 2, 5 queries over 5 keys (training) and 2 over 5 (a cache).
        for (tq, tk) in [(5, 5), (2, 5)] {
            let q = random::<Ad, 3>([2, tq, 6], 1).require_grad();
            let k = random::<Ad, 3>([2, tk, 6], 2).require_grad();
            let v = random::<Ad, 3>([2, tk, 6], 3).require_grad();
            let w = random::<Ad, 3>([2, tq, 6], 4);
            let fused = causal_attention(q.clone(), k.clone(), v.clone(), 2);
            let reference = attention_reference(q.clone(), k.clone(), v.clone(), 2);
            close(fused.clone(), reference.clone());
            // Plain flex runs the same forward kernel.
            let plain = causal_attention(q.clone().inner(), k.clone().inner(), v.clone().inner(), 2);
            close(plain, reference.clone().inner());
            let g1 = (fused * w.clone()).sum().backward();
            let g2 = (reference * w).sum().backward();
            for x in [&q, &k, &v] {
                close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
            }
        }
    }

    #[test]
    fn gelu_matches_burns_forward_and_gradient() {
        let x = random::<Ad, 2>([7, 33], 5).require_grad();
        let w = random::<Ad, 2>([7, 33], 6);
        let fused = gelu(x.clone());
        let reference = burn::tensor::activation::gelu(x.clone());
        close(fused.clone(), reference.clone());
        close(gelu(x.clone().inner()), reference.clone().inner());
        let (g1, g2) = ((fused * w.clone()).sum().backward(), (reference * w).sum().backward());
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
    }

    #[test]
    fn layer_norm_matches_burns_forward_and_gradients() {
        let x = random::<Ad, 3>([3, 5, 16], 8).require_grad();
        let gamma = random::<Ad, 1>([16], 9).require_grad();
        let beta = random::<Ad, 1>([16], 10).require_grad();
        let w = random::<Ad, 3>([3, 5, 16], 11);
        let fused = layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5);
        let reference = layer_norm_reference(x.clone(), gamma.clone(), beta.clone(), 1e-5);
        close(fused.clone(), reference.clone());
        let (g1, g2) = ((fused * w.clone()).sum().backward(), (reference * w).sum().backward());
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
        close(gamma.grad(&g1).unwrap(), gamma.grad(&g2).unwrap());
        close(beta.grad(&g1).unwrap(), beta.grad(&g2).unwrap());
    }

    #[test]
    fn linear_matches_burns_forward_and_gradients() {
        // With and without a bias; sizes large enough for the threaded product too.
        for (n, i, o, bias) in [(5, 7, 3, true), (6, 4, 9, false), (160, 128, 112, true)] {
            let x = random::<Ad, 2>([n, i], 14).require_grad();
            let weight = random::<Ad, 2>([i, o], 15).require_grad();
            let b = bias.then(|| random::<Ad, 1>([o], 16).require_grad());
            let w = random::<Ad, 2>([n, o], 17);
            let fused = linear(x.clone(), weight.clone(), b.clone());
            let reference = burn::tensor::module::linear(x.clone(), weight.clone(), b.clone());
            close(fused.clone(), reference.clone());
            let plain = linear(x.clone().inner(), weight.clone().inner(), b.clone().map(|b| b.inner()));
            close(plain, reference.clone().inner());
            let (g1, g2) = ((fused * w.clone()).sum().backward(), (reference * w).sum().backward());
            close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
            close(weight.grad(&g1).unwrap(), weight.grad(&g2).unwrap());
            if let Some(b) = b {
                close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
            }
        }
    }

    #[test]
    fn adamw_is_burns_adamw_bit_for_bit() {
        use burn::optim::{AdamWConfig, SimpleOptimizer};
        for weight_decay in [0.0, 0.1] {
            let config = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.95).with_weight_decay(weight_decay);
            let burns = config.build();
            let (mut ours, mut theirs) = (random::<Flex, 2>([300, 70], 1), random::<Flex, 2>([300, 70], 1));
            let (mut moments, mut state) = (None, None);
            for time in 1..=3 {
                let grad = random::<Flex, 2>([300, 70], 10 + time as u64);
                let lr = 1e-2 / time as f64;
                let step = AdamWStep { lr, beta_1: 0.9, beta_2: 0.95, epsilon: 1e-5, weight_decay, time };
                let [p, m, v] = adamw(ours, grad.clone(), moments, step);
                (ours, moments) = (p, Some((m, v)));
                (theirs, state) = SimpleOptimizer::step(&burns, lr, theirs, grad, state);
                assert_eq!(ours.to_data(), theirs.to_data(), "step {time}, weight decay {weight_decay}");
                let s = state.as_ref().unwrap();
                let (m, v) = moments.as_ref().unwrap();
                assert_eq!((m.to_data(), v.to_data()), (s.momentum.moment_1.to_data(), s.momentum.moment_2.to_data()));
                // The reference path (other backends) is burn's too.
                let [p, ..] = adamw_reference(theirs.clone(), theirs.clone(), None, step);
                let [q, ..] = adamw(theirs.clone(), theirs.clone(), None, step);
                assert_eq!(p.to_data(), q.to_data());
            }
        }
    }

    #[test]
    fn sum_of_squares_matches_burns() {
        for n in [0, 1, 17, 3 * PART + 5] {
            let x = random::<Flex, 1>([n], 3);
            let ours = sum_of_squares(x.clone()).into_scalar();
            let theirs = x.powi_scalar(2).sum().into_scalar();
            assert!((ours - theirs).abs() <= 1e-5 * theirs.abs().max(1.0), "{n}: {ours} vs {theirs}");
        }
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
        let (gamma, beta) = (random::<Other, 1>([6], 12), random::<Other, 1>([6], 13));
        close(
            layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5),
            layer_norm_reference(x.clone(), gamma, beta, 1e-5),
        );
        let (rows, weight) = (x.reshape([8, 6]), random::<Other, 2>([6, 5], 14));
        close(linear(rows.clone(), weight.clone(), None), burn::tensor::module::linear(rows, weight, None));
    }
}
