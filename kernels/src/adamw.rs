//! The optimizer's math on parameters and gradients, outside the autodiff graph: one AdamW
//! update (bit for bit burn's) and the sum of squares that gradient clipping needs. On flex each
//! is one pass over memory spread over the cores; on every other backend they run burn's ops.
//! They live with the model's kernels because they share its dispatch and its parts.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::simd::{PART, dot, multiversion};
use super::{f32s, flex, float, is, primitive, same};
use crate::par;

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
/// cores instead of a dozen tensor ops (9% of an `ntf` training step ran in burn's;
/// docs/log/2026-11.md, 2026-11-27), on every other backend with burn's ops.
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

// ---------------------------------------------------------------------------------------------
// The kernels, on contiguous f32 rows.

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

multiversion! {
    fn squares_kernel(x: &[f32]) -> f32 {
        dot(x, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::random;

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
}
