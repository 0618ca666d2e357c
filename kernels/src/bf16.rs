//! Matrix products with bf16 inputs and f32 accumulation, on CPUs with AVX512-BF16 (`vdpbf16ps`:
//! 16 f32 lanes, each adding two bf16 products per instruction, twice the multiply-adds of an f32
//! FMA), and on AMX tiles where the CPU has them (`amx.rs`). Off by default;
//! [`set_bf16_products`] turns it on for the linear maps' three products (forward, input and
//! weight gradients). Weights, activations, gradients and the optimizer stay f32: only each
//! product's operands are rounded to bf16 (to nearest, ties to even) as they are packed, which is
//! what mixed-precision training does on GPUs.
//!
//! Whether it pays depends on the CPU, not only on the instruction: on AMD Zen 4 the products ran
//! at 376-401 GFLOP/s against gemm's f32 212-214; on an Intel Xeon of the Emerald Rapids family
//! with no AMX in the guest at 153-161 against f32's 248-320, where it cut the step's throughput
//! by a third; on a Xeon with AMX, on the tiles, at 1.1-1.55 TFLOP/s against f32's 370-390
//! (LOG.md, 2026-12-02, three sessions).
//!
//! The product: operands packed as 32-bit words of two bf16 neighbours along the shared
//! dimension `k` (odd `k` padded with a zero), the right one in panels of 32 columns; an 8 × 32
//! microkernel keeps 16 accumulators in registers. `k` is taken in chunks of [`KC`] pairs, each
//! chunk's sums added to the output in order, so every element's sum depends on `k` alone and the
//! products split among the cores give the same bits as one (tested).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::par;

#[cfg(target_arch = "x86_64")]
mod amx;

/// Whether the products run on AMX tiles (`amx.rs`; x86-64 only).
fn amx_ready() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::ready()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the linear maps' products run in bf16 (see [`set_bf16_products`]).
static BF16: AtomicBool = AtomicBool::new(false);

/// Pairs of `k` per chunk: a 32-column panel of the right operand is then 64 KB, within L2.
const KC: usize = 512;
/// Rows of the microkernel.
const MR: usize = 8;
/// Columns of the microkernel (two vectors of 16 f32).
const NR: usize = 32;

/// Whether this CPU can run the bf16 products.
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512bf16") && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Which kernel the bf16 products run on here: `"amx"` (the tiles), `"avx512-bf16"`
/// (`vdpbf16ps`), or `None` on a CPU without AVX512-BF16. The two kernels' sums differ in their
/// last bits, so a bf16 run reproduces bit for bit on CPUs that run the same one.
pub fn bf16_kernel() -> Option<&'static str> {
    bf16_supported().then(|| if amx_ready() { "amx" } else { "avx512-bf16" })
}

/// Runs the linear maps' products (on the CPU backend) with bf16 inputs and f32 accumulation
/// from now on (`true`), or in f32 (`false`, the default). Process-wide, like the thread count.
///
/// # Errors
/// When turning it on and the CPU lacks AVX512-BF16.
pub fn set_bf16_products(on: bool) -> Result<(), String> {
    if on && !bf16_supported() {
        return Err(
            "bf16 products need a CPU with AVX512-BF16 (avx512_bf16 in /proc/cpuinfo); this one has none".into()
        );
    }
    BF16.store(on, Ordering::Relaxed);
    Ok(())
}

/// Whether [`set_bf16_products`] turned the bf16 products on.
pub(super) fn bf16_products() -> bool {
    BF16.load(Ordering::Relaxed)
}

/// `lhs rhs (+ bias)` for `lhs` `[m, k]` and `rhs` `[k, n]` read through (row, column) strides,
/// into a fresh row-major `[m, n]`, with the operands rounded to bf16; `bias` `[n]` is added to
/// every row. Panics when the CPU lacks AVX512-BF16 (checked by [`set_bf16_products`]).
pub(super) fn product_bf16(
    lhs: &[f32],
    lhs_strides: [isize; 2],
    rhs: &[f32],
    rhs_strides: [isize; 2],
    [m, k, n]: [usize; 3],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    assert!(bf16_supported(), "bf16 products on a CPU without AVX512-BF16");
    super::product::count([m, k, n]);
    let last = |rows: usize, cols: usize, [rs, cs]: [isize; 2]| {
        (rows.max(1) - 1) as isize * rs + (cols.max(1) - 1) as isize * cs
    };
    assert!(m * k == 0 || (last(m, k, lhs_strides) as usize) < lhs.len(), "bf16 product: left operand too short");
    assert!(k * n == 0 || (last(k, n, rhs_strides) as usize) < rhs.len(), "bf16 product: right operand too short");
    assert!(bias.is_none_or(|b| b.len() == n), "bf16 product: bias of the wrong length");
    let len = m * n;
    let mut out = Vec::with_capacity(len);
    // Blocks of rows or of columns (the longer side), as `product.rs` cuts gemm's products; the
    // column blocks are whole panels.
    let parts = if m * k * n >= 1 << 20 { par::threads() } else { 1 };
    let by_rows = m >= n;
    let long = if by_rows { m } else { n };
    let step = if by_rows { MR } else { NR };
    let block = long.div_ceil(parts.max(1)).next_multiple_of(step).max(step);
    let blocks = long.div_ceil(block);
    let dst = par::Shared(out.as_mut_ptr());
    par::for_each(blocks, |b| {
        let start = b * block;
        let size = block.min(long - start);
        let (rows, cols) = if by_rows { (start..start + size, 0..n) } else { (0..m, start..start + size) };
        // SAFETY: the blocks are disjoint rectangles of `out`; the operands' extents were checked.
        unsafe { block_product(dst.get(), n, lhs, lhs_strides, rhs, rhs_strides, k, rows, cols, bias) };
    });
    // SAFETY: the blocks cover `[m, n]`, and `block_product` stores every element of its block
    // (the microkernel's masked stores cover each panel's columns, also when k = 0). Skipping the
    // zero-fill saves a serial pass over every output (10% of a bf16 step; LOG.md, 2026-12-02).
    unsafe { out.set_len(len) };
    out
}

thread_local! {
    /// Each thread's packed operands, kept between products so that packing never zero-fills
    /// (only a buffer's growth does).
    static PACKED: std::cell::RefCell<(Vec<u32>, Vec<u32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One block `dst[rows, cols]` of the product, on the calling thread: on AMX tiles where the
/// CPU and the OS allow them, with `vdpbf16ps` otherwise.
///
/// # Safety
/// `dst` is row-major with `n` columns and the block is this call's alone; the CPU has
/// AVX512-BF16; the operands hold every element the strides reach for these rows and columns.
unsafe fn block_product(
    dst: *mut f32,
    n: usize,
    lhs: &[f32],
    lhs_strides: [isize; 2],
    rhs: &[f32],
    rhs_strides: [isize; 2],
    k: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    bias: Option<&[f32]>,
) {
    #[cfg(target_arch = "x86_64")]
    let product = if amx::ready() { amx::block_product } else { block_product_avx512 };
    #[cfg(not(target_arch = "x86_64"))]
    let product = block_product_avx512;
    unsafe { product(dst, n, lhs, lhs_strides, rhs, rhs_strides, k, rows, cols, bias) }
}

/// [`block_product`] with the `vdpbf16ps` microkernel.
///
/// # Safety
/// As [`block_product`].
unsafe fn block_product_avx512(
    dst: *mut f32,
    n: usize,
    lhs: &[f32],
    [lrs, lcs]: [isize; 2],
    rhs: &[f32],
    [rrs, rcs]: [isize; 2],
    k: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    bias: Option<&[f32]>,
) {
    let (m, nc) = (rows.len(), cols.len());
    let panels = nc.div_ceil(NR);
    let kp_all = k.div_ceil(2);
    PACKED.with_borrow_mut(|(a, b)| {
        let (need_a, need_b) = (m * KC.min(kp_all.max(1)), panels * KC.min(kp_all.max(1)) * NR);
        if a.len() < need_a {
            a.resize(need_a, 0);
        }
        if b.len() < need_b {
            b.resize(need_b, 0);
        }
        let c0 = unsafe { dst.add(rows.start * n + cols.start) };
        if let Some(bias) = bias {
            for r in 0..m {
                unsafe { std::ptr::copy_nonoverlapping(bias.as_ptr().add(cols.start), c0.add(r * n), nc) };
            }
        }
        let mut read_dst = bias.is_some();
        let lhs0 = rows.start as isize * lrs;
        let rhs0 = cols.start as isize * rcs;
        let mut kk0 = 0;
        while kk0 < kp_all || (kk0 == 0 && k == 0) {
            let kp = KC.min(kp_all - kk0);
            let k0 = 2 * kk0;
            // The left operand's words: [m][kp] when it is contiguous along k, [kp][m] otherwise
            // (each layout written contiguously); the kernel reads either through strides.
            let (a_rs, a_ks) = if lcs == 1 { (kp, 1) } else { (1, m) };
            let a = &mut a[..m * kp];
            let take = (2 * kp).min(k - k0); // elements of k in this chunk
            if lcs == 1 {
                for r in 0..m {
                    let at = (lhs0 + r as isize * lrs) as usize + k0;
                    to_pairs(&lhs[at..at + take], &mut a[r * kp..(r + 1) * kp]);
                }
            } else if lrs == 1 {
                for p in 0..kp {
                    let at = (lhs0 + (k0 + 2 * p) as isize * lcs) as usize;
                    let next = (2 * p + 1 < take).then(|| &lhs[at + lcs as usize..][..m]);
                    interleave(&lhs[at..at + m], next, &mut a[p * m..(p + 1) * m]);
                }
            } else {
                for r in 0..m {
                    for p in 0..kp {
                        let at = lhs0 + r as isize * lrs + (k0 + 2 * p) as isize * lcs;
                        let hi = if 2 * p + 1 < take { lhs[(at + lcs) as usize] } else { 0.0 };
                        a[r * a_rs + p * a_ks] = pair(lhs[at as usize], hi);
                    }
                }
            }
            let b = &mut b[..panels * kp * NR];
            pack_b(rhs, [rrs, rcs], rhs0, k0, take, nc, kp, b);
            for panel in 0..panels {
                let cols = NR.min(nc - panel * NR);
                let bp = b[panel * kp * NR..].as_ptr();
                let mut r = 0;
                while r < m {
                    let mr = MR.min(m - r);
                    let ap = a[r * a_rs..].as_ptr();
                    let c = unsafe { c0.add(r * n + panel * NR) };
                    unsafe { microkernel(mr, ap, a_rs, a_ks, bp, kp, c, n, cols, read_dst) };
                    r += mr;
                }
            }
            read_dst = true;
            kk0 += kp.max(1);
        }
    });
}

/// The right operand's words for `kp` pairs of `k` from `k0` (`take` elements of `k` left in the
/// chunk), in panels of [`NR`] columns: `b` is `[panel][rows][NR]` with `rows = b.len() / (panels
/// NR)`, zero past column `nc` and past pair `kp` (the AMX kernel's whole tiles read those).
fn pack_b(
    rhs: &[f32],
    [rrs, rcs]: [isize; 2],
    rhs0: isize,
    k0: usize,
    take: usize,
    nc: usize,
    kp: usize,
    b: &mut [u32],
) {
    let panels = nc.div_ceil(NR);
    if panels == 0 {
        return;
    }
    let rows = b.len() / (panels * NR);
    debug_assert!(rows >= kp && b.len() == panels * rows * NR);
    for panel in 0..panels {
        b[(panel * rows + kp) * NR..(panel + 1) * rows * NR].fill(0);
    }
    if rcs == 1 {
        for p in 0..kp {
            let at = (rhs0 + (k0 + 2 * p) as isize * rrs) as usize;
            let lo = &rhs[at..at + nc];
            let hi = (2 * p + 1 < take).then(|| &rhs[at + rrs as usize..][..nc]);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `to_pairs`; `b` holds row `p` of every panel.
            unsafe {
                pair_rows_avx512(lo, hi, &mut b[p * NR..], rows * NR)
            };
            #[cfg(not(target_arch = "x86_64"))]
            for panel in 0..panels {
                let (c, w) = (panel * NR, NR.min(nc - panel * NR));
                let words = &mut b[(panel * rows + p) * NR..][..NR];
                interleave(&lo[c..c + w], hi.map(|hi| &hi[c..c + w]), &mut words[..w]);
                words[w..].fill(0);
            }
        }
    } else if rrs == 1 {
        let mut column = vec![0u32; kp];
        for panel in 0..panels {
            let words = &mut b[panel * rows * NR..][..kp * NR];
            for j in 0..NR {
                let c = panel * NR + j;
                if c < nc {
                    let at = (rhs0 + c as isize * rcs) as usize + k0;
                    to_pairs(&rhs[at..at + take], &mut column);
                    for p in 0..kp {
                        words[p * NR + j] = column[p];
                    }
                } else {
                    for p in 0..kp {
                        words[p * NR + j] = 0;
                    }
                }
            }
        }
    } else {
        for panel in 0..panels {
            let words = &mut b[panel * rows * NR..][..kp * NR];
            for p in 0..kp {
                for j in 0..NR {
                    let c = panel * NR + j;
                    words[p * NR + j] = if c < nc {
                        let at = rhs0 + (k0 + 2 * p) as isize * rrs + c as isize * rcs;
                        let hi = if 2 * p + 1 < take { rhs[(at + rrs) as usize] } else { 0.0 };
                        pair(rhs[at as usize], hi)
                    } else {
                        0
                    };
                }
            }
        }
    }
}

/// Consecutive pairs of `x` as words (`x[2p]` low, `x[2p + 1]` high; a missing last one 0):
/// the bf16 of `x` in order. The bf16 products run only on CPUs with AVX512-BF16, whose
/// `vcvtne2ps2bf16` converts 32 at a time.
fn to_pairs(x: &[f32], words: &mut [u32]) {
    assert!(words.len() >= x.len().div_ceil(2), "to_pairs: too few words");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every caller runs under `product_bf16`, which checked the CPU; the lengths hold.
    unsafe {
        to_pairs_avx512(x, words)
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (p, w) in words[..x.len().div_ceil(2)].iter_mut().enumerate() {
        *w = pair(x[2 * p], x.get(2 * p + 1).copied().unwrap_or(0.0));
    }
}

/// `lo[j]` and `hi[j]` (0 without `hi`) as word `j`, for every word of `words`.
fn interleave(lo: &[f32], hi: Option<&[f32]>, words: &mut [u32]) {
    let n = words.len();
    let (lo, hi) = (&lo[..n], hi.map(|hi| &hi[..n]));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as in `to_pairs`; `lo` and `hi` hold `n` elements each.
    unsafe {
        interleave_avx512(lo, hi, words)
    }
    #[cfg(not(target_arch = "x86_64"))]
    for j in 0..n {
        words[j] = pair(lo[j], hi.map_or(0.0, |hi| hi[j]));
    }
}

/// The mask of the first `n` (at most 16) lanes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes_mask(n: usize) -> u16 {
    if n >= 16 { 0xffff } else { ((1u32 << n) - 1) as u16 }
}

/// # Safety
/// The CPU has AVX512-BF16; `words` holds `x.len().div_ceil(2)` words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn to_pairs_avx512(x: &[f32], words: &mut [u32]) {
    use std::arch::x86_64::*;
    for c in (0..x.len()).step_by(32) {
        let left = x.len() - c;
        unsafe {
            let lo = _mm512_maskz_loadu_ps(lanes_mask(left), x.as_ptr().add(c));
            let hi = _mm512_maskz_loadu_ps(lanes_mask(left.saturating_sub(16)), x.as_ptr().add(c + 16));
            // The second operand's bf16 come first: x[c..c + 32] in order, two to a word.
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_mask_storeu_epi32(
                words.as_mut_ptr().add(c / 2) as *mut i32,
                lanes_mask(left.min(32).div_ceil(2)),
                v,
            );
        }
    }
}

/// # Safety
/// The CPU has AVX512-BF16; `lo` and `hi` hold `words.len()` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn interleave_avx512(lo: &[f32], hi: Option<&[f32]>, words: &mut [u32]) {
    use std::arch::x86_64::*;
    for c in (0..words.len()).step_by(16) {
        let mask = lanes_mask(words.len() - c);
        unsafe {
            let l = _mm512_maskz_loadu_ps(mask, lo.as_ptr().add(c));
            let h = hi.map_or(_mm512_setzero_ps(), |hi| _mm512_maskz_loadu_ps(mask, hi.as_ptr().add(c)));
            _mm512_mask_storeu_epi32(words.as_mut_ptr().add(c) as *mut i32, mask, pair_vector(l, h));
        }
    }
}

/// Sixteen words of `lo[j]` and `hi[j]` as bf16 (`lo` low), from two vectors of f32.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
fn pair_vector(lo: std::arch::x86_64::__m512, hi: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // After the conversion the 16 bf16 of `lo` come first, then those of `hi`; word j takes
    // halves j and 16 + j.
    let order = _mm512_set_epi16(
        31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
        16, 0,
    );
    // SAFETY: a bit-for-bit reinterpretation of one vector as another.
    let converted: __m512i = unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo)) };
    _mm512_permutexvar_epi16(order, converted)
}

/// One row of pairs of every panel: word `j` of panel `c / NR` (at `words[(c / NR) * panel +
/// c % NR]`) is `lo[c]` and `hi[c]` (0 without `hi`), zero past `lo.len()` up to the last
/// panel's end. One loop over the row, where `interleave` per panel spent more on each call
/// than on its 32 words.
///
/// # Safety
/// The CPU has AVX512-BF16; `hi` is as long as `lo`; `words` reaches every panel's row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pair_rows_avx512(lo: &[f32], hi: Option<&[f32]>, words: &mut [u32], panel: usize) {
    use std::arch::x86_64::*;
    let n = lo.len();
    let panels = n.div_ceil(NR);
    assert!(hi.is_none_or(|hi| hi.len() == n) && (panels == 0 || (panels - 1) * panel + NR <= words.len()));
    for c in (0..panels * NR).step_by(16) {
        let mask = lanes_mask(n.saturating_sub(c));
        let at = c.min(n); // masked-out lanes read nothing; the pointer stays in bounds
        unsafe {
            let l = _mm512_maskz_loadu_ps(mask, lo.as_ptr().add(at));
            let h = hi.map_or(_mm512_setzero_ps(), |hi| _mm512_maskz_loadu_ps(mask, hi.as_ptr().add(at)));
            let to = words.as_mut_ptr().add((c / NR) * panel + c % NR);
            _mm512_storeu_si512(to as *mut _, pair_vector(l, h));
        }
    }
}

/// Two f32 as one word of two bf16 (`lo` in the low half), each rounded to nearest, ties to even.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

/// `x` rounded to bf16 (its upper 16 bits) as `vcvtne2ps2bf16` rounds it: to nearest, ties to
/// even; subnormals to zero of the same sign (the bf16 instructions read subnormal inputs as
/// zero anyway), NaN to a quiet NaN.
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x7f80_0000 == 0 {
        (b >> 16) & 0x8000
    } else if x.is_nan() {
        (b >> 16) | 0x0040
    } else {
        (b.wrapping_add(0x7fff + ((b >> 16) & 1))) >> 16
    }
}

/// `c[..mr, ..cols] (+)= a b` over `kp` pairs: `a`'s words at `r * a_rs + p * a_ks`, `b`'s at
/// `p * NR + j`; `c` row-major with row stride `c_rs`, read (and added to) only when `read_dst`.
///
/// # Safety
/// The CPU has AVX512-BF16; the pointers reach every element named.
unsafe fn microkernel(
    mr: usize,
    a: *const u32,
    a_rs: usize,
    a_ks: usize,
    b: *const u32,
    kp: usize,
    c: *mut f32,
    c_rs: usize,
    cols: usize,
    read_dst: bool,
) {
    // One instance per row count, so that the accumulators are registers.
    macro_rules! rows {
        ($($n:literal)*) => {
            match mr {
                $($n => unsafe { kernel::<$n>(a, a_rs, a_ks, b, kp, c, c_rs, cols, read_dst) },)*
                _ => unreachable!("at most {MR} rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel<const R: usize>(
    a: *const u32,
    a_rs: usize,
    a_ks: usize,
    b: *const u32,
    kp: usize,
    c: *mut f32,
    c_rs: usize,
    cols: usize,
    read_dst: bool,
) {
    use std::arch::x86_64::*;
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..kp {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR) as *const _));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16) as *const _));
            for (r, acc) in acc.iter_mut().enumerate() {
                let w = *a.add(r * a_rs + p * a_ks);
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(w as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], av, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], av, b1);
            }
        }
        let lo = if cols >= 16 { 0xffff } else { (1u32 << cols) as u16 - 1 };
        let hi = if cols >= 32 {
            0xffff
        } else if cols > 16 {
            (1u32 << (cols - 16)) as u16 - 1
        } else {
            0
        };
        for (r, acc) in acc.iter().enumerate() {
            let row = c.add(r * c_rs);
            for (h, mask) in [(0usize, lo), (1, hi)] {
                let ptr = row.add(16 * h);
                let mut v = acc[h];
                if read_dst {
                    v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, ptr), v);
                }
                _mm512_mask_storeu_ps(ptr, mask, v);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const R: usize>(
    _: *const u32,
    _: usize,
    _: usize,
    _: *const u32,
    _: usize,
    _: *mut f32,
    _: usize,
    _: usize,
    _: bool,
) {
    unreachable!("bf16 products are checked to be supported first")
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;

    /// The product of the operands rounded to bf16, summed in f64.
    fn reference(
        a: &[f32],
        [ars, acs]: [usize; 2],
        b: &[f32],
        [brs, bcs]: [usize; 2],
        [m, k, n]: [usize; 3],
    ) -> Vec<f64> {
        let round = |x: f32| f32::from_bits(bf16_bits(x) << 16) as f64;
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| round(a[i * ars + p * acs]) * round(b[p * brs + j * bcs])).sum();
            }
        }
        out
    }

    type Kernel = unsafe fn(
        *mut f32,
        usize,
        &[f32],
        [isize; 2],
        &[f32],
        [isize; 2],
        usize,
        Range<usize>,
        Range<usize>,
        Option<&[f32]>,
    );

    #[test]
    fn rounding_is_to_nearest_even() {
        let bf = |x: f32| f32::from_bits(bf16_bits(x) << 16);
        assert_eq!(bf(1.0), 1.0);
        assert_eq!(bf(1.0 + 1.0 / 256.0), 1.0); // a tie, to the even neighbour 1.0
        assert_eq!(bf(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0); // a tie, to the even 1 + 2^-6
        assert_eq!(bf(1.0 + 1.5 / 256.0), 1.0 + 2.0 / 256.0);
        assert_eq!(bf(-2.5), -2.5);
    }

    #[test]
    fn the_scalar_rounding_is_the_cpus() {
        if !bf16_supported() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        // Zeros, subnormals, the normal extremes, infinities, NaNs with payloads, ties, and
        // pseudo-random bit patterns; an odd count, so that the last word is half a pair.
        let mut x: Vec<f32> = [0.0, -0.0, 1e-40, -1e-40, 1.1754942e-38, f32::MIN_POSITIVE, f32::MAX, -f32::MAX]
            .into_iter()
            .chain([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0])
            .chain([0x7f80_0001u32, 0xffc0_1234, 0x7fbf_ffff, 0x0080_8000].map(f32::from_bits))
            .collect();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            x.push(f32::from_bits((state >> 32) as u32));
        }
        x.push(2.5);
        let mut words = vec![0u32; x.len().div_ceil(2)];
        to_pairs(&x, &mut words);
        for (i, &v) in x.iter().enumerate() {
            let cpu = (words[i / 2] >> (16 * (i % 2))) & 0xffff;
            assert_eq!(cpu, bf16_bits(v), "{v:e} ({:#010x})", v.to_bits());
        }
        // The interleaving conversion agrees, with and without its second line.
        let (lo, hi) = x.split_at(x.len() / 2);
        let mut words = vec![0u32; lo.len()];
        interleave(lo, Some(&hi[..lo.len()]), &mut words);
        assert!(words.iter().enumerate().all(|(j, &w)| w == pair(lo[j], hi[j])));
        interleave(lo, None, &mut words);
        assert!(words.iter().enumerate().all(|(j, &w)| w == pair(lo[j], 0.0)));
    }

    #[test]
    fn bf16_products_match_the_rounded_operands_and_split_bit_for_bit() {
        if !bf16_supported() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        // The linear map's three layouts at an experiment's size, odd sizes (partial tiles and
        // panels, odd k), k past one chunk, and no k at all.
        #[allow(unused_mut, reason = "pushed to on x86-64 only")]
        let mut kernels: Vec<(&str, Kernel)> = vec![("avx512", block_product_avx512)];
        if amx_ready() {
            #[cfg(target_arch = "x86_64")]
            kernels.push(("amx", amx::block_product));
        } else {
            eprintln!("the AMX kernel is not tested: this CPU or OS has no AMX");
        }
        for &[m, k, n] in &[[300, 128, 384], [37, 7, 45], [64, 1500, 70], [17, 33, 16], [1, 1, 1], [5, 0, 3]] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 300.0).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 / 7.0).collect();
            for (ls, rs) in [([k, 1], [n, 1]), ([1, m], [n, 1]), ([k, 1], [1, k]), ([2 * k, 2], [n, 1])] {
                let a = if ls == [2 * k, 2] { a.iter().flat_map(|&x| [x, f32::NAN]).collect() } else { a.clone() };
                let want = reference(&a, ls, &b, rs, [m, k, n]);
                let strides = |[r, c]: [usize; 2]| [r as isize, c as isize];
                let got = product_bf16(&a, strides(ls), &b, strides(rs), [m, k, n], Some(&bias));
                // One block gives the same bits as the blocks the cores split it into, for the
                // kernel the product chose; each kernel is within bf16's rounding of the sums.
                for &(name, kernel) in &kernels {
                    let mut one = vec![f32::NAN; m * n];
                    // SAFETY: `one` holds [m, n]; the CPU was checked; the operands are whole.
                    unsafe {
                        kernel(one.as_mut_ptr(), n, &a, strides(ls), &b, strides(rs), k, 0..m, 0..n, Some(&bias))
                    };
                    for (i, (g, w)) in one.iter().zip(&want).enumerate() {
                        let w = w + bias[i % n] as f64;
                        assert!(
                            (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{name} [{m}, {k}, {n}] {ls:?} at {i}: {g} vs {w}"
                        );
                    }
                    if (name == "amx") == amx_ready() {
                        let same = one.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{name} [{m}, {k}, {n}] {ls:?}: the split differs");
                    }
                }
            }
        }
    }
}
