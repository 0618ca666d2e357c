//! GELU, `0.5 x (1 + erf(x / sqrt 2))`: its dispatch, its autodiff op with the hand-written
//! backward, and the elementwise kernels, which use the vectorizable `erf` and `exp` of
//! `simd.rs` instead of burn's scalar `erf` from `libm`.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::simd::{PART, erf, exp, multiversion};
use super::{Ad, f32s, flex, float, is, primitive, record, same, values};
use crate::par;

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

// ---------------------------------------------------------------------------------------------
// The autodiff op.

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

// ---------------------------------------------------------------------------------------------
// The kernels, on contiguous f32 rows.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{close, random};

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
}
