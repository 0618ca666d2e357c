//! LayerNorm over the last dimension: its dispatch, burn's LayerNorm (what every backend but the
//! training one runs, plain flex included, which has a fused forward of its own), its autodiff op
//! with the hand-written backward, and the row-wise kernels. The forward pass keeps each row's
//! mean and `1 / sqrt(var + eps)` for the backward pass, which normalises the input again (the
//! same bits) rather than read back a stored copy: one pass over the activations fewer.
//!
//! RMSNorm (BST's text head), LayerNorm without the centring and the bias, shares the op: burn
//! records it as six ops with two broadcasts, each a pass forward and backward.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

use super::simd::{add_parts, dot, multiversion, rows_per_part, squared_deviations, sum};
use super::{Ad, f32s, flex, float, is, record, same, values};
use crate::par;

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
pub(super) fn layer_norm_reference<B: Backend, const D: usize>(
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

/// RMSNorm over the last dimension, `x / sqrt(mean(x²) + eps) * gamma`, as burn's `RmsNorm`
/// computes it; `x` `[..., d]`, `gamma` `[d]`.
pub fn rms_norm<B: Backend, const D: usize>(x: Tensor<B, D>, gamma: Tensor<B, 1>, epsilon: f64) -> Tensor<B, D> {
    if is::<B, Ad>() {
        return same(rms_norm_autodiff::<D>(same(x), same(gamma), epsilon));
    }
    if is::<B, Flex>() {
        let (x, gamma): (Tensor<Flex, D>, Tensor<Flex, 1>) = (same(x.clone()), same(gamma.clone()));
        let dims = x.dims();
        let (xc, gc) = (x.into_primitive().tensor().to_contiguous(), gamma.into_primitive().tensor().to_contiguous());
        if let (Some(xs), Some(gs)) = (f32s(&xc), f32s(&gc)) {
            let (out, ..) = norm_forward(xs, gs, None, epsilon as f32);
            return same(float::<Flex, D>(flex(out, dims)));
        }
    }
    rms_norm_reference(x, gamma, epsilon)
}

/// burn's RMSNorm (`burn::nn::RmsNorm::forward`), on every backend but flex's.
pub(super) fn rms_norm_reference<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let rms = (x.clone().square().mean_dim(D - 1) + epsilon).sqrt();
    (x / rms) * gamma.unsqueeze()
}

// ---------------------------------------------------------------------------------------------
// The autodiff ops.

/// LayerNorm's backward: the input, each row's mean and `1 / sqrt(var + eps)`, and gamma.
#[derive(Debug)]
struct LayerNormOp;

#[derive(Clone, Debug)]
struct LayerNormState {
    /// The input, contiguous (shared with the graph, not copied).
    x: FlexTensor,
    /// Each row's mean (zero for RMSNorm).
    mean: Vec<f32>,
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
        let (dx, dgamma, dbeta) = norm_backward(g, values(&s.x), &s.mean, &s.rstd, gamma, true);
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
    let (out, mean, rstd) = norm_forward(xs, gs, Some(bs), epsilon as f32);
    let out = flex(out, dims);
    let op = LayerNormOp.prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()]);
    record(op.compute_bound().stateful(), LayerNormState { x: xc, mean, rstd, gamma: gc, dims: dims.to_vec() }, out)
}

/// RMSNorm's backward: the input, each row's `1 / sqrt(mean(x²) + eps)`, and gamma.
#[derive(Debug)]
struct RmsNormOp;

impl Backward<Flex, 2> for RmsNormOp {
    type State = LayerNormState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let s = &ops.state;
        let gamma = values(&s.gamma);
        let (dx, dgamma, _) = norm_backward(values(&grad), values(&s.x), &s.mean, &s.rstd, gamma, false);
        let [px, pg] = ops.parents;
        for (parent, value, dims) in [(px, dx, s.dims.clone()), (pg, dgamma, vec![gamma.len()])] {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, flex(value, dims));
            }
        }
    }
}

fn rms_norm_autodiff<const D: usize>(x: Tensor<Ad, D>, gamma: Tensor<Ad, 1>, epsilon: f64) -> Tensor<Ad, D> {
    let dims = x.dims();
    let (x, gamma) = (x.into_primitive().tensor(), gamma.into_primitive().tensor());
    let (xc, gc) = (x.primitive.to_contiguous(), gamma.primitive.to_contiguous());
    let (Some(xs), Some(gs)) = (f32s(&xc), f32s(&gc)) else {
        return rms_norm_reference(float(x), float(gamma), epsilon);
    };
    let (out, mean, rstd) = norm_forward(xs, gs, None, epsilon as f32);
    let out = flex(out, dims);
    let op = RmsNormOp.prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone()]);
    record(op.compute_bound().stateful(), LayerNormState { x: xc, mean, rstd, gamma: gc, dims: dims.to_vec() }, out)
}

// ---------------------------------------------------------------------------------------------
// The kernels, on contiguous f32 rows: LayerNorm's with `beta`, RMSNorm's (no centring, no bias)
// without.

fn norm_forward(x: &[f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let rows = x.len() / d;
    let per = rows_per_part(d);
    // SAFETY: the kernel writes every element of its parts (a row's values, mean and rstd).
    let [out, mean, rstd] =
        unsafe {
            par::outputs_uninit(rows.div_ceil(per), [rows * d, rows, rows], [per * d, per, per], |i, [out, m, r]| {
                match beta {
                    Some(beta) => layer_norm_forward_kernel(&x[i * per * d..], gamma, beta, eps, out, m, r),
                    None => rms_norm_forward_kernel(&x[i * per * d..], gamma, eps, out, m, r),
                }
            })
        };
    (out, mean, rstd)
}

/// `dx`, `dgamma` and `dbeta` (zeros for RMSNorm, `centred` false, which has no beta).
fn norm_backward(
    g: &[f32],
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    gamma: &[f32],
    centred: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let rows = rstd.len();
    let per = rows_per_part(d);
    let parts = rows.div_ceil(per);
    // Each part's sums for dgamma and dbeta, side by side.
    // SAFETY: the kernel writes every element of `dx`'s part; the sums start zeroed.
    let [dx, partial] = unsafe {
        par::outputs_uninit(parts, [rows * d, parts * 2 * d], [per * d, 2 * d], |i, [dx, sums]| {
            let (first, count) = (i * per, per.min(rows - i * per));
            let (mean, rstd, at) = (&mean[first..][..count], &rstd[first..][..count], first * d);
            let (dgamma, dbeta) = par::zero(sums).split_at_mut(d);
            let centring = if centred { 1.0 } else { 0.0 };
            layer_norm_backward_kernel(&g[at..], &x[at..], mean, rstd, gamma, centring, dx, dgamma, dbeta);
        })
    };
    let mut dgamma = add_parts(&partial, 2 * d);
    let dbeta = dgamma.split_off(d);
    (dx, dgamma, dbeta)
}

multiversion! {
    fn layer_norm_forward_kernel(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        out: &mut [MaybeUninit<f32>],
        means: &mut [MaybeUninit<f32>],
        rstd: &mut [MaybeUninit<f32>],
    ) {
        let d = gamma.len();
        for r in 0..rstd.len() {
            let xr = &x[r * d..][..d];
            let mean = sum(xr) / d as f32;
            let var = squared_deviations(xr, mean) / d as f32;
            let inv = 1.0 / (var + eps).sqrt();
            means[r].write(mean);
            rstd[r].write(inv);
            let or = &mut out[r * d..][..d];
            for i in 0..d {
                // The backward kernel recomputes `n` with the same expression.
                let n = (xr[i] - mean) * inv;
                or[i].write(n * gamma[i] + beta[i]);
            }
        }
    }
}

multiversion! {
    fn layer_norm_backward_kernel(
        g: &[f32],
        x: &[f32],
        mean: &[f32],
        rstd: &[f32],
        gamma: &[f32],
        centring: f32,
        dx: &mut [MaybeUninit<f32>],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        // dx = rstd (a - mean(a) - x^ mean(a x^)) with a = g gamma; dgamma = sum g x^; dbeta = sum g.
        // RMSNorm (`centring` 0) has no mean to subtract, so its dx lacks the mean(a) term.
        let d = gamma.len();
        let (mut a, mut nr) = (vec![0.0f32; d], vec![0.0f32; d]);
        for r in 0..rstd.len() {
            let (gr, xr) = (&g[r * d..][..d], &x[r * d..][..d]);
            // The forward kernels' normalised row, bit for bit (RMSNorm's mean is 0, and x - 0 is x).
            for i in 0..d {
                nr[i] = (xr[i] - mean[r]) * rstd[r];
            }
            for i in 0..d {
                a[i] = gr[i] * gamma[i];
                dgamma[i] += gr[i] * nr[i];
                dbeta[i] += gr[i];
            }
            let m1 = centring * sum(&a) / d as f32;
            let m2 = dot(&a, &nr) / d as f32;
            let dxr = &mut dx[r * d..][..d];
            for i in 0..d {
                dxr[i].write(rstd[r] * (a[i] - m1 - nr[i] * m2));
            }
        }
    }
}

multiversion! {
    fn rms_norm_forward_kernel(
        x: &[f32],
        gamma: &[f32],
        eps: f32,
        out: &mut [MaybeUninit<f32>],
        means: &mut [MaybeUninit<f32>],
        rstd: &mut [MaybeUninit<f32>],
    ) {
        let d = gamma.len();
        for r in 0..rstd.len() {
            let xr = &x[r * d..][..d];
            let inv = 1.0 / (dot(xr, xr) / d as f32 + eps).sqrt();
            means[r].write(0.0);
            rstd[r].write(inv);
            let or = &mut out[r * d..][..d];
            for i in 0..d {
                let n = xr[i] * inv;
                or[i].write(n * gamma[i]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{close, random};

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
    fn rms_norm_matches_burns_forward_and_gradients() {
        let x = random::<Ad, 3>([3, 5, 16], 8).require_grad();
        let gamma = random::<Ad, 1>([16], 9).require_grad();
        let w = random::<Ad, 3>([3, 5, 16], 11);
        let module = burn::nn::RmsNormConfig::new(16).init::<Ad>(&Default::default());
        let eps = 1e-5;
        // The reference is burn's module's arithmetic (its gamma is ones; ours is random).
        close(rms_norm_reference(x.clone(), module.gamma.val(), eps), module.forward(x.clone()));
        let fused = rms_norm(x.clone(), gamma.clone(), eps);
        let reference = rms_norm_reference(x.clone(), gamma.clone(), eps);
        close(fused.clone(), reference.clone());
        close(rms_norm(x.clone().inner(), gamma.clone().inner(), eps), reference.clone().inner());
        let (g1, g2) = ((fused * w.clone()).sum().backward(), (reference * w).sum().backward());
        close(x.grad(&g1).unwrap(), x.grad(&g2).unwrap());
        close(gamma.grad(&g1).unwrap(), gamma.grad(&g2).unwrap());
    }
}
