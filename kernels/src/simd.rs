//! What every kernel shares: the macro that compiles a kernel once per CPU feature level, the cut
//! of the work into parts that `par` spreads over the cores, and the vectorizable helpers over
//! `f32` rows (`dot`, `sum`, `axpy`, the approximations of `exp` and `erf`). They live apart from
//! the ops because the linear map, attention, GELU, LayerNorm and AdamW all build on them.

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

/// The macro, for the ops' files (`use super::simd::multiversion`).
pub(super) use multiversion;

// Index loops rather than iterator closures: a closure is its own function, compiled without
// the target features of the version that calls it, so it would not vectorize. Each kernel
// fills its output part, reading the inputs from the part's start.

// The kernels' drivers cut the work into parts (a batch element of attention; a fixed number of
// rows or elements otherwise) that `par` spreads over the cores. Parts depend on the shapes only,
// and sums across parts (LayerNorm's and the bias's gradients) add the parts' partial sums in
// order, so results do not depend on the thread count.
//
// Kernels that write every element of their outputs skip the zero-fill (`par::outputs_uninit`).

/// Elements per part of the elementwise and row-wise kernels: 64 KB of f32, a few microseconds
/// of work, many parts per call at the lab's sizes.
pub(super) const PART: usize = 1 << 14;

/// Rows of width `d` per part.
pub(super) fn rows_per_part(d: usize) -> usize {
    (PART / d.max(1)).max(1)
}

/// The sum of the parts' partial sums, `partial` holding one row of `width` per part, added in
/// part order (so the result does not depend on which thread computed which part).
pub(super) fn add_parts(partial: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; width];
    for part in partial.chunks_exact(width) {
        axpy(1.0, part, &mut sums);
    }
    sums
}

/// Eight partial sums added pairwise: the order every eight-lane sum here and in the ops' kernels
/// ends with.
#[inline(always)]
pub(super) fn lanes(acc: [f32; 8]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums, so that the loop vectorizes without reassociating floats.
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut sum = lanes(acc);
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

#[inline(always)]
pub(super) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..8 {
            acc[l] += x[l];
        }
    }
    let mut s = lanes(acc);
    for x in rest {
        s += x;
    }
    s
}

/// The largest element (negative infinity for none), in eight lanes so that the loop vectorizes;
/// a maximum does not depend on the order it is taken in.
#[inline(always)]
pub(super) fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = a.chunks_exact(8);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..8 {
            acc[l] = acc[l].max(x[l]);
        }
    }
    let mut m = acc[0].max(acc[4]).max(acc[1].max(acc[5])).max(acc[2].max(acc[6]).max(acc[3].max(acc[7])));
    for &x in rest {
        m = m.max(x);
    }
    m
}

/// `sum (x_i - mean)^2`, in the order `dot` would sum the deviations' squares.
#[inline(always)]
pub(super) fn squared_deviations(a: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = a.chunks_exact(8);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..8 {
            acc[l] += (x[l] - mean) * (x[l] - mean);
        }
    }
    let mut s = lanes(acc);
    for x in rest {
        s += (x - mean) * (x - mean);
    }
    s
}

/// `y += a x`.
#[inline(always)]
pub(super) fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `e^x` for `x <= 0` (what softmax and the Gaussian density need): `2^n e^r` with
/// `r = x - n ln 2` in `[-ln 2 / 2, ln 2 / 2]` and a degree-6 polynomial for `e^r`, relative
/// error < 1e-6; 0 below -87.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
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
pub(super) fn erf(x: f32) -> f32 {
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
    use super::{erf, exp};

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
}
