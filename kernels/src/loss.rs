//! Two weighted, row-wise losses that objectives' auxiliary heads sum over positions: SmoothL1
//! between two `[b, t, d]` tensors and the KL divergence from a teacher's to a student's softmax
//! over `[b, t, v]` logits. Each is one op (one pass forward, one backward) where burn's ops are
//! a chain of ~10 recorded elementwise ops, each a pass over memory with its own backward, which
//! was most of what NextLat's latent and KL terms cost beyond their matrix products (LOG.md,
//! 2026-12-01).
//!
//! Both return the weighted sum over rows as a `[1]` tensor; callers divide by their own count.
//! Weights are constants (no gradient flows to them), and so is the teacher of the KL.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;

use super::simd::{exp, lanes, max, multiversion, rows_per_part};
use super::{Ad, f32s, flex, float, is, record, same, values};
use crate::par;

/// `sum_r w_r sum_j smoothl1(a_rj - b_rj)` over the rows `r` of `a` and `b` `[b, t, d]`, with
/// `w` `[b, t]` and SmoothL1 with β = 1 (`½x²` for `|x| < 1`, `|x| − ½` beyond), as `[1]`.
/// Gradients flow to `a` and `b`.
pub fn smooth_l1<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 1> {
    if is::<B, Ad>() {
        return same(smooth_l1_autodiff(same(a), same(b), same(w)));
    }
    if is::<B, Flex>() {
        let (a, b, w): (Tensor<Flex, 3>, Tensor<Flex, 3>, Tensor<Flex, 2>) = (same(a), same(b), same(w));
        let d = a.dims()[2];
        let (ap, bp, wp) = (contiguous(a), contiguous(b), contiguous(w));
        if let (Some(x), Some(y), Some(ws)) = (f32s(&ap), f32s(&bp), f32s(&wp)) {
            let (loss, _) = smooth_l1_forward(x, y, ws, d, false);
            return same(float::<Flex, 1>(flex(vec![loss], [1])));
        }
        return same(smooth_l1_reference(float::<Flex, 3>(ap), float(bp), float(wp)));
    }
    smooth_l1_reference(a, b, w)
}

/// `sum_r w_r KL(softmax(teacher_r) || softmax(student_r))` over the rows `r` of the logits
/// `[b, t, v]`, with `w` `[b, t]`, as `[1]`. The gradient flows to `student` only: the teacher
/// is a target (as in distillation, or NextLat's KL to the model's own next-token distribution).
pub fn distillation_kl<B: Backend>(student: Tensor<B, 3>, teacher: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 1> {
    if is::<B, Ad>() {
        return same(kl_autodiff(same(student), same(teacher), same(w)));
    }
    if is::<B, Flex>() {
        let (s, t, w): (Tensor<Flex, 3>, Tensor<Flex, 3>, Tensor<Flex, 2>) = (same(student), same(teacher), same(w));
        let v = s.dims()[2];
        let (sp, tp, wp) = (contiguous(s), contiguous(t), contiguous(w));
        if let (Some(ss), Some(ts), Some(ws)) = (f32s(&sp), f32s(&tp), f32s(&wp)) {
            let (loss, _) = kl_forward(ss, ts, ws, v);
            return same(float::<Flex, 1>(flex(vec![loss], [1])));
        }
        return same(kl_reference(float::<Flex, 3>(sp), float(tp), float(wp)));
    }
    kl_reference(student, teacher, w)
}

fn contiguous<const D: usize>(x: Tensor<Flex, D>) -> FlexTensor {
    x.into_primitive().tensor().to_contiguous()
}

/// burn's ops for [`smooth_l1`], on every backend but flex's.
pub(super) fn smooth_l1_reference<B: Backend>(a: Tensor<B, 3>, b: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 1> {
    let x = (a - b).abs();
    let small = x.clone().clamp_max(1.0);
    let per = small.clone().powi_scalar(2).mul_scalar(0.5) + (x - small);
    (per * w.detach().unsqueeze_dim::<3>(2)).sum()
}

/// burn's ops for [`distillation_kl`], on every backend but flex's.
pub(super) fn kl_reference<B: Backend>(student: Tensor<B, 3>, teacher: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_t = log_softmax(teacher.detach(), 2);
    let per = (log_t.clone().exp() * (log_t - log_softmax(student, 2))).sum_dim(2).squeeze_dim::<2>(2);
    (per * w.detach()).sum()
}

// ---------------------------------------------------------------------------------------------
// The autodiff ops.

/// SmoothL1's backward: each element's clamped difference `clamp(a - b, -1, 1)` (the derivative)
/// and the weights.
#[derive(Debug)]
struct SmoothL1Op;

impl Backward<Flex, 2> for SmoothL1Op {
    /// The clamped differences, the weights, and the inputs' shape.
    type State = (Vec<f32>, FlexTensor, Vec<usize>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = values(&grads.consume::<Flex>(&ops.node).to_contiguous())[0];
        let (slope, w, dims) = &ops.state;
        let [pa, pb] = ops.parents;
        let d = dims[2];
        let w = values(w);
        if let Some(node) = pa {
            grads.register::<Flex>(node.id, flex(scale_rows(slope, w, g, d), dims.clone()));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, flex(scale_rows(slope, w, -g, d), dims.clone()));
        }
    }
}

fn smooth_l1_autodiff(a: Tensor<Ad, 3>, b: Tensor<Ad, 3>, w: Tensor<Ad, 2>) -> Tensor<Ad, 1> {
    let dims = a.dims();
    let (a, b, w) = (a.into_primitive().tensor(), b.into_primitive().tensor(), w.into_primitive().tensor());
    let (ac, bc, wc) = (a.primitive.to_contiguous(), b.primitive.to_contiguous(), w.primitive.to_contiguous());
    let (Some(x), Some(y), Some(ws)) = (f32s(&ac), f32s(&bc), f32s(&wc)) else {
        return smooth_l1_reference(float(a), float(b), float(w));
    };
    let (loss, slope) = smooth_l1_forward(x, y, ws, dims[2], true);
    let op = SmoothL1Op.prepare::<NoCheckpointing>([a.node.clone(), b.node.clone()]);
    record(op.compute_bound().stateful(), (slope, wc, dims.to_vec()), flex(vec![loss], [1]))
}

/// The KL's backward: the student's log-softmax, the teacher's softmax, and the weights.
#[derive(Debug)]
struct KlOp;

#[derive(Clone, Debug)]
struct KlState {
    log_student: Vec<f32>,
    teacher: Vec<f32>,
    w: FlexTensor,
    dims: Vec<usize>,
}

impl Backward<Flex, 1> for KlOp {
    type State = KlState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = values(&grads.consume::<Flex>(&ops.node).to_contiguous())[0];
        let s = &ops.state;
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let grad = kl_backward(&s.log_student, &s.teacher, values(&s.w), g, s.dims[2]);
            grads.register::<Flex>(node.id, flex(grad, s.dims.clone()));
        }
    }
}

fn kl_autodiff(student: Tensor<Ad, 3>, teacher: Tensor<Ad, 3>, w: Tensor<Ad, 2>) -> Tensor<Ad, 1> {
    let dims = student.dims();
    let (s, t, w) = (student.into_primitive().tensor(), teacher.into_primitive().tensor(), w.into_primitive().tensor());
    let (sc, tc, wc) = (s.primitive.to_contiguous(), t.primitive.to_contiguous(), w.primitive.to_contiguous());
    let (Some(ss), Some(ts), Some(ws)) = (f32s(&sc), f32s(&tc), f32s(&wc)) else {
        return kl_reference(float(s), float(t), float(w));
    };
    let (loss, [log_student, teacher]) = kl_forward(ss, ts, ws, dims[2]);
    let state = KlState { log_student, teacher, w: wc, dims: dims.to_vec() };
    record(KlOp.prepare::<NoCheckpointing>([s.node.clone()]).compute_bound().stateful(), state, flex(vec![loss], [1]))
}

// ---------------------------------------------------------------------------------------------
// The kernels, on contiguous f32 rows. Each row's loss is computed in parallel parts and the rows
// are summed in order in f64 (as the ops' tests do), so the sum does not depend on the threads.

/// The weighted sum of the rows' SmoothL1 and, when `keep`, every element's `clamp(a - b, -1, 1)`.
fn smooth_l1_forward(a: &[f32], b: &[f32], w: &[f32], d: usize, keep: bool) -> (f32, Vec<f32>) {
    let rows = w.len();
    let per = rows_per_part(d);
    let parts = rows.div_ceil(per);
    let kept = if keep { rows * d } else { 0 };
    // SAFETY: the kernel writes every row's loss and, when kept, every slope of its part.
    let [per_row, slope] = unsafe {
        par::outputs_uninit(parts, [rows, kept], [per, if keep { per * d } else { 0 }], |i, [l, s]| {
            let at = i * per * d;
            smooth_l1_kernel(&a[at..], &b[at..], d, l, s);
        })
    };
    (weighted_sum(&per_row, w), slope)
}

/// The weighted sum of the rows' KL, and the student's log-softmax and teacher's softmax.
fn kl_forward(student: &[f32], teacher: &[f32], w: &[f32], v: usize) -> (f32, [Vec<f32>; 2]) {
    let rows = w.len();
    let per = rows_per_part(v);
    // SAFETY: the kernel writes every row's KL and all of its rows' probabilities.
    let [per_row, log_s, p_t] = unsafe {
        par::outputs_uninit(rows.div_ceil(per), [rows, rows * v, rows * v], [per, per * v, per * v], |i, [l, s, t]| {
            let at = i * per * v;
            kl_kernel(&student[at..], &teacher[at..], v, l, s, t);
        })
    };
    (weighted_sum(&per_row, w), [log_s, p_t])
}

/// `g w_r (softmax(s_r) − p_r)`, the gradient of `g w_r KL(p_r || softmax(s_r))` in `s_r`.
fn kl_backward(log_student: &[f32], teacher: &[f32], w: &[f32], g: f32, v: usize) -> Vec<f32> {
    let rows = w.len();
    let per = rows_per_part(v);
    // SAFETY: the kernel writes every element of its part.
    let [ds] = unsafe {
        par::outputs_uninit(rows.div_ceil(per), [rows * v], [per * v], |i, [ds]| {
            let at = i * per * v;
            kl_backward_kernel(&log_student[at..], &teacher[at..], &w[i * per..], g, v, ds);
        })
    };
    ds
}

/// `g w_r x_rj` for every row `r` of width `d`.
fn scale_rows(x: &[f32], w: &[f32], g: f32, d: usize) -> Vec<f32> {
    let rows = w.len();
    let per = rows_per_part(d);
    // SAFETY: the kernel writes every element of its part.
    let [out] = unsafe {
        par::outputs_uninit(rows.div_ceil(per), [rows * d], [per * d], |i, [out]| {
            scale_rows_kernel(&x[i * per * d..], &w[i * per..], g, d, out);
        })
    };
    out
}

fn weighted_sum(per_row: &[f32], w: &[f32]) -> f32 {
    per_row.iter().zip(w).map(|(&l, &w)| l as f64 * w as f64).sum::<f64>() as f32
}

multiversion! {
    fn smooth_l1_kernel(a: &[f32], b: &[f32], d: usize, loss: &mut [MaybeUninit<f32>], slope: &mut [MaybeUninit<f32>]) {
        let keep = !slope.is_empty();
        for r in 0..loss.len() {
            let (ar, br) = (&a[r * d..][..d], &b[r * d..][..d]);
            // Eight partial sums, so that the loop vectorizes without reassociating floats.
            let mut acc = [0.0f32; 8];
            for j in 0..d {
                let x = ar[j] - br[j];
                let small = x.abs().min(1.0);
                acc[j % 8] += 0.5 * small * small + (x.abs() - small);
            }
            loss[r].write(lanes(acc));
            if keep {
                let sr = &mut slope[r * d..][..d];
                for j in 0..d {
                    sr[j].write((ar[j] - br[j]).clamp(-1.0, 1.0));
                }
            }
        }
    }
}

multiversion! {
    fn kl_kernel(
        student: &[f32],
        teacher: &[f32],
        v: usize,
        loss: &mut [MaybeUninit<f32>],
        log_s: &mut [MaybeUninit<f32>],
        p_t: &mut [MaybeUninit<f32>],
    ) {
        // Eight partial sums here and in `log_sum_exp`, so that the exponentials vectorize: one
        // running sum kept the kernel scalar (4.7% of a NextLat step; LOG.md, 2026-12-02).
        let whole = v / 8 * 8;
        for r in 0..loss.len() {
            let (sr, tr) = (&student[r * v..][..v], &teacher[r * v..][..v]);
            let lse_s = log_sum_exp(sr);
            let lse_t = log_sum_exp(tr);
            let (ls, pt) = (&mut log_s[r * v..][..v], &mut p_t[r * v..][..v]);
            let mut acc = [0.0f32; 8];
            for c in (0..whole).step_by(8) {
                for l in 0..8 {
                    let (a, b) = (tr[c + l] - lse_t, sr[c + l] - lse_s);
                    let p = exp(a);
                    acc[l] += p * (a - b);
                    ls[c + l].write(b);
                    pt[c + l].write(p);
                }
            }
            let mut kl = lanes(acc);
            for j in whole..v {
                let (a, b) = (tr[j] - lse_t, sr[j] - lse_s);
                let p = exp(a);
                kl += p * (a - b);
                ls[j].write(b);
                pt[j].write(p);
            }
            loss[r].write(kl);
        }
    }
}

multiversion! {
    fn kl_backward_kernel(log_s: &[f32], p_t: &[f32], w: &[f32], g: f32, v: usize, ds: &mut [MaybeUninit<f32>]) {
        for r in 0..ds.len() / v {
            let c = g * w[r];
            let (ls, pt, dr) = (&log_s[r * v..][..v], &p_t[r * v..][..v], &mut ds[r * v..][..v]);
            for j in 0..v {
                dr[j].write(c * (exp(ls[j]) - pt[j]));
            }
        }
    }
}

multiversion! {
    fn scale_rows_kernel(x: &[f32], w: &[f32], g: f32, d: usize, out: &mut [MaybeUninit<f32>]) {
        for r in 0..out.len() / d {
            let c = g * w[r];
            let (xr, or) = (&x[r * d..][..d], &mut out[r * d..][..d]);
            for j in 0..d {
                or[j].write(c * xr[j]);
            }
        }
    }
}

/// `ln sum_j e^{x_j}`, shifted by the maximum so that no term overflows.
#[inline(always)]
fn log_sum_exp(x: &[f32]) -> f32 {
    let m = max(x);
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] += exp(c[l] - m);
        }
    }
    let mut s = lanes(acc);
    for &y in rest {
        s += exp(y - m);
    }
    m + s.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{close, random};

    /// Weights with zeros among them, as the masks that callers pass.
    fn weights<B: Backend>(dims: [usize; 2], seed: u64) -> Tensor<B, 2> {
        random::<B, 2>(dims, seed).greater_elem(0.0).float()
    }

    #[test]
    fn smooth_l1_matches_burns_ops_and_gradients() {
        // Scaled so that differences fall on both sides of |x| = 1.
        let a = random::<Ad, 3>([3, 5, 19], 20).mul_scalar(0.7).require_grad();
        let b = random::<Ad, 3>([3, 5, 19], 21).mul_scalar(0.7).require_grad();
        let w = weights::<Ad>([3, 5], 22);
        let fused = smooth_l1(a.clone(), b.clone(), w.clone());
        let reference = smooth_l1_reference(a.clone(), b.clone(), w.clone());
        close(fused.clone(), reference.clone());
        close(smooth_l1(a.clone().inner(), b.clone().inner(), w.clone().inner()), reference.clone().inner());
        let (g1, g2) = (fused.mul_scalar(1.5).backward(), reference.mul_scalar(1.5).backward());
        close(a.grad(&g1).unwrap(), a.grad(&g2).unwrap());
        close(b.grad(&g1).unwrap(), b.grad(&g2).unwrap());
    }

    #[test]
    fn distillation_kl_matches_burns_ops_and_gradient() {
        let s = random::<Ad, 3>([3, 5, 11], 23).require_grad();
        let t = random::<Ad, 3>([3, 5, 11], 24).mul_scalar(3.0);
        let w = weights::<Ad>([3, 5], 25);
        let fused = distillation_kl(s.clone(), t.clone(), w.clone());
        let reference = kl_reference(s.clone(), t.clone(), w.clone());
        close(fused.clone(), reference.clone());
        close(distillation_kl(s.clone().inner(), t.clone().inner(), w.clone().inner()), reference.clone().inner());
        let (g1, g2) = (fused.mul_scalar(1.5).backward(), reference.mul_scalar(1.5).backward());
        close(s.grad(&g1).unwrap(), s.grad(&g2).unwrap());
    }

    #[test]
    fn smooth_l1_is_quadratic_then_linear() {
        let dev = Default::default();
        let a = Tensor::<Flex, 3>::from_data(
            burn::tensor::TensorData::new(vec![0.0f32, 0.5, -0.5, 1.0, 3.0, -2.0], [1, 2, 3]),
            &dev,
        );
        let w = Tensor::<Flex, 2>::from_data(burn::tensor::TensorData::new(vec![1.0f32, 2.0], [1, 2]), &dev);
        // Rows 0 + 0.125 + 0.125 and 0.5 + 2.5 + 1.5, the second weighted twice.
        assert_eq!(smooth_l1(a.clone(), a.zeros_like(), w).into_scalar(), 0.25 + 2.0 * 4.5);
    }

    #[test]
    fn the_kl_of_a_distribution_to_itself_is_zero() {
        let s = random::<Flex, 3>([2, 3, 7], 26);
        let w = Tensor::<Flex, 2>::ones([2, 3], &Default::default());
        let kl = distillation_kl(s.clone(), s, w).into_scalar();
        assert!(kl.abs() < 1e-5, "{kl}");
    }
}
