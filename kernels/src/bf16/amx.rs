//! The bf16 products on AMX tiles (Intel Xeons since Sapphire Rapids, where the hypervisor and
//! the OS hand them out). One `tdpbf16ps` multiplies a 16 × 32 bf16 tile by a 32 × 16 one into
//! 16 × 16 f32 accumulators: 8192 multiply-adds, 256 times one `vdpbf16ps`, at about 8x its
//! multiply-adds per cycle. The operands are rounded to bf16 as in `bf16.rs` (the same bits), and
//! the accumulation is f32 as there, but summed in another order: each output's tile is loaded
//! with what the output holds (the bias, or the sums of earlier chunks of `k`), or zero, and the
//! pairs of `k` are added to it one after the other, so that the sums do not depend on the
//! chunks, nor on the blocks the cores take (tested). The results differ from the `vdpbf16ps`
//! kernel's in their last bits: a run is reproducible on one kind of CPU, as in f32.
//!
//! Layouts: the left operand is packed tile by tile, `[row block of 16][step of 16 pairs][16][16]`
//! words, so that every tile load reads 1 KB in a row (a left operand stored along its rows, the
//! weight gradient's, is transposed 16 × 16 words at a time in registers); the right one in
//! `bf16.rs`'s panels of 32 columns (`[panel][pairs][32]`), whose two 16-column halves are the B
//! tiles. Pairs are padded with zeros to whole steps. A 2 × 2 block of accumulator tiles (32 rows
//! × one panel) is loaded from and stored to the output directly, through a scratch block where
//! it crosses the output's edge.

use std::arch::asm;
use std::sync::OnceLock;

use super::{KC, NR, PACKED, lanes_mask, pack_b, pair, pair_vector};

/// Rows of a tile, and pairs of `k` in one (16 words of two bf16: 64 bytes a row).
const T: usize = 16;
/// Words in one packed tile.
const TILE_WORDS: usize = T * T;

/// Whether the bf16 products run on AMX tiles: the CPU has AMX-BF16 and Linux granted this
/// process the tiles' state (asked once). `LAB_BF16_AMX=0` in the environment keeps the
/// AVX512-BF16 kernel, to compare the two.
pub(super) fn ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| std::env::var("LAB_BF16_AMX").map_or(true, |v| v != "0") && request())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    // Linux gives the tiles' 8 KB of register state only to processes that ask for it
    // (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, Linux 5.16 on); a tile instruction
    // without it is a fatal signal. A refusal (an older kernel, a hypervisor that does not enable
    // the state in XCR0) leaves the AVX512-BF16 kernel in charge.
    const SYS_ARCH_PRCTL: isize = 158;
    const ARCH_REQ_XCOMP_PERM: usize = 0x1023;
    const XFEATURE_XTILEDATA: usize = 18;
    let ret: isize;
    // SAFETY: a system call that only changes this process's permissions; it clobbers rcx and r11.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request() -> bool {
    false
}

/// The tile configuration (`ldtilecfg`'s 64-byte operand, palette 1): all eight tiles 16 rows of
/// 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// A 32 × 32 block of f32 sums, as the tiles store it.
#[repr(C, align(64))]
struct Block([f32; 4 * TILE_WORDS]);

/// One block `dst[rows, cols]` of the product on AMX tiles: `bf16.rs`'s `block_product`, with the
/// same arguments and chunks of `k`.
///
/// # Safety
/// As `bf16.rs`'s `block_product`, and [`ready`] returned true.
pub(super) unsafe fn block_product(
    dst: *mut f32,
    n: usize,
    lhs: &[f32],
    [lrs, lcs]: [isize; 2],
    rhs: &[f32],
    rhs_strides: [isize; 2],
    k: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    bias: Option<&[f32]>,
) {
    let (m, nc) = (rows.len(), cols.len());
    let c0 = unsafe { dst.add(rows.start * n + cols.start) };
    if m == 0 || nc == 0 {
        return;
    }
    let fill = |r: usize| match bias {
        Some(bias) => unsafe { std::ptr::copy_nonoverlapping(bias.as_ptr().add(cols.start), c0.add(r * n), nc) },
        None => unsafe { std::ptr::write_bytes(c0.add(r * n), 0, nc) },
    };
    if k == 0 {
        (0..m).for_each(fill);
        return;
    }
    let panels = nc.div_ceil(NR);
    let blocks = m.div_ceil(2 * T); // of 32 rows: two A tiles
    let kp_all = k.div_ceil(2);
    let steps_max = KC.min(kp_all).div_ceil(T);
    PACKED.with_borrow_mut(|(a, b)| {
        let (need_a, need_b) = (2 * blocks * steps_max * TILE_WORDS, panels * steps_max * T * NR);
        if a.len() < need_a {
            a.resize(need_a, 0);
        }
        if b.len() < need_b {
            b.resize(need_b, 0);
        }
        if bias.is_some() {
            (0..m).for_each(fill);
        }
        let mut read_dst = bias.is_some();
        let lhs0 = rows.start as isize * lrs;
        let rhs0 = cols.start as isize * rhs_strides[1];
        let mut sums = Block([0.0; 4 * TILE_WORDS]);
        // SAFETY: the CPU has AMX and the process the permission (`ready`); the configuration is
        // this thread's until `tilerelease` below.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
        for kk0 in (0..kp_all).step_by(KC) {
            let kp = KC.min(kp_all - kk0);
            let steps = kp.div_ceil(T);
            let k0 = 2 * kk0;
            let take = (2 * kp).min(k - k0);
            let a = &mut a[..2 * blocks * steps * TILE_WORDS];
            if lcs == 1 {
                // SAFETY: `ready` implies AVX512-BF16 (and the product checked it).
                unsafe { pack_a_rows(&lhs[lhs0 as usize + k0..], lrs as usize, m, take, steps, a) };
            } else if lrs == 1 {
                // SAFETY: as above.
                unsafe { pack_a_columns(&lhs[lhs0 as usize + k0 * lcs as usize..], lcs as usize, m, take, steps, a) };
            } else {
                for r in 0..m {
                    for p in 0..steps * T {
                        let at = lhs0 + r as isize * lrs + (k0 + 2 * p) as isize * lcs;
                        let lo = if 2 * p < take { lhs[at as usize] } else { 0.0 };
                        let hi = if 2 * p + 1 < take { lhs[(at + lcs) as usize] } else { 0.0 };
                        a[tile_word(r, p, steps)] = pair(lo, hi);
                    }
                }
            }
            let b = &mut b[..panels * steps * T * NR];
            pack_b(rhs, rhs_strides, rhs0, k0, take, nc, kp, b);
            for block in 0..blocks {
                let a0 = a[2 * block * steps * TILE_WORDS..].as_ptr();
                let r0 = 2 * T * block;
                for panel in 0..panels {
                    let b0 = b[panel * steps * T * NR..].as_ptr();
                    let c = unsafe { c0.add(r0 * n + panel * NR) };
                    let (rows, cols) = ((m - r0).min(2 * T), (nc - panel * NR).min(NR));
                    // SAFETY (all three): both A tiles of each step and both B tiles lie in the
                    // packed buffers (sized for whole blocks and steps above); a whole block's
                    // sums are the output's own 32 × 32, a partial one's go through `sums`, and
                    // the rows and columns stay within the block's `m` and `nc`.
                    if rows == 2 * T && cols == NR {
                        unsafe { tiles(a0, steps, b0, c, 4 * n, read_dst) };
                    } else {
                        let scratch = sums.0.as_mut_ptr();
                        if read_dst {
                            unsafe { copy_block(c, n, scratch, NR, rows, cols) };
                        }
                        unsafe { tiles(a0, steps, b0, scratch, 4 * NR, read_dst) };
                        unsafe { copy_block(scratch, NR, c, n, rows, cols) };
                    }
                }
            }
            read_dst = true;
        }
        // SAFETY: releases this thread's tiles (their state is large; the OS saves less without).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    });
}

/// Where pair `p` of row `r` lies in the tile-packed left operand of `steps` steps.
#[inline(always)]
fn tile_word(r: usize, p: usize, steps: usize) -> usize {
    ((r / T) * steps + p / T) * TILE_WORDS + (r % T) * T + p % T
}

/// The left operand, contiguous along `k` (row `r` at `x[r * row_stride..]`, `take` elements of
/// `k`), into tiles: each step's 32 elements of a row are its 16 words, one conversion; a short
/// last step and the steps past the data are padded with zeros. Rows past `m` in the last block
/// are left as they are: they only reach output rows that are never stored.
///
/// # Safety
/// The CPU has AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_a_rows(x: &[f32], row_stride: usize, m: usize, take: usize, steps: usize, a: &mut [u32]) {
    use std::arch::x86_64::*;
    assert!(m == 0 || (m - 1) * row_stride + take <= x.len(), "pack_a_rows: operand too short");
    assert!(a.len() >= m.div_ceil(T) * steps * TILE_WORDS && take <= 2 * T * steps, "pack_a_rows: too few words");
    let whole = take / (2 * T);
    for r in 0..m {
        // SAFETY (the block): the reads stay in row `r`'s `take` elements (masked past them),
        // the writes in its tiles' rows, both checked above.
        unsafe {
            let src = x.as_ptr().add(r * row_stride);
            let dst = a.as_mut_ptr().add(tile_word(r, 0, steps));
            for s in 0..whole {
                let (lo, hi) = (_mm512_loadu_ps(src.add(2 * T * s)), _mm512_loadu_ps(src.add(2 * T * s + 16)));
                let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.add(s * TILE_WORDS) as *mut _, words);
            }
            for s in whole..steps {
                let from = (2 * T * s).min(take);
                let left = take - from;
                let lo = _mm512_maskz_loadu_ps(lanes_mask(left), src.add(from));
                let hi = _mm512_maskz_loadu_ps(lanes_mask(left.saturating_sub(16)), src.add((from + 16).min(take)));
                let words: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.add(s * TILE_WORDS) as *mut _, words);
            }
        }
    }
}

/// The left operand, contiguous along its rows (element `k` of row `r` at `x[k * k_stride + r]`:
/// a transposed matrix, as in the weight gradient), into tiles: for each step and 16 rows, the 16
/// words of each pair (two lines of `x` interleaved) are the 16 columns of a tile, transposed in
/// registers into its 16 rows.
///
/// # Safety
/// The CPU has AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_a_columns(x: &[f32], k_stride: usize, m: usize, take: usize, steps: usize, a: &mut [u32]) {
    use std::arch::x86_64::*;
    assert!(take == 0 || (take - 1) * k_stride + m <= x.len(), "pack_a_columns: operand too short");
    assert!(a.len() >= m.div_ceil(T) * steps * TILE_WORDS && take <= 2 * T * steps, "pack_a_columns: too few words");
    let mut columns = [_mm512_setzero_si512(); T];
    for s in 0..steps {
        for r0 in (0..m).step_by(T) {
            let mask = lanes_mask(m - r0);
            for (q, column) in columns.iter_mut().enumerate() {
                let k = 2 * (s * T + q);
                let left = take.saturating_sub(k);
                // SAFETY: lines `k` and `k + 1` are read only below `take`, rows below `m`.
                *column = match left {
                    0 => _mm512_setzero_si512(),
                    _ => unsafe {
                        let line = x.as_ptr().add(k * k_stride + r0);
                        let lo = _mm512_maskz_loadu_ps(mask, line);
                        let hi = if left >= 2 {
                            _mm512_maskz_loadu_ps(mask, line.add(k_stride))
                        } else {
                            _mm512_setzero_ps()
                        };
                        pair_vector(lo, hi)
                    },
                };
            }
            let tile = transpose(columns);
            let at = tile_word(r0, s * T, steps);
            // Rows past `m` are written too (zeros): the buffer holds whole tiles.
            for (i, row) in tile.iter().enumerate() {
                unsafe { _mm512_storeu_si512(a.as_mut_ptr().add(at + i * T) as *mut _, *row) };
            }
        }
    }
}

/// The transpose of a 16 × 16 matrix of words held as 16 rows: words within 128-bit lanes, then
/// pairs of words, then the lanes themselves.
#[target_feature(enable = "avx512f")]
fn transpose(r: [std::arch::x86_64::__m512i; T]) -> [std::arch::x86_64::__m512i; T] {
    use std::arch::x86_64::*;
    let mut t = r;
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    // u[4i + j], lane l: column 4l + j of rows 4i..4i + 4.
    let mut u = t;
    for i in 0..4 {
        u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // Row 4l + j of the transpose is lane l of u[j], u[4 + j], u[8 + j], u[12 + j].
    let mut out = u;
    for j in 0..4 {
        let v0 = _mm512_shuffle_i32x4::<0x44>(u[j], u[4 + j]);
        let v1 = _mm512_shuffle_i32x4::<0xee>(u[j], u[4 + j]);
        let w0 = _mm512_shuffle_i32x4::<0x44>(u[8 + j], u[12 + j]);
        let w1 = _mm512_shuffle_i32x4::<0xee>(u[8 + j], u[12 + j]);
        out[j] = _mm512_shuffle_i32x4::<0x88>(v0, w0);
        out[4 + j] = _mm512_shuffle_i32x4::<0xdd>(v0, w0);
        out[8 + j] = _mm512_shuffle_i32x4::<0x88>(v1, w1);
        out[12 + j] = _mm512_shuffle_i32x4::<0xdd>(v1, w1);
    }
    out
}

/// The 2 × 2 accumulator tiles of one 32-row block and one 32-column panel: `c[..32, ..32]` (row
/// stride `c_row` bytes) plus the block's products over `steps` steps of 16 pairs, or the products
/// alone unless `load`.
///
/// # Safety
/// The tiles are configured; `a` holds the block's two rows of `steps` tiles (1 KB each, the
/// second row `steps` tiles after the first); `b` holds `steps * 16` rows of 32 words; `c` reaches
/// 32 rows of 32 f32.
unsafe fn tiles(a: *const u32, steps: usize, b: *const u32, c: *mut f32, c_row: usize, load: bool) {
    debug_assert!(steps > 0);
    // tmm0-3 accumulate (rows 0-15 and 16-31 × columns 0-15 and 16-31), tmm4-5 hold the block's
    // two A tiles of a step, tmm6-7 the panel's two B tiles.
    unsafe {
        asm!(
            "test {load}, {load}",
            "jz 3f",
            "tileloadd tmm0, [{c0} + {c_row}*1]",
            "tileloadd tmm1, [{c0} + {c_row}*1 + 64]",
            "tileloadd tmm2, [{c1} + {c_row}*1]",
            "tileloadd tmm3, [{c1} + {c_row}*1 + 64]",
            "jmp 2f",
            "3:",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{a0} + {row}*1]",
            "tileloadd tmm5, [{a1} + {row}*1]",
            "tileloadd tmm6, [{b} + {panel_row}*1]",
            "tileloadd tmm7, [{b} + {panel_row}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {b}, 2048",
            "dec {steps}",
            "jnz 2b",
            "tilestored [{c0} + {c_row}*1], tmm0",
            "tilestored [{c0} + {c_row}*1 + 64], tmm1",
            "tilestored [{c1} + {c_row}*1], tmm2",
            "tilestored [{c1} + {c_row}*1 + 64], tmm3",
            load = in(reg) load as usize,
            a0 = inout(reg) a => _,
            a1 = inout(reg) a.add(steps * TILE_WORDS) => _,
            b = inout(reg) b => _,
            steps = inout(reg) steps => _,
            row = in(reg) 4 * T,
            panel_row = in(reg) 4 * NR,
            c0 = in(reg) c,
            c1 = in(reg) c.byte_add(T * c_row),
            c_row = in(reg) c_row,
            options(nostack),
        );
    }
}

/// `to[..rows, ..cols] = from[..rows, ..cols]`, row strides `from_rs` and `to_rs` (f32).
///
/// # Safety
/// Both reach `rows` rows of `cols` (at most 32) columns; the CPU has AVX-512 (every AMX CPU has).
#[target_feature(enable = "avx512f")]
unsafe fn copy_block(from: *const f32, from_rs: usize, to: *mut f32, to_rs: usize, rows: usize, cols: usize) {
    use std::arch::x86_64::*;
    let (lo, hi) = (lanes_mask(cols), lanes_mask(cols.saturating_sub(16)));
    for r in 0..rows {
        for (h, mask) in [(0usize, lo), (1, hi)] {
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, from.add(r * from_rs + 16 * h));
                _mm512_mask_storeu_ps(to.add(r * to_rs + 16 * h), mask, v);
            }
        }
    }
}
