//! The residual connection of a block that computes only the positions from `from` on
//! (`Block::forward_from`): `x[:, from..] + y`, as one op. burn records it as a slice and an add;
//! on flex the add reads the sliced stream through its generic strided iterator, one element at a
//! time on one core, and the slice's backward zero-fills and writes back the whole stream: ~4% of
//! the tiny model's step (LOG.md, 2026-12-07), for a copy.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::{Ad, f32s, flex, float, is, primitive, record, same, values};
use crate::par;

/// `x[:, from..] + y` for a residual stream `x` `[b, t, d]` and a block's output `y`
/// `[b, t − from, d]`. Gradients flow to both (to `x`'s positions from `from` on).
///
/// # Panics
/// When the shapes do not fit, or `from` is not one of `x`'s positions.
pub fn add_suffix<B: Backend>(x: Tensor<B, 3>, from: usize, y: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    assert!(from < t && y.dims() == [b, t - from, d], "add_suffix: {:?} from {from} and {:?}", x.dims(), y.dims());
    if is::<B, Ad>() {
        return same(add_suffix_autodiff(same(x), from, same(y)));
    }
    if is::<B, Flex>() {
        let (xp, yp) = (primitive::<3>(same(x.clone())), primitive::<3>(same(y.clone())));
        if let (Some(xs), Some(ys)) = (f32s(&xp), f32s(&yp)) {
            return same(float::<Flex, 3>(flex(forward(xs, ys, [b, t, d], from), [b, t - from, d])));
        }
    }
    add_suffix_reference(x, from, y)
}

/// burn's ops for [`add_suffix`], on every backend but flex's.
pub(super) fn add_suffix_reference<B: Backend>(x: Tensor<B, 3>, from: usize, y: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, _] = x.dims();
    x.slice([0..b, from..t]) + y
}

// ---------------------------------------------------------------------------------------------
// The autodiff op.

/// The backward: the gradient goes to `y` as it is, and to `x`'s positions from `from` on.
#[derive(Debug)]
struct AddSuffixOp;

impl Backward<Flex, 2> for AddSuffixOp {
    /// `x`'s shape and `from`.
    type State = ([usize; 3], usize);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let ([b, t, d], from) = ops.state;
        let [px, py] = ops.parents;
        if let Some(node) = px {
            grads.register::<Flex>(node.id, flex(backward_x(values(&grad), [b, t, d], from), [b, t, d]));
        }
        if let Some(node) = py {
            grads.register::<Flex>(node.id, grad);
        }
    }
}

fn add_suffix_autodiff(x: Tensor<Ad, 3>, from: usize, y: Tensor<Ad, 3>) -> Tensor<Ad, 3> {
    let [b, t, d] = x.dims();
    let (xa, ya) = (x.into_primitive().tensor(), y.into_primitive().tensor());
    let (xc, yc) = (xa.primitive.to_contiguous(), ya.primitive.to_contiguous());
    let (Some(xs), Some(ys)) = (f32s(&xc), f32s(&yc)) else {
        return add_suffix_reference(float(xa), from, float(ya));
    };
    let out = flex(forward(xs, ys, [b, t, d], from), [b, t - from, d]);
    let op = AddSuffixOp.prepare::<NoCheckpointing>([xa.node.clone(), ya.node.clone()]);
    record(op.compute_bound().stateful(), ([b, t, d], from), out)
}

// ---------------------------------------------------------------------------------------------
// The kernels, one sequence per part.

fn forward(x: &[f32], y: &[f32], [b, t, d]: [usize; 3], from: usize) -> Vec<f32> {
    let n = (t - from) * d;
    // SAFETY: each part writes every element of its sequence.
    let [out] = unsafe {
        par::outputs_uninit(b, [b * n], [n], |i, [out]| {
            let (xs, ys) = (&x[i * t * d + from * d..(i + 1) * t * d], &y[i * n..(i + 1) * n]);
            for ((o, a), c) in out.iter_mut().zip(xs).zip(ys) {
                *o = MaybeUninit::new(a + c);
            }
        })
    };
    out
}

fn backward_x(g: &[f32], [b, t, d]: [usize; 3], from: usize) -> Vec<f32> {
    let n = (t - from) * d;
    // SAFETY: each part writes every element of its sequence: zeros before `from`, then `g`.
    let [dx] = unsafe {
        par::outputs_uninit(b, [b * t * d], [t * d], |i, [dx]| {
            let (before, after) = dx.split_at_mut(from * d);
            before.fill(MaybeUninit::new(0.0));
            for (o, &v) in after.iter_mut().zip(&g[i * n..(i + 1) * n]) {
                *o = MaybeUninit::new(v);
            }
        })
    };
    dx
}

#[cfg(test)]
mod tests {
    use burn::backend::Autodiff;
    use burn::backend::flex::FlexDevice;
    use burn::tensor::Tolerance;

    use super::*;
    use crate::tests::{close, random};

    #[test]
    fn the_sum_and_both_gradients_are_burns() {
        for from in [0, 1, 4] {
            let (x, y) = (random::<Ad, 3>([3, 5, 7], 1), random::<Ad, 3>([3, 5 - from, 7], 2));
            let (x, y) = (x.require_grad(), y.require_grad());
            let w = random::<Ad, 3>([3, 5 - from, 7], 3);
            let fused = add_suffix(x.clone(), from, y.clone());
            let reference = add_suffix_reference(x.clone(), from, y.clone());
            close(fused.clone(), reference.clone());
            let (g1, g2) = ((fused * w.clone()).sum().backward(), (reference * w).sum().backward());
            for (a, b) in [(x.grad(&g1), x.grad(&g2)), (y.grad(&g1), y.grad(&g2))] {
                a.unwrap().into_data().assert_approx_eq::<f32>(&b.unwrap().into_data(), Tolerance::absolute(0.0));
            }
            // Without autodiff (evaluation), the same values.
            let (xi, yi) = (x.inner(), y.inner());
            close(add_suffix::<Flex>(xi.clone(), from, yi.clone()), add_suffix_reference(xi, from, yi));
        }
        // A backend the kernels do not serve takes burn's ops.
        type Other = Autodiff<Ad>;
        let (x, y) = (random::<Other, 3>([2, 4, 3], 4), random::<Other, 3>([2, 1, 3], 5));
        close(add_suffix(x.clone(), 3, y.clone()), add_suffix_reference(x, 3, y));
    }

    #[test]
    #[should_panic(expected = "add_suffix")]
    fn shapes_that_do_not_fit_panic() {
        let _ = add_suffix(Tensor::<Flex, 3>::zeros([2, 4, 3], &FlexDevice), 1, Tensor::zeros([2, 2, 3], &FlexDevice));
    }
}
