//! The linear map `x W + b` over rows: its dispatch, its autodiff op with the hand-written
//! backward (both gradients' products read the transposes through strides, and the bias's
//! gradient is a parallel sum of columns), and its forward kernel. The products themselves are in
//! `product.rs`, which attention shares.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::bf16::{bf16_products, product_bf16};
use super::product::product;
use super::simd::{add_parts, axpy, rows_per_part};
use super::{Ad, f32s, flex, float, is, optional, primitive, record, same, values};
use crate::par;

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

// ---------------------------------------------------------------------------------------------
// The autodiff op.

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
                0 => flex(matmul(g, [o as isize, 1], values(&s.weight), [1, o as isize], [n, o, i], None), [n, i]),
                // dW = x^T g: [i, n] x [n, o], x^T read through x's strides.
                1 => flex(matmul(values(&s.x), [1, i as isize], g, [o as isize, 1], [i, n, o], None), [i, o]),
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
// The kernels, on contiguous f32 rows.

/// `x W (+ b)`: `x` `[n, i]`, `w` `[i, o]`, `b` `[o]`, row-major.
fn linear_forward(x: &[f32], w: &[f32], b: Option<&[f32]>, [n, i, o]: [usize; 3]) -> Vec<f32> {
    matmul(x, [i as isize, 1], w, [o as isize, 1], [n, i, o], b)
}

/// The linear map's products: f32 through gemm, or with bf16 inputs once
/// [`set_bf16_products`](super::set_bf16_products) turned those on.
fn matmul(
    lhs: &[f32],
    lhs_strides: [isize; 2],
    rhs: &[f32],
    rhs_strides: [isize; 2],
    mkn: [usize; 3],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    if bf16_products() {
        product_bf16(lhs, lhs_strides, rhs, rhs_strides, mkn, bias)
    } else {
        product(lhs, lhs_strides, rhs, rhs_strides, mkn, bias)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{close, random};

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
}
