//! Causal self-attention over heads packed side by side in `[b, t, d]`: its dispatch, burn's
//! attention on the same packing (the reference every other backend runs), its autodiff op with
//! the hand-written backward, and the kernels (per batch element and head, two small products
//! and a causal softmax over the rows). Keeping the softmax weights of the forward pass lets the
//! backward pass skip recomputing them.
//!
//! Two entry points: [`causal_attention`] on separate `q`, `k` and `v` (what a key/value cache
//! needs), and [`causal_attention_qkv`] on the three packed side by side in one `[b, t, 3d]`
//! tensor, which one product of the three projections computes at once and whose gradient that
//! product's backward takes whole. The kernels read either through a row stride.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::product::gemm_once;
use super::simd::{exp, max, multiversion};
use super::{Ad, f32s, flex, float, is, primitive, record, same, values};
use crate::par;

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
            let (out, _) = attention_forward(qs, ks, vs, shape, d);
            return same(float::<Flex, 3>(flex(out, [b, tq, d])));
        }
    }
    attention_reference(q, k, v, heads)
}

/// [`causal_attention`] over queries, keys and values packed side by side in each row of `qkv`
/// `[b, t, 3d]` (`[q | k | v]`, what one product with the three projections' weights side by side
/// computes); returns `[b, t, d]`. The same values as `causal_attention` on the three thirds, bit
/// for bit (tested), with its gradient as one `[b, t, 3d]` tensor: the projections then take one
/// product forward and two backward instead of three each, their input is packed for the
/// products once instead of three times, and its three gradients need no adding up.
pub fn causal_attention_qkv<B: Backend>(qkv: Tensor<B, 3>, heads: usize) -> Tensor<B, 3> {
    let [b, t, d3] = qkv.dims();
    let d = d3 / 3;
    assert!(d3 % 3 == 0 && d % heads == 0, "attention: packed width {d3} is not 3 x {heads} heads");
    let shape = Shape { b, tq: t, tk: t, h: heads, k: d / heads };
    if is::<B, Ad>() {
        return same(attention_qkv_autodiff(same(qkv), shape));
    }
    if is::<B, Flex>() {
        let packed = primitive::<3>(same(qkv.clone()));
        if let Some(x) = f32s(&packed) {
            let (out, _) = attention_forward(x, &x[d..], &x[2 * d..], shape, d3);
            return same(float::<Flex, 3>(flex(out, [b, t, d])));
        }
    }
    let third = |i: usize| qkv.clone().slice_dim(2, i * d..(i + 1) * d);
    attention_reference(third(0), third(1), third(2), heads)
}

/// burn's attention on the same packing: what every backend other than flex runs, and what the
/// kernels are tested against.
pub(super) fn attention_reference<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    heads: usize,
) -> Tensor<B, 3> {
    let [b, tq, d] = q.dims();
    let tk = k.dims()[1];
    let split = |x: Tensor<B, 3>, t| x.reshape([b, t, heads, d / heads]).swap_dims(1, 2); // [b, h, t, k]
    let options = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
    let y = attention(split(q, tq), split(k, tk), split(v, tk), None, None, options); // [b, h, tq, k]
    y.swap_dims(1, 2).reshape([b, tq, d])
}

// ---------------------------------------------------------------------------------------------
// The autodiff op.

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
    let (out, p) = attention_forward(qs, ks, vs, shape, shape.h * shape.k);
    let out = flex(out, [shape.b, shape.tq, shape.h * shape.k]);
    let op = AttentionOp.prepare::<NoCheckpointing>([q.node.clone(), k.node.clone(), v.node.clone()]);
    record(op.compute_bound().stateful(), AttentionState { q: qc, k: kc, v: vc, p, shape }, out)
}

/// The packed attention's backward: the packed input and the attention weights.
#[derive(Debug)]
struct AttentionQkvOp;

#[derive(Clone, Debug)]
struct AttentionQkvState {
    /// `[b, t, 3d]`, contiguous.
    qkv: FlexTensor,
    /// Softmax weights `[b, h, t, t]` (zero above the causal diagonal).
    p: Vec<f32>,
    shape: Shape,
}

impl Backward<Flex, 1> for AttentionQkvOp {
    type State = AttentionQkvState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let s = &ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let Shape { b, tq, h, k, .. } = s.shape;
            let dqkv = attention_backward_packed(values(&s.qkv), &s.p, values(&grad), s.shape);
            grads.register::<Flex>(node.id, flex(dqkv, [b, tq, 3 * h * k]));
        }
    }
}

fn attention_qkv_autodiff(qkv: Tensor<Ad, 3>, shape: Shape) -> Tensor<Ad, 3> {
    let d = shape.h * shape.k;
    let qkv = qkv.into_primitive().tensor();
    let packed = qkv.primitive.to_contiguous();
    let Some(x) = f32s(&packed) else {
        let qkv: Tensor<Ad, 3> = float(qkv);
        let third = |i: usize| qkv.clone().slice_dim(2, i * d..(i + 1) * d);
        return attention_reference(third(0), third(1), third(2), shape.h);
    };
    let (out, p) = attention_forward(x, &x[d..], &x[2 * d..], shape, 3 * d);
    let out = flex(out, [shape.b, shape.tq, d]);
    let op = AttentionQkvOp.prepare::<NoCheckpointing>([qkv.node.clone()]);
    record(op.compute_bound().stateful(), AttentionQkvState { qkv: packed, p, shape }, out)
}

// ---------------------------------------------------------------------------------------------
// The kernels, on contiguous f32 rows.

/// Sizes of an attention call: batch, queries, keys, heads, head width.
#[derive(Clone, Copy, Debug)]
struct Shape {
    b: usize,
    tq: usize,
    tk: usize,
    h: usize,
    k: usize,
}

/// `rows` rows of width `width` from row `first` of `x`, whose rows are `stride` apart: the
/// slice from the first row's start to the last row's end.
fn rows(x: &[f32], first: usize, rows: usize, stride: usize, width: usize) -> &[f32] {
    let len = if rows == 0 { 0 } else { (rows - 1) * stride + width };
    &x[first * stride..][..len]
}

/// Attention's output `[b, tq, d]` and softmax weights, for `q`, `k` and `v` whose rows (of `d`
/// values from each slice's start) are `stride` apart: `d` when they are separate tensors, `3d`
/// when packed in one.
fn attention_forward(q: &[f32], k: &[f32], v: &[f32], s: Shape, stride: usize) -> (Vec<f32>, Vec<f32>) {
    let Shape { b, tq, tk, h, k: w } = s;
    let d = h * w;
    let one = Shape { b: 1, ..s };
    let [out, p] = par::outputs(b, [b * tq * d, b * h * tq * tk], [tq * d, h * tq * tk], |i, [out, p]| {
        let (q, k, v) =
            (rows(q, i * tq, tq, stride, d), rows(k, i * tk, tk, stride, d), rows(v, i * tk, tk, stride, d));
        attention_forward_kernel(q, k, v, one, stride, out, p);
    });
    (out, p)
}

/// The gradients of separate `q`, `k` and `v`: `[dq, dk, dv]`, shaped as they are.
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
        attention_backward_kernel(q, k, v, p, go, one, d, Grads::Separate(grads, d));
    });
    (dq, dk, dv)
}

/// The gradient of the packed `qkv` `[b, t, 3d]`, in the same packing.
fn attention_backward_packed(qkv: &[f32], p: &[f32], go: &[f32], s: Shape) -> Vec<f32> {
    let Shape { b, tq: t, h, k: w, .. } = s;
    let d = h * w;
    let one = Shape { b: 1, ..s };
    let [dqkv] = par::outputs(b, [b * t * 3 * d], [t * 3 * d], |i, [grads]| {
        let x = &qkv[i * t * 3 * d..][..t * 3 * d];
        let (p, go) = (&p[i * h * t * t..][..h * t * t], &go[i * t * d..][..t * d]);
        attention_backward_kernel(x, &x[d..], &x[2 * d..], p, go, one, 3 * d, Grads::Packed(grads, d));
    });
    dqkv
}

/// Where one batch element's backward writes `dq`, `dk` and `dv`, each with `d` values a row:
/// three tensors, or the thirds of one packed `[t, 3d]`.
enum Grads<'a> {
    Separate([&'a mut [f32]; 3], usize),
    Packed(&'a mut [f32], usize),
}

impl Grads<'_> {
    /// Gradient `j` (0 for `q`, 1 for `k`, 2 for `v`) from its first element, and its row stride.
    fn part(&mut self, j: usize) -> (&mut [f32], usize) {
        match self {
            Grads::Separate(parts, d) => (&mut parts[j][..], *d),
            Grads::Packed(packed, d) => (&mut packed[j * *d..], 3 * *d),
        }
    }
}

/// One batch element's attention: `q` `[tq, d]`, `k` and `v` `[tk, d]`, their rows `stride`
/// apart; writes `out` `[tq, d]` and the softmax weights `p` `[h, tq, tk]` (zero above the causal
/// diagonal). Per head, the scores and the output are two small products (gemm; a dot product per
/// query and key, each with its horizontal sum, ran at ~8 GFLOP/s), the causal softmax a pass
/// over the rows.
fn attention_forward_kernel(q: &[f32], k: &[f32], v: &[f32], s: Shape, stride: usize, out: &mut [f32], p: &mut [f32]) {
    let Shape { tq, tk, h: nh, k: w, .. } = s;
    let d = nh * w;
    let scale = 1.0 / (w as f32).sqrt();
    for h in 0..nh {
        let ph = &mut p[h * tq * tk..][..tq * tk];
        // S = Q_h K_h^T, [tq, tk]: K_h^T read through K's strides.
        head_product(ph, tk, &q[h * w..], [stride, 1], &k[h * w..], [1, stride], [tq, w, tk]);
        softmax_rows(ph, tq, tk, scale);
        // O_h = P_h V_h, [tq, w], into the head's columns of `out`.
        head_product(&mut out[h * w..], d, ph, [tk, 1], &v[h * w..], [stride, 1], [tq, tk, w]);
    }
}

/// One batch element's attention gradients from the forward pass's inputs (rows `stride` apart),
/// its softmax weights `p` and the output's gradient `go` `[tq, d]`: `dq`, `dk` and `dv`, shaped
/// as `q`, `k` and `v`, into `grads`.
fn attention_backward_kernel(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    p: &[f32],
    go: &[f32],
    s: Shape,
    stride: usize,
    mut grads: Grads,
) {
    let Shape { tq, tk, h: nh, k: w, .. } = s;
    let d = nh * w;
    let scale = 1.0 / (w as f32).sqrt();
    let mut ds = vec![0.0f32; tq * tk];
    for h in 0..nh {
        let ph = &p[h * tq * tk..][..tq * tk];
        // dP = dO_h V_h^T; dS = P (dP - rowsum(P dP)) scale.
        head_product(&mut ds, tk, &go[h * w..], [d, 1], &v[h * w..], [1, stride], [tq, w, tk]);
        softmax_backward_rows(ph, &mut ds, tq, tk, scale);
        // dQ_h = dS K_h; dK_h = dS^T Q_h; dV_h = P_h^T dO_h (transposes read through strides).
        let (dq, rs) = grads.part(0);
        head_product(&mut dq[h * w..], rs, &ds, [tk, 1], &k[h * w..], [stride, 1], [tq, tk, w]);
        let (dk, rs) = grads.part(1);
        head_product(&mut dk[h * w..], rs, &ds, [1, tk], &q[h * w..], [stride, 1], [tk, tq, w]);
        let (dv, rs) = grads.part(2);
        head_product(&mut dv[h * w..], rs, ph, [1, tk], &go[h * w..], [d, 1], [tk, tq, w]);
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
    /// Scaled causal softmax of each row of the scores `p` `[tq, tk]` in place: query `i` sees
    /// keys `0..=i + tk - tq`; the rest become zero.
    fn softmax_rows(p: &mut [f32], tq: usize, tk: usize, scale: f32) {
        // Each pass is its own loop so that the elementwise ones vectorize: a float sum in the
        // same loop as `exp` kept all of it scalar (3.5% of the d 128 NTP step, LOG.md
        // 2026-12-02). The sum stays in order, so the results are bit for bit the one-loop
        // version's; the maximum is exact in any order.
        for i in 0..tq {
            let seen = i + tk - tq + 1;
            let (live, masked) = p[i * tk..][..tk].split_at_mut(seen);
            for pj in live.iter_mut() {
                *pj *= scale;
            }
            let top = max(live);
            for pj in live.iter_mut() {
                *pj = exp(*pj - top);
            }
            let mut sum = 0.0;
            for pj in live.iter() {
                sum += *pj;
            }
            let inv = 1.0 / sum;
            for pj in live.iter_mut() {
                *pj *= inv;
            }
            masked.fill(0.0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{close, random};

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
    fn packed_attention_is_the_separate_one_bit_for_bit() {
        // Four heads of width 8, batch 3, 11 positions: the values and the three gradients.
        let qkv = random::<Ad, 3>([3, 11, 96], 5).require_grad();
        let w = random::<Ad, 3>([3, 11, 32], 6);
        let third = |i: usize| qkv.clone().slice_dim(2, i * 32..(i + 1) * 32);
        let (q, k, v) = (third(0), third(1), third(2));
        // The thirds as leaves of their own, so that their gradients come out separately.
        let leaf = |x: Tensor<Ad, 3>| Tensor::<Ad, 3>::from_data(x.into_data(), &Default::default()).require_grad();
        let (q, k, v) = (leaf(q), leaf(k), leaf(v));
        let packed = causal_attention_qkv(qkv.clone(), 4);
        let separate = causal_attention(q.clone(), k.clone(), v.clone(), 4);
        assert_eq!(packed.clone().into_data(), separate.clone().into_data());
        assert_eq!(
            causal_attention_qkv(qkv.clone().inner(), 4).into_data(),
            separate.clone().inner().into_data(),
            "plain flex"
        );
        close(packed.clone(), attention_reference(third(0), third(1), third(2), 4));
        let (g1, g2) = ((packed * w.clone()).sum().backward(), (separate * w).sum().backward());
        let dqkv = qkv.grad(&g1).unwrap();
        for (i, x) in [q, k, v].iter().enumerate() {
            let part = dqkv.clone().slice_dim(2, i * 32..(i + 1) * 32);
            assert_eq!(part.into_data(), x.grad(&g2).unwrap().into_data(), "gradient {i}");
        }
    }

    #[test]
    fn the_softmax_is_bit_for_bit_its_one_loop_definition() {
        // The kernel splits the passes so that they vectorize; each value must stay the scalar
        // definition's exactly (the running sum in order, the same `exp`).
        let (tq, tk, scale) = (21, 37, 0.17);
        let scores: Vec<f32> = (0..tq * tk).map(|i| ((i * 7919) % 1013) as f32 / 37.0 - 13.0).collect();
        let mut fused = scores.clone();
        softmax_rows(&mut fused, tq, tk, scale);
        let mut expected = scores;
        for i in 0..tq {
            let seen = i + tk - tq + 1;
            let row = &mut expected[i * tk..][..tk];
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
            for pj in row[..seen].iter_mut() {
                *pj *= 1.0 / sum;
            }
            row[seen..].fill(0.0);
        }
        assert!(fused.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}
