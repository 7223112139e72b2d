//! Tensor bytes to f32, as ggml's reference `dequantize_row_*` functions do, and llama.cpp's
//! rotary row permutation of attention q/k weights.

use super::{GgufError, ggml_block_size, ggml_type, ggml_type_name};

/// IEEE half to f32, exactly (subnormals, infinities and NaN payloads included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    match exp {
        0 => {
            // zero or subnormal: mant * 2^-24, exact in f32
            let v = mant as f32 * (1.0 / 16_777_216.0);
            f32::from_bits(v.to_bits() | sign)
        }
        31 => f32::from_bits(sign | 0x7f80_0000 | (mant << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (mant << 13)),
    }
}

/// bfloat16 to f32 (exact: the top half of an f32).
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[inline]
fn le_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Unpack `n_elements` values of ggml type `ggml_type` from `bytes` (exactly their size) to f32,
/// as ggml's reference `dequantize_row_*` does.
pub fn dequantize(ggml_type: u32, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>, GgufError> {
    use ggml_type::*;
    let supported = matches!(
        ggml_type,
        F32 | F16
            | BF16
            | F64
            | I8
            | I16
            | I32
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | Q8_0
            | Q2_K
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
    );
    if !supported {
        return Err(GgufError::UnsupportedType {
            ggml_type,
            name: ggml_type_name(ggml_type),
            context: String::new(),
        });
    }
    let (block, block_bytes) = ggml_block_size(ggml_type).expect("supported types have a layout");
    let (block, block_bytes) = (block as usize, block_bytes as usize);
    if !n_elements.is_multiple_of(block) {
        return Err(GgufError::BadLength {
            ggml_type,
            n_elements,
            expected: None,
            got: bytes.len(),
        });
    }
    let expected = (n_elements / block).checked_mul(block_bytes);
    if expected != Some(bytes.len()) {
        return Err(GgufError::BadLength {
            ggml_type,
            n_elements,
            expected,
            got: bytes.len(),
        });
    }
    let mut out = Vec::with_capacity(n_elements);
    let blocks = bytes.chunks_exact(block_bytes);
    match ggml_type {
        F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        F16 => out.extend(blocks.map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        BF16 => out.extend(blocks.map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        F64 => out.extend(blocks.map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)),
        I8 => out.extend(blocks.map(|b| b[0] as i8 as f32)),
        I16 => out.extend(blocks.map(|b| i16::from_le_bytes([b[0], b[1]]) as f32)),
        I32 => out.extend(blocks.map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)),
        Q4_0 => blocks.for_each(|b| deq_q4_0(b, &mut out)),
        Q4_1 => blocks.for_each(|b| deq_q4_1(b, &mut out)),
        Q5_0 => blocks.for_each(|b| deq_q5_0(b, &mut out)),
        Q5_1 => blocks.for_each(|b| deq_q5_1(b, &mut out)),
        Q8_0 => blocks.for_each(|b| deq_q8_0(b, &mut out)),
        Q2_K => blocks.for_each(|b| deq_q2_k(b, &mut out)),
        Q3_K => blocks.for_each(|b| deq_q3_k(b, &mut out)),
        Q4_K => blocks.for_each(|b| deq_q4_k(b, &mut out)),
        Q5_K => blocks.for_each(|b| deq_q5_k(b, &mut out)),
        Q6_K => blocks.for_each(|b| deq_q6_k(b, &mut out)),
        _ => unreachable!("checked above"),
    }
    debug_assert_eq!(out.len(), n_elements);
    Ok(out)
}

// block_q4_0 { f16 d; u8 qs[16] }: y[j] = (lo nibble - 8) * d, y[j+16] = (hi nibble - 8) * d
fn deq_q4_0(b: &[u8], out: &mut Vec<f32>) {
    let d = le_f16(b, 0);
    let qs = &b[2..18];
    out.extend(qs.iter().map(|&q| ((q & 0x0f) as i32 - 8) as f32 * d));
    out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
}

// block_q4_1 { f16 d; f16 m; u8 qs[16] }: y = nibble * d + m
fn deq_q4_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (le_f16(b, 0), le_f16(b, 2));
    let qs = &b[4..20];
    out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
    out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
}

// block_q5_0 { f16 d; u8 qh[4]; u8 qs[16] }: 5-bit values, bit 4 from qh, minus 16
fn deq_q5_0(b: &[u8], out: &mut Vec<f32>) {
    let d = le_f16(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    let mut y = [0f32; 32];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as i32;
        let xh1 = ((qh >> (j + 12)) & 0x10) as i32;
        y[j] = (((qs[j] & 0x0f) as i32 | xh0) - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) as i32 | xh1) - 16) as f32 * d;
    }
    out.extend_from_slice(&y);
}

// block_q5_1 { f16 d; f16 m; u8 qh[4]; u8 qs[16] }: y = q5 * d + m
fn deq_q5_1(b: &[u8], out: &mut Vec<f32>) {
    let (d, m) = (le_f16(b, 0), le_f16(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    let mut y = [0f32; 32];
    for j in 0..16 {
        let xh0 = (((qh >> j) << 4) & 0x10) as u8;
        let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
        y[j] = ((qs[j] & 0x0f) | xh0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) | xh1) as f32 * d + m;
    }
    out.extend_from_slice(&y);
}

// block_q8_0 { f16 d; i8 qs[32] }: y = q * d
fn deq_q8_0(b: &[u8], out: &mut Vec<f32>) {
    let d = le_f16(b, 0);
    out.extend(b[2..34].iter().map(|&q| (q as i8) as f32 * d));
}

// block_q2_K { u8 scales[16]; u8 qs[64]; f16 d; f16 dmin }
fn deq_q2_k(b: &[u8], out: &mut Vec<f32>) {
    let scales = &b[0..16];
    let d = le_f16(b, 80);
    let min = le_f16(b, 82);
    let mut is = 0;
    for n in 0..2 {
        let q = &b[16 + 32 * n..16 + 32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let sc = scales[is];
                is += 1;
                let dl = d * (sc & 0x0f) as f32;
                let ml = min * (sc >> 4) as f32;
                for l in 0..16 {
                    out.push(dl * ((q[l + 16 * half] >> shift) & 3) as f32 - ml);
                }
            }
        }
    }
}

// block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d }
fn deq_q3_k(b: &[u8], out: &mut Vec<f32>) {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let hm = &b[0..32];
    let d_all = le_f16(b, 108);
    let mut aux = [0u32; 4];
    for (i, a) in aux.iter_mut().take(3).enumerate() {
        *a = u32::from_le_bytes(b[96 + 4 * i..100 + 4 * i].try_into().unwrap());
    }
    let tmp = aux[2];
    aux[2] = ((aux[0] >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4);
    aux[3] = ((aux[1] >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4);
    aux[0] = (aux[0] & KMASK2) | ((tmp & KMASK1) << 4);
    aux[1] = (aux[1] & KMASK2) | (((tmp >> 2) & KMASK1) << 4);
    let mut scales = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, byte) in a.to_le_bytes().iter().enumerate() {
            scales[4 * i + k] = *byte as i8;
        }
    }
    let mut is = 0;
    let mut m: u8 = 1;
    for n in 0..2 {
        let q = &b[32 + 32 * n..32 + 32 * n + 32];
        for shift in [0u32, 2, 4, 6] {
            for half in 0..2 {
                let dl = d_all * (scales[is] as i32 - 32) as f32;
                is += 1;
                for l in 0..16 {
                    let i = l + 16 * half;
                    let v = ((q[i] >> shift) & 3) as i32 - if hm[i] & m != 0 { 0 } else { 4 };
                    out.push(dl * v as f32);
                }
            }
            m = m.wrapping_shl(1);
        }
    }
}

// ggml's get_scale_min_k4: 6-bit scale and min j (0..8) from the 12 packed bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

// block_q4_K { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] }
fn deq_q4_k(b: &[u8], out: &mut Vec<f32>) {
    let d = le_f16(b, 0);
    let min = le_f16(b, 2);
    let scales = &b[4..16];
    for (c, q) in b[16..144].chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        out.extend(q.iter().map(|&x| d1 * (x & 0x0f) as f32 - m1));
        out.extend(q.iter().map(|&x| d2 * (x >> 4) as f32 - m2));
    }
}

// block_q5_K { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }
fn deq_q5_k(b: &[u8], out: &mut Vec<f32>) {
    let d = le_f16(b, 0);
    let min = le_f16(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let (mut u1, mut u2) = (1u8, 2u8);
    for (c, ql) in b[48..176].chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * c, scales);
        let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        for l in 0..32 {
            let v = (ql[l] & 0x0f) as u32 + if qh[l] & u1 != 0 { 16 } else { 0 };
            out.push(d1 * v as f32 - m1);
        }
        for l in 0..32 {
            let v = (ql[l] >> 4) as u32 + if qh[l] & u2 != 0 { 16 } else { 0 };
            out.push(d2 * v as f32 - m2);
        }
        u1 = u1.wrapping_shl(2);
        u2 = u2.wrapping_shl(2);
    }
}

// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d }
fn deq_q6_k(b: &[u8], out: &mut Vec<f32>) {
    let d = le_f16(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let mut y = [0f32; 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
        out.extend_from_slice(&y);
    }
}

// ------------------------------------------------------------------------------------------------
// Attention q/k permutation

/// Undo llama.cpp's `convert_hf_to_gguf.py` `LlamaModel.permute` on an attention q or k weight.
///
/// `w` is row-major `[rows, cols]` with `rows` = output features (`n_head * head_dim`) as read
/// from the GGUF (`dims == [cols, rows]`). `n_head` is the number of heads *of this tensor*:
/// `attention.head_count` for `attn_q`, `attention.head_count_kv` for `attn_k` (llama.cpp's
/// `permute(w, n_head, n_head_kv)` uses `n_head_kv` whenever the two differ).
///
/// llama.cpp stores, within each head, the rows of the two rotary halves interleaved (GPT-J
/// style): `w.reshape(n_head, 2, head_dim / 2, cols).swapaxes(1, 2)`. So GGUF row
/// `h * head_dim + 2 * j + i` is HF row `h * head_dim + i * head_dim / 2 + j` (`i` in {0, 1},
/// `j < head_dim / 2`), and this returns the HF (transformers, rotate-half) layout:
/// `hf[h*hd + i*hd/2 + j, :] = gguf[h*hd + 2*j + i, :]` — the same as transformers'
/// `reshape(n_head, head_dim / 2, 2, cols).swapaxes(1, 2)`.
///
/// Panics if `w.len() != rows * cols` or `rows` is not a multiple of `2 * n_head` (caller bugs,
/// not file contents: check the shapes against the metadata first).
pub fn unpermute_qk(w: &[f32], n_head: usize, rows: usize, cols: usize) -> Vec<f32> {
    move_rotary_rows(w, n_head, rows, cols, true)
}

/// The inverse of [`unpermute_qk`]: llama.cpp's `LlamaModel.permute`, HF layout to GGUF layout
/// (for writing GGUF files).
pub fn permute_qk(w: &[f32], n_head: usize, rows: usize, cols: usize) -> Vec<f32> {
    move_rotary_rows(w, n_head, rows, cols, false)
}

/// Row `h·hd + i·hd/2 + j` of the HF layout is row `h·hd + 2j + i` of the GGUF one; moves rows
/// from GGUF to HF order (`to_hf`) or back.
fn move_rotary_rows(w: &[f32], n_head: usize, rows: usize, cols: usize, to_hf: bool) -> Vec<f32> {
    let name = if to_hf { "unpermute_qk" } else { "permute_qk" };
    assert_eq!(
        w.len(),
        rows * cols,
        "{name}: {} values for a {rows}x{cols} matrix",
        w.len()
    );
    assert!(
        n_head > 0 && rows.is_multiple_of(2 * n_head),
        "{name}: {rows} rows do not split into {n_head} heads of an even size"
    );
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let hf = h * hd + i * half + j;
                let gg = h * hd + 2 * j + i;
                let (dst, src) = if to_hf { (hf, gg) } else { (gg, hf) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
