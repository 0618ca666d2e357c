//! SwiGLU's gate, `silu(g) · u` = `g σ(g) u`, as one op: its dispatch, its autodiff op with the
//! hand-written backward, and the elementwise kernels. burn records it as three ops (sigmoid,
//! two products), each a pass over the hidden activations forward and backward; BST's text head
//! runs it on its widest tensors.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use burn::tensor::backend::Backend;

use super::simd::{PART, exp, multiversion};
use super::{Ad, f32s, flex, float, is, primitive, record, same, values};
use crate::par;

/// `silu(gate) · up` elementwise, `silu(g) = g σ(g)`; `gate` and `up` have the same shape.
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    assert_eq!(gate.dims(), up.dims(), "swiglu: gate and up differ in shape");
    if is::<B, Ad>() {
        return same(swiglu_autodiff::<D>(same(gate), same(up)));
    }
    if is::<B, Flex>() {
        let (gp, up_p) = (primitive::<D>(same(gate.clone())), primitive::<D>(same(up.clone())));
        if let (Some(g), Some(u)) = (f32s(&gp), f32s(&up_p)) {
            let [y, _] = swiglu_forward(g, u, false);
            return same(float::<Flex, D>(flex(y, gate.dims())));
        }
    }
    swiglu_reference(gate, up)
}

/// burn's ops for [`swiglu`], on every backend but flex's.
pub(super) fn swiglu_reference<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    silu(gate) * up
}

// ---------------------------------------------------------------------------------------------
// The autodiff op.

/// SwiGLU's backward: the inputs and `silu(g)`, which the gradient of `up` is.
#[derive(Debug)]
struct SwigluOp;

impl Backward<Flex, 2> for SwigluOp {
    /// The gate's and up's values, `silu(gate)`, and the shape.
    type State = (FlexTensor, FlexTensor, Vec<f32>, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (g, u, silu_g, dims) = &ops.state;
        let [pg, pu] = ops.parents;
        let dy = values(&grad);
        if let Some(node) = pg {
            grads.register::<Flex>(node.id, flex(gate_backward(values(g), values(u), dy), dims.clone()));
        }
        if let Some(node) = pu {
            grads.register::<Flex>(node.id, flex(product(silu_g, dy), dims.clone()));
        }
    }
}

fn swiglu_autodiff<const D: usize>(gate: Tensor<Ad, D>, up: Tensor<Ad, D>) -> Tensor<Ad, D> {
    let dims = gate.dims();
    let (g, u) = (gate.into_primitive().tensor(), up.into_primitive().tensor());
    let (gc, uc) = (g.primitive.to_contiguous(), u.primitive.to_contiguous());
    let (Some(gs), Some(us)) = (f32s(&gc), f32s(&uc)) else {
        return swiglu_reference(float(g), float(u));
    };
    let [y, silu_g] = swiglu_forward(gs, us, true);
    let op = SwigluOp.prepare::<NoCheckpointing>([g.node.clone(), u.node.clone()]);
    record(op.compute_bound().stateful(), (gc, uc, silu_g, dims.to_vec()), flex(y, dims))
}

// ---------------------------------------------------------------------------------------------
// The kernels, on contiguous f32 elements.

/// `silu(g) u` and, when `keep`, `silu(g)` (empty otherwise).
fn swiglu_forward(g: &[f32], u: &[f32], keep: bool) -> [Vec<f32>; 2] {
    let n = g.len();
    let kept = if keep { n } else { 0 };
    // SAFETY: the kernel writes every element of its parts.
    unsafe {
        par::outputs_uninit(n.div_ceil(PART), [n, kept], [PART, if keep { PART } else { 0 }], |i, [y, s]| {
            swiglu_kernel(&g[i * PART..], &u[i * PART..], y, s);
        })
    }
}

/// `dy u silu'(g)`, with `silu'(g) = σ(g) (1 + g (1 − σ(g)))`.
fn gate_backward(g: &[f32], u: &[f32], dy: &[f32]) -> Vec<f32> {
    let n = g.len();
    // SAFETY: the kernel writes every element of its part.
    let [dg] = unsafe {
        par::outputs_uninit(n.div_ceil(PART), [n], [PART], |i, [dg]| {
            gate_backward_kernel(&g[i * PART..], &u[i * PART..], &dy[i * PART..], dg);
        })
    };
    dg
}

/// `a b` elementwise.
fn product(a: &[f32], b: &[f32]) -> Vec<f32> {
    let n = a.len();
    // SAFETY: the kernel writes every element of its part.
    let [y] = unsafe {
        par::outputs_uninit(n.div_ceil(PART), [n], [PART], |i, [y]| product_kernel(&a[i * PART..], &b[i * PART..], y))
    };
    y
}

/// `σ(x) = 1 / (1 + e^-x)` through `e^-|x|` (the `exp` of `simd.rs` takes `x <= 0`), which
/// also keeps it exact at both tails.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 { r } else { e * r }
}

multiversion! {
    fn swiglu_kernel(g: &[f32], u: &[f32], y: &mut [MaybeUninit<f32>], s: &mut [MaybeUninit<f32>]) {
        let n = y.len();
        let (g, u) = (&g[..n], &u[..n]);
        for i in 0..n {
            y[i].write(g[i] * sigmoid(g[i]) * u[i]);
        }
        // A second pass for the kept silu(g) keeps the first loop free of a branch.
        let s_len = s.len();
        for i in 0..s_len {
            s[i].write(g[i] * sigmoid(g[i]));
        }
    }
}

multiversion! {
    fn gate_backward_kernel(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [MaybeUninit<f32>]) {
        let n = dg.len();
        let (g, u, dy) = (&g[..n], &u[..n], &dy[..n]);
        for i in 0..n {
            let sig = sigmoid(g[i]);
            dg[i].write(dy[i] * u[i] * sig * (1.0 + g[i] * (1.0 - sig)));
        }
    }
}

multiversion! {
    fn product_kernel(a: &[f32], b: &[f32], y: &mut [MaybeUninit<f32>]) {
        let n = y.len();
        let (a, b) = (&a[..n], &b[..n]);
        for i in 0..n {
            y[i].write(a[i] * b[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{close, random};

    #[test]
    fn swiglu_matches_burns_forward_and_gradients() {
        // 40 000 elements: more than one part, and a ragged last one.
        let g = random::<Ad, 2>([50, 800], 21).require_grad();
        let u = random::<Ad, 2>([50, 800], 22).require_grad();
        let w = random::<Ad, 2>([50, 800], 23);
        let fused = swiglu(g.clone(), u.clone());
        let reference = swiglu_reference(g.clone(), u.clone());
        close(fused.clone(), reference.clone());
        close(swiglu(g.clone().inner(), u.clone().inner()), reference.clone().inner());
        let (g1, g2) = ((fused * w.clone()).sum().backward(), (reference * w).sum().backward());
        close(g.grad(&g1).unwrap(), g.grad(&g2).unwrap());
        close(u.grad(&g1).unwrap(), u.grad(&g2).unwrap());
    }
}
