//! Two tensors side by side along their last dimension, `[.., da]` and `[.., db]` into
//! `[.., da + db]`: the input of NextLat's transition (`[e; h]`), of BST's head (`[f; b]`) and of
//! the other heads that read a pair of vectors.
//!
//! Why an op of its own: burn's `cat` backward hands each input a strided view of the output's
//! gradient (every row's first `da` or last `db` elements). Wherever that input's gradient meets
//! another (NextLat's `h` also feeds the residual), burn adds the two through flex's strided
//! iterator, element by element, and embeddings copy the view before their scatter: 11% of the
//! main thread of a NextLat step, serial, more than the cat itself (LOG.md, 2026-12-02). Here the
//! backward writes each input's gradient as a contiguous tensor, in parallel row blocks.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::simd::rows_per_part;
use super::{Ad, f32s, flex, float, is, primitive, record, same, values};
use crate::par;

/// `[a; b]` along the last dimension: `a` `[.., da]` and `b` `[.., db]` (the same leading
/// dimensions) into `[.., da + db]`. Gradients flow to both.
///
/// # Panics
/// When the leading dimensions differ.
pub fn cat_last<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    let (da, db) = (a.dims(), b.dims());
    assert_eq!(da[..D - 1], db[..D - 1], "cat_last: leading dimensions {da:?} and {db:?} differ");
    if is::<B, Ad>() {
        return same(cat_autodiff::<D>(same(a), same(b)));
    }
    if is::<B, Flex>() {
        let (ap, bp) = (primitive::<D>(same(a.clone())), primitive::<D>(same(b.clone())));
        if let (Some(x), Some(y)) = (f32s(&ap), f32s(&bp)) {
            return same(float::<Flex, D>(flex(join(x, y, da[D - 1], db[D - 1]), out_dims(da, db))));
        }
    }
    Tensor::cat(vec![a, b], D - 1)
}

fn out_dims<const D: usize>(da: [usize; D], db: [usize; D]) -> Vec<usize> {
    let mut dims = da.to_vec();
    dims[D - 1] += db[D - 1];
    dims
}

// ---------------------------------------------------------------------------------------------
// The autodiff op.

/// The backward of [`cat_last`]: the output's gradient cut back into the two inputs' widths.
#[derive(Debug)]
struct CatOp;

impl Backward<Flex, 2> for CatOp {
    /// The inputs' shapes.
    type State = (Vec<usize>, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (dims_a, dims_b) = &ops.state;
        let (wa, wb) = (dims_a[dims_a.len() - 1], dims_b[dims_b.len() - 1]);
        let [pa, pb] = ops.parents;
        let (ga, gb) = split(values(&grad), wa, wb, pa.is_some(), pb.is_some());
        if let Some(node) = pa {
            grads.register::<Flex>(node.id, flex(ga, dims_a.clone()));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, flex(gb, dims_b.clone()));
        }
    }
}

fn cat_autodiff<const D: usize>(a: Tensor<Ad, D>, b: Tensor<Ad, D>) -> Tensor<Ad, D> {
    let (da, db) = (a.dims(), b.dims());
    let (a, b) = (a.into_primitive().tensor(), b.into_primitive().tensor());
    let (ac, bc) = (a.primitive.to_contiguous(), b.primitive.to_contiguous());
    let (Some(x), Some(y)) = (f32s(&ac), f32s(&bc)) else {
        return Tensor::cat(vec![float(a), float(b)], D - 1);
    };
    let out = flex(join(x, y, da[D - 1], db[D - 1]), out_dims(da, db));
    let op = CatOp.prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()]);
    record(op.compute_bound().stateful(), (da.to_vec(), db.to_vec()), out)
}

// ---------------------------------------------------------------------------------------------
// The kernels: row copies in parallel blocks of rows.

/// Rows of `x` (width `wa`) and `y` (width `wb`) side by side.
fn join(x: &[f32], y: &[f32], wa: usize, wb: usize) -> Vec<f32> {
    let w = wa + wb;
    let rows = (x.len() + y.len()).checked_div(w).unwrap_or(0);
    let per = rows_per_part(w);
    // SAFETY: every task writes each element of its part (all of its rows, both halves).
    let [out] = unsafe {
        par::outputs_uninit(rows.div_ceil(per), [rows * w], [per * w], |i, [out]| {
            let r0 = i * per;
            for (k, row) in out.chunks_exact_mut(w).enumerate() {
                let r = r0 + k;
                copy(&x[r * wa..][..wa], &mut row[..wa]);
                copy(&y[r * wb..][..wb], &mut row[wa..]);
            }
        })
    };
    out
}

/// The gradient `g` (rows of width `wa + wb`) cut into its first `wa` and last `wb` columns;
/// an unwanted part comes back empty.
fn split(g: &[f32], wa: usize, wb: usize, want_a: bool, want_b: bool) -> (Vec<f32>, Vec<f32>) {
    let w = wa + wb;
    let rows = g.len().checked_div(w).unwrap_or(0);
    let per = rows_per_part(w);
    let (la, lb) = (if want_a { rows * wa } else { 0 }, if want_b { rows * wb } else { 0 });
    let (pa, pb) = (if want_a { per * wa } else { 0 }, if want_b { per * wb } else { 0 });
    // SAFETY: every task writes each element of its parts (the wanted halves of its rows).
    let [ga, gb] = unsafe {
        par::outputs_uninit(rows.div_ceil(per), [la, lb], [pa, pb], |i, [ga, gb]| {
            let r0 = i * per;
            let n = per.min(rows - r0);
            for k in 0..n {
                let row = &g[(r0 + k) * w..][..w];
                if want_a {
                    copy(&row[..wa], &mut ga[k * wa..][..wa]);
                }
                if want_b {
                    copy(&row[wa..], &mut gb[k * wb..][..wb]);
                }
            }
        })
    };
    (ga, gb)
}

fn copy(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and writing initialises.
    let dst = unsafe { &mut *(dst as *mut [MaybeUninit<f32>] as *mut [f32]) };
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{close, random};

    #[test]
    fn cat_last_matches_burns_cat_and_its_gradients() {
        // Widths that are not multiples of a vector, and enough rows for several parts.
        let a = random::<Ad, 3>([3, 700, 5], 40).require_grad();
        let b = random::<Ad, 3>([3, 700, 11], 41).require_grad();
        let w = random::<Ad, 3>([3, 700, 16], 42);
        let fused = cat_last(a.clone(), b.clone());
        let reference = Tensor::cat(vec![a.clone(), b.clone()], 2);
        assert_eq!(fused.clone().into_data(), reference.clone().into_data());
        // `a` also feeds another op, so its two gradients meet (the case the op is for).
        let extra = || a.clone().mul_scalar(3.0).sum();
        let g1 = ((fused * w.clone()).sum() + extra()).backward();
        let g2 = ((reference * w).sum() + extra()).backward();
        close(a.grad(&g1).unwrap(), a.grad(&g2).unwrap());
        close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
        // On plain flex (evaluation) the forward kernel runs.
        let (x, y) = (random::<Flex, 2>([9, 3], 43), random::<Flex, 2>([9, 4], 44));
        assert_eq!(cat_last(x.clone(), y.clone()).into_data(), Tensor::cat(vec![x, y], 1).into_data());
    }

    #[test]
    fn only_the_inputs_that_need_a_gradient_get_one() {
        let a = random::<Ad, 2>([4, 3], 45).require_grad();
        let b = random::<Ad, 2>([4, 2], 46);
        let grads = cat_last(a.clone(), b.clone()).sum().backward();
        close(a.grad(&grads).unwrap(), a.clone().inner().ones_like());
        assert!(b.grad(&grads).is_none());
    }
}
