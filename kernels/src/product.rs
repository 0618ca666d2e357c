//! The matrix products the linear map and attention share, through the `gemm` crate: a whole
//! product split among the cores in blocks that leave every element's sum unchanged (the linear
//! map's forward pass and gradients), and one small product on the calling thread (a head's
//! scores and outputs). They sit apart because both ops call them and their safety argument is
//! the same.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::par;

/// Multiply-adds of every matrix product this process has run through the kernels (f32 and bf16,
/// linear maps and attention), for the cost a run records: a count of the work done, with the
/// positions each objective skips left out, rather than a formula's estimate of it.
static MULTIPLY_ADDS: AtomicU64 = AtomicU64::new(0);

/// Multiply-adds of the kernels' matrix products so far in this process (f32 and bf16, linear
/// maps and attention); the difference over a span of work is that work's count. GPU backends do
/// not run these kernels, so their work is not counted.
pub fn multiply_adds() -> u64 {
    MULTIPLY_ADDS.load(Ordering::Relaxed)
}

/// Adds one product's multiply-adds to the count.
pub(super) fn count([m, k, n]: [usize; 3]) {
    MULTIPLY_ADDS.fetch_add((m * k * n) as u64, Ordering::Relaxed);
}

/// `lhs rhs (+ bias)` for `lhs` `[m, k]` and `rhs` `[k, n]` read through (row, column) strides,
/// into a fresh row-major `[m, n]`; `bias` `[n]` is added to every row.
pub(super) fn product(
    lhs: &[f32],
    lhs_strides: [isize; 2],
    rhs: &[f32],
    rhs_strides: [isize; 2],
    mkn: [usize; 3],
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let len = mkn[0] * mkn[2];
    let mut out = Vec::with_capacity(len);
    let threads = if mkn.iter().product::<usize>() >= PARALLEL_MACS { par::threads() } else { 1 };
    // SAFETY: `out` has room for `[m, n]` and nothing else refers to it; the product writes
    // every element (see `gemm_parts`), so all are initialised before `set_len`. Skipping a
    // zero-fill saves a pass over each output (memset took ~5% of the d 128 step).
    unsafe {
        gemm_parts(out.as_mut_ptr(), bias, lhs, lhs_strides, rhs, rhs_strides, mkn, threads);
        out.set_len(len);
    }
    out
}

/// Products smaller than this many multiply-adds run on one thread: below it, starting the
/// helpers and packing an operand twice cost more than the second core gains.
const PARALLEL_MACS: usize = 1 << 20;

/// `dst = lhs rhs (+ bias)`, with `dst` row-major `[m, n]`, in (at most) `parts` blocks that
/// [`par`] spreads over the cores. Every element of `dst` is written and none is read before.
///
/// The output is cut into blocks of rows (or of columns, whichever dimension is longer, so that
/// the operand each block packs again is the smaller one). Every element is still the same sum
/// in the same order: gemm's blocking of the shared dimension depends on `k` alone (and on sizes
/// only when both block dimensions are at most 64, which the cut avoids), so results are bit for
/// bit those of one block, whatever the thread count (tested below). With a bias, each block
/// first fills its rows with it and gemm adds the product.
///
/// # Safety
/// `dst` must be valid for writes of `m * n` elements and not aliased.
unsafe fn gemm_parts(
    dst: *mut f32,
    bias: Option<&[f32]>,
    lhs: &[f32],
    [lhs_rs, lhs_cs]: [isize; 2],
    rhs: &[f32],
    [rhs_rs, rhs_cs]: [isize; 2],
    [m, k, n]: [usize; 3],
    parts: usize,
) {
    // The last element each operand is read at must lie inside it.
    let last = |rows: usize, cols: usize, rs: isize, cs: isize| {
        (rows.max(1) - 1) as isize * rs + (cols.max(1) - 1) as isize * cs
    };
    assert!(m * k == 0 || (last(m, k, lhs_rs, lhs_cs) as usize) < lhs.len(), "gemm: left operand too short");
    assert!(k * n == 0 || (last(k, n, rhs_rs, rhs_cs) as usize) < rhs.len(), "gemm: right operand too short");
    assert!(bias.is_none_or(|b| b.len() == n), "gemm: bias of {} for {n} columns", bias.map_or(0, <[f32]>::len));
    let by_rows = m >= n;
    let (long, short) = if by_rows { (m, n) } else { (n, m) };
    // Blocks of a multiple of 16 rows or columns (whole SIMD registers); blocks of at most 64 by
    // at most 64 would change gemm's blocking of `k`, so those products stay whole.
    let block = long.div_ceil(parts.max(1)).next_multiple_of(16);
    let (block, blocks) =
        if block >= long || (short <= 64 && block <= 64) { (long, 1) } else { (block, long.div_ceil(block)) };
    let (dst, lhs_ptr, rhs_ptr) =
        (par::Shared(dst), par::Shared(lhs.as_ptr() as *mut f32), par::Shared(rhs.as_ptr() as *mut f32));
    par::for_each(blocks, |b| {
        let start = b * block;
        let size = block.min(long - start);
        let (rows, cols) = if by_rows { (size, n) } else { (m, size) };
        let (row0, col0) = if by_rows { (start, 0) } else { (0, start) };
        // SAFETY: the blocks cut `dst` into disjoint rectangles inside `[m, n]` (which the
        // caller lends exclusively), and each operand is read only inside the extent checked
        // above; gemm computes dst := alpha dst + beta lhs rhs, and with `read_dst` false it
        // stores without loading dst (or stores zeros when k = 0).
        unsafe {
            let at = dst.get().add(row0 * n + col0);
            if let Some(bias) = bias {
                for r in 0..rows {
                    std::ptr::copy_nonoverlapping(bias.as_ptr().add(col0), at.add(r * n), cols);
                }
            }
            gemm_once(
                at,
                n as isize,
                bias.is_some(),
                lhs_ptr.get().offset(row0 as isize * lhs_rs),
                [lhs_rs, lhs_cs],
                rhs_ptr.get().offset(col0 as isize * rhs_cs),
                [rhs_rs, rhs_cs],
                [rows, k, cols],
            );
        }
    });
}

/// `dst (+)= lhs rhs` on the calling thread, through gemm: `lhs` `[m, k]` and `rhs` `[k, n]` read
/// through (row, column) strides, `dst` row-major with row stride `dst_rs`, read (and added to)
/// only when `read_dst`, otherwise overwritten without being read.
///
/// # Safety
/// Every element the strides reach must lie inside its allocation, `dst` must not alias the
/// operands, and it must be initialised when `read_dst`.
pub(super) unsafe fn gemm_once(
    dst: *mut f32,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    [lhs_rs, lhs_cs]: [isize; 2],
    rhs: *const f32,
    [rhs_rs, rhs_cs]: [isize; 2],
    [m, k, n]: [usize; 3],
) {
    count([m, k, n]);
    // SAFETY: forwarded from the caller; gemm computes dst := alpha dst + beta lhs rhs, with
    // alpha taken as zero (dst not loaded) when `read_dst` is false.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::gemm_parts;

    #[test]
    fn split_products_equal_whole_ones_bit_for_bit() {
        // The model's products (rows 2048 = 64 x 32; widths 54 to 1536), forward and both
        // gradients' operand layouts, plus odd sizes and a shared dimension beyond gemm's block.
        let cases: &[[usize; 3]] = &[
            [2048, 128, 384],
            [2048, 128, 54],
            [128, 2048, 384],
            [512, 2048, 128],
            [2048, 384, 1536],
            [300, 700, 100],
            [70, 1100, 90],
        ];
        for &[m, k, n] in cases {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 104729 % 997) as f32 - 498.0) / 300.0).collect();
            // Row-major operands, then the left one read transposed (as the weight gradient does).
            for (lhs_strides, rhs_strides) in [([k as isize, 1], [n as isize, 1]), ([1, m as isize], [n as isize, 1])] {
                let bias: Vec<f32> = (0..n).map(|j| j as f32 / 7.0).collect();
                for bias in [None, Some(&bias[..])] {
                    let run = |parts| {
                        let mut out = vec![f32::NAN; m * n];
                        // SAFETY: `out` holds [m, n].
                        unsafe {
                            gemm_parts(out.as_mut_ptr(), bias, &a, lhs_strides, &b, rhs_strides, [m, k, n], parts)
                        };
                        out
                    };
                    let whole = run(1);
                    assert!(whole.iter().all(|x| x.is_finite()), "[{m}, {k}, {n}]: an element was not written");
                    for parts in [2, 3, 8] {
                        let split = run(parts);
                        assert!(
                            whole.iter().zip(&split).all(|(x, y)| x.to_bits() == y.to_bits()),
                            "[{m}, {k}, {n}] in {parts} parts differs from the whole product"
                        );
                    }
                }
            }
        }
    }
}
