//! A reader for GGUF files, llama.cpp's model format (versions 2 and 3, little-endian).
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
//! kv_count  x { key: string, value_type u32, value }
//! tensor_count x { name: string, n_dims u32, dims u64 x n_dims, ggml_type u32, offset u64 }
//! padding to `general.alignment` (default 32)
//! data section: each tensor at data_offset + offset (offset a multiple of the alignment)
//! ```
//!
//! A string is a u64 byte length and UTF-8 bytes (no terminator). An array is an element type u32,
//! a u64 count and the elements (arrays may nest). `dims[0]` is the fastest-varying dimension: a
//! weight stored as a PyTorch `[out, in]` matrix has `dims == [in, out]`.
//!
//! Everything read from the file is bounds-checked: a truncated or corrupt file gives a
//! [`GgufError`] that says what was wrong and where, never a panic, and no count or length is
//! trusted (or allocated for) beyond what the file could hold.
//!
//! [`dequantize`] turns a tensor's bytes into f32 values exactly as ggml's reference
//! `dequantize_row_*` functions do (F32, F16, BF16, F64, I8/I16/I32, Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, Q2_K..Q6_K). [`unpermute_qk`] undoes the row permutation llama.cpp's converter applies
//! to attention q/k weights.
//!
//! This module uses only `std`, so it can be tested on its own:
//! `rustc --edition 2024 --test src/train/gguf.rs -o /tmp/gguf_test && /tmp/gguf_test`.

use std::fmt;

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// Arrays nested deeper than this are rejected (nothing real nests at all; this bounds recursion).
pub const MAX_ARRAY_DEPTH: usize = 16;

/// ggml tensor type ids (`enum ggml_type`).
pub mod ggml_type {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q5_0: u32 = 6;
    pub const Q5_1: u32 = 7;
    pub const Q8_0: u32 = 8;
    pub const Q8_1: u32 = 9;
    pub const Q2_K: u32 = 10;
    pub const Q3_K: u32 = 11;
    pub const Q4_K: u32 = 12;
    pub const Q5_K: u32 = 13;
    pub const Q6_K: u32 = 14;
    pub const Q8_K: u32 = 15;
    pub const I8: u32 = 24;
    pub const I16: u32 = 25;
    pub const I32: u32 = 26;
    pub const I64: u32 = 27;
    pub const F64: u32 = 28;
    pub const BF16: u32 = 30;
}

/// The name ggml gives a tensor type id, e.g. `"Q4_K"`; `"unknown"` for ids it does not define.
pub fn ggml_type_name(t: u32) -> &'static str {
    match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        4 => "Q4_2 (removed)",
        5 => "Q4_3 (removed)",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        31 => "Q4_0_4_4 (removed)",
        32 => "Q4_0_4_8 (removed)",
        33 => "Q4_0_8_8 (removed)",
        34 => "TQ1_0",
        35 => "TQ2_0",
        36 => "IQ4_NL_4_4 (removed)",
        37 => "IQ4_NL_4_8 (removed)",
        38 => "IQ4_NL_8_8 (removed)",
        39 => "MXFP4",
        40 => "NVFP4",
        41 => "Q1_0",
        _ => "unknown",
    }
}

/// `(elements per block, bytes per block)` of a ggml type (gguf-py's `GGML_QUANT_SIZES`), or
/// `None` for an id with no storage layout (unknown or removed).
pub fn ggml_block_size(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),
        1 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 40),
        10 => (256, 84),
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        20 => (32, 18),
        21 => (256, 110),
        22 => (256, 82),
        23 => (256, 136),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 => (1, 8),
        28 => (1, 8),
        29 => (256, 56),
        30 => (1, 2),
        34 => (256, 54),
        35 => (256, 66),
        39 => (32, 17),
        40 => (64, 36),
        41 => (128, 18),
        _ => return None,
    })
}

/// Bytes that `n_elements` values of type `t` take, or `None` if the type has no known layout,
/// `n_elements` is not a whole number of blocks, or the size overflows.
pub fn ggml_nbytes(t: u32, n_elements: u64) -> Option<u64> {
    let (block, bytes) = ggml_block_size(t)?;
    if !n_elements.is_multiple_of(block) {
        return None;
    }
    (n_elements / block).checked_mul(bytes)
}

// ------------------------------------------------------------------------------------------------
// Errors

/// What went wrong reading a GGUF file or dequantizing a tensor.
#[derive(Debug)]
pub enum GgufError {
    /// The file ended (or a length ran) past its end.
    Truncated {
        offset: u64,
        needed: u64,
        available: u64,
        what: String,
    },
    /// The file does not start with `GGUF`.
    BadMagic { found: [u8; 4] },
    /// A version other than 2 or 3.
    UnsupportedVersion { version: u32 },
    /// A count or length that cannot fit in what is left of the file.
    TooLarge {
        offset: u64,
        what: String,
        count: u64,
        limit: u64,
    },
    /// A metadata value type id that GGUF does not define.
    BadValueType {
        offset: u64,
        key: String,
        value_type: u32,
    },
    /// Arrays nested deeper than [`MAX_ARRAY_DEPTH`].
    NestingTooDeep { offset: u64, key: String },
    /// A string that is not valid UTF-8.
    InvalidUtf8 { offset: u64, what: String },
    /// The same metadata key twice.
    DuplicateKey { offset: u64, key: String },
    /// A metadata value that has the wrong type or an invalid value (e.g. `general.alignment`).
    BadMetadata { key: String, reason: String },
    /// A tensor description that cannot be right (too many dims, misaligned offset, data past
    /// the end of the file, duplicate name, ...).
    BadTensor { name: String, reason: String },
    /// A ggml type this reader cannot dequantize (or, for [`ggml_nbytes`]-based checks, size).
    UnsupportedType {
        ggml_type: u32,
        name: &'static str,
        context: String,
    },
    /// A byte buffer whose length does not match the element count for its type.
    BadLength {
        ggml_type: u32,
        n_elements: usize,
        expected: Option<usize>,
        got: usize,
    },
}

impl fmt::Display for GgufError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufError::Truncated {
                offset,
                needed,
                available,
                what,
            } => write!(
                f,
                "GGUF truncated: reading {what} at offset {offset} needs {needed} bytes, only {available} left"
            ),
            GgufError::BadMagic { found } => write!(
                f,
                "not a GGUF file: magic is {:02x?} ({:?}), expected \"GGUF\"",
                found,
                String::from_utf8_lossy(found)
            ),
            GgufError::UnsupportedVersion { version } => {
                if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
                    write!(
                        f,
                        "unsupported GGUF version {version} (this looks like a big-endian GGUF v{}; only little-endian files are supported)",
                        version.swap_bytes()
                    )
                } else {
                    write!(f, "unsupported GGUF version {version} (supported: 2 and 3)")
                }
            }
            GgufError::TooLarge {
                offset,
                what,
                count,
                limit,
            } => write!(
                f,
                "GGUF corrupt: {what} at offset {offset} is {count}, more than the file can hold (at most {limit})"
            ),
            GgufError::BadValueType {
                offset,
                key,
                value_type,
            } => write!(
                f,
                "GGUF corrupt: metadata key {key:?} has unknown value type {value_type} at offset {offset}"
            ),
            GgufError::NestingTooDeep { offset, key } => write!(
                f,
                "GGUF corrupt: metadata key {key:?} nests arrays more than {MAX_ARRAY_DEPTH} deep (offset {offset})"
            ),
            GgufError::InvalidUtf8 { offset, what } => {
                write!(
                    f,
                    "GGUF corrupt: {what} at offset {offset} is not valid UTF-8"
                )
            }
            GgufError::DuplicateKey { offset, key } => {
                write!(
                    f,
                    "GGUF corrupt: metadata key {key:?} appears twice (again at offset {offset})"
                )
            }
            GgufError::BadMetadata { key, reason } => write!(f, "GGUF metadata {key:?}: {reason}"),
            GgufError::BadTensor { name, reason } => write!(f, "GGUF tensor {name:?}: {reason}"),
            GgufError::UnsupportedType {
                ggml_type,
                name,
                context,
            } => write!(
                f,
                "unsupported ggml tensor type {ggml_type} ({name}){}{context}",
                if context.is_empty() { "" } else { " for " }
            ),
            GgufError::BadLength {
                ggml_type,
                n_elements,
                expected,
                got,
            } => match expected {
                Some(e) => write!(
                    f,
                    "{n_elements} values of ggml type {} need {e} bytes, got {got}",
                    ggml_type_name(*ggml_type)
                ),
                None => write!(
                    f,
                    "{n_elements} values is not a whole number of ggml type {} blocks (of {})",
                    ggml_type_name(*ggml_type),
                    ggml_block_size(*ggml_type).map_or(0, |b| b.0)
                ),
            },
        }
    }
}

impl std::error::Error for GgufError {}

// ------------------------------------------------------------------------------------------------
// Values

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// Any integer that is non-negative, as u64 (not bools or floats).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer that fits in an i64 (not bools or floats).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            _ => self.as_u64().map(|v| v as i64),
        }
    }

    /// A float, or an integer converted to f64 (GGUF writers are not consistent about which
    /// they use for, e.g., `rope.freq_base`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The GGUF name of this value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "uint8",
            GgufValue::I8(_) => "int8",
            GgufValue::U16(_) => "uint16",
            GgufValue::I16(_) => "int16",
            GgufValue::U32(_) => "uint32",
            GgufValue::I32(_) => "int32",
            GgufValue::U64(_) => "uint64",
            GgufValue::I64(_) => "int64",
            GgufValue::F32(_) => "float32",
            GgufValue::F64(_) => "float64",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
        }
    }
}

// GGUF value type ids (`enum gguf_type`).
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// The fewest bytes one value of a GGUF value type takes in the file (for guarding counts).
fn min_value_size(t: u32) -> Option<u64> {
    Some(match t {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 | T_STRING => 8,
        T_ARRAY => 12,
        _ => return None,
    })
}

// ------------------------------------------------------------------------------------------------
// File

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the fastest-varying dimension (the row length). A PyTorch
    /// `[out, in]` weight has `dims == [in, out]`.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Byte offset of the data, relative to [`GgufFile::data_offset`].
    pub offset: u64,
}

impl GgufTensorInfo {
    /// Number of values (product of the dims; 1 for a 0-d tensor).
    pub fn n_elements(&self) -> u64 {
        // Checked at parse time not to overflow.
        self.dims.iter().product()
    }

    /// Size of the data in bytes, if the type's layout is known.
    pub fn n_bytes(&self) -> Option<u64> {
        ggml_nbytes(self.ggml_type, self.n_elements())
    }

    /// The dims in PyTorch order (slowest-varying first): `[out, in]` for a weight matrix.
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    pub fn type_name(&self) -> &'static str {
        ggml_type_name(self.ggml_type)
    }
}

/// A parsed GGUF header: metadata in file order, tensor descriptions, and where the data starts.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    /// Absolute byte offset of the data section (end of the header, padded to the alignment).
    pub data_offset: u64,
    /// `general.alignment`, or [`DEFAULT_ALIGNMENT`].
    pub alignment: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                offset: self.pos as u64,
                needed: n,
                available: self.remaining(),
                what: what(),
            });
        }
        let n = n as usize; // n <= remaining <= usize::MAX
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len_at = self.pos as u64;
        let len = self.u64(&|| format!("length of {}", what()))?;
        if len > self.remaining() {
            return Err(GgufError::Truncated {
                offset: len_at,
                needed: len,
                available: self.remaining(),
                what: format!("{} (string of {len} bytes)", what()),
            });
        }
        let at = self.pos as u64;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            offset: at,
            what: what(),
        })
    }

    /// Check that `count` items of at least `min_size` bytes each can fit in the rest of the file.
    fn guard_count(
        &self,
        count: u64,
        min_size: u64,
        at: u64,
        what: &dyn Fn() -> String,
    ) -> Result<(), GgufError> {
        let limit = self.remaining() / min_size.max(1);
        if count > limit {
            return Err(GgufError::TooLarge {
                offset: at,
                what: what(),
                count,
                limit,
            });
        }
        Ok(())
    }

    fn value(&mut self, t: u32, key: &str, depth: usize) -> Result<GgufValue, GgufError> {
        let what = || format!("value of metadata key {key:?}");
        Ok(match t {
            T_U8 => GgufValue::U8(self.array::<1>(&what)?[0]),
            T_I8 => GgufValue::I8(self.array::<1>(&what)?[0] as i8),
            T_U16 => GgufValue::U16(u16::from_le_bytes(self.array(&what)?)),
            T_I16 => GgufValue::I16(i16::from_le_bytes(self.array(&what)?)),
            T_U32 => GgufValue::U32(u32::from_le_bytes(self.array(&what)?)),
            T_I32 => GgufValue::I32(i32::from_le_bytes(self.array(&what)?)),
            T_U64 => GgufValue::U64(u64::from_le_bytes(self.array(&what)?)),
            T_I64 => GgufValue::I64(i64::from_le_bytes(self.array(&what)?)),
            T_F32 => GgufValue::F32(f32::from_le_bytes(self.array(&what)?)),
            T_F64 => GgufValue::F64(f64::from_le_bytes(self.array(&what)?)),
            T_BOOL => {
                let at = self.pos as u64;
                match self.array::<1>(&what)?[0] {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    b => {
                        return Err(GgufError::BadMetadata {
                            key: key.to_string(),
                            reason: format!("bool at offset {at} is {b}, not 0 or 1"),
                        });
                    }
                }
            }
            T_STRING => GgufValue::String(self.string(&what)?),
            T_ARRAY => {
                let at = self.pos as u64;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::NestingTooDeep {
                        offset: at,
                        key: key.to_string(),
                    });
                }
                let et = self.u32(&|| format!("array element type of metadata key {key:?}"))?;
                let Some(min) = min_value_size(et) else {
                    return Err(GgufError::BadValueType {
                        offset: at,
                        key: key.to_string(),
                        value_type: et,
                    });
                };
                let count_at = self.pos as u64;
                let count = self.u64(&|| format!("array length of metadata key {key:?}"))?;
                self.guard_count(count, min, count_at, &|| {
                    format!("array length of metadata key {key:?}")
                })?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(et, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            _ => {
                return Err(GgufError::BadValueType {
                    offset: self.pos.saturating_sub(4) as u64,
                    key: key.to_string(),
                    value_type: t,
                });
            }
        })
    }
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

impl GgufFile {
    /// Parse the header of a whole GGUF file held in memory, and check that every tensor of a
    /// known type lies inside `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let magic: [u8; 4] = r.array(&|| "magic".to_string())?;
        if magic != GGUF_MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = r.u32(&|| "version".to_string())?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let n_tensors_at = r.pos as u64;
        let n_tensors = r.u64(&|| "tensor count".to_string())?;
        let n_kv_at = r.pos as u64;
        let n_kv = r.u64(&|| "metadata key/value count".to_string())?;
        // key (8) + type (4) + smallest value (1)
        r.guard_count(n_kv, 13, n_kv_at, &|| {
            "metadata key/value count".to_string()
        })?;

        let mut metadata: Vec<(String, GgufValue)> = Vec::with_capacity(n_kv as usize);
        let mut seen = std::collections::HashSet::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key_at = r.pos as u64;
            let key = r.string(&|| format!("key of metadata entry {i}"))?;
            let t = r.u32(&|| format!("value type of metadata key {key:?}"))?;
            let value = r.value(t, &key, 0)?;
            if !seen.insert(key.clone()) {
                return Err(GgufError::DuplicateKey {
                    offset: key_at,
                    key,
                });
            }
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((k, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::BadMetadata {
                        key: k.clone(),
                        reason: format!("must be a power of two, got {v:?}"),
                    });
                }
            },
        };

        // name (8) + n_dims (4) + type (4) + offset (8)
        r.guard_count(n_tensors, 24, n_tensors_at, &|| "tensor count".to_string())?;
        let mut tensors: Vec<GgufTensorInfo> = Vec::with_capacity(n_tensors as usize);
        let mut names = std::collections::HashSet::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = r.string(&|| format!("name of tensor {i}"))?;
            let bad = |reason: String| GgufError::BadTensor {
                name: name.clone(),
                reason,
            };
            let n_dims = r.u32(&|| format!("dim count of tensor {name:?}"))?;
            if n_dims as usize > MAX_DIMS {
                return Err(bad(format!(
                    "has {n_dims} dims, at most {MAX_DIMS} are allowed"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                dims.push(r.u64(&|| format!("dim {d} of tensor {name:?}"))?);
            }
            let ggml_type = r.u32(&|| format!("type of tensor {name:?}"))?;
            let offset = r.u64(&|| format!("data offset of tensor {name:?}"))?;
            let mut n: u64 = 1;
            for &d in &dims {
                n = n
                    .checked_mul(d)
                    .filter(|&n| n <= i64::MAX as u64)
                    .ok_or_else(|| bad(format!("dims {dims:?} overflow the element count")))?;
            }
            if let Some((block, _)) = ggml_block_size(ggml_type) {
                let row = dims.first().copied().unwrap_or(1);
                if !row.is_multiple_of(block) {
                    return Err(bad(format!(
                        "row length {row} is not a multiple of the {} block size {block}",
                        ggml_type_name(ggml_type)
                    )));
                }
            }
            if !offset.is_multiple_of(alignment) {
                return Err(bad(format!(
                    "data offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(bad("appears twice".to_string()));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }

        let data_offset =
            align_up(r.pos as u64, alignment).ok_or_else(|| GgufError::BadMetadata {
                key: "general.alignment".to_string(),
                reason: format!("alignment {alignment} overflows the data offset"),
            })?;
        let file_len = bytes.len() as u64;
        if !tensors.is_empty() && data_offset > file_len {
            return Err(GgufError::Truncated {
                offset: r.pos as u64,
                needed: data_offset - r.pos as u64,
                available: r.remaining(),
                what: "padding before the tensor data".to_string(),
            });
        }
        for t in &tensors {
            // Tensors of a type with no known layout are checked when their bytes are asked for.
            let Some(size) = t.n_bytes() else { continue };
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(size));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(GgufError::BadTensor {
                        name: t.name.clone(),
                        reason: format!(
                            "data ({size} bytes of {} at data offset {} + {}) runs past the end of the file ({file_len} bytes): truncated?",
                            t.type_name(),
                            data_offset,
                            t.offset
                        ),
                    });
                }
            }
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            data_offset,
            alignment,
        })
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A metadata value that must be present and a non-negative integer.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| GgufError::BadMetadata {
            key: key.to_string(),
            reason: format!("expected a non-negative integer, found {}", v.type_name()),
        })
    }

    /// A metadata value that must be present and a number.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| GgufError::BadMetadata {
            key: key.to_string(),
            reason: format!("expected a number, found {}", v.type_name()),
        })
    }

    /// A metadata value that must be present and a string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| GgufError::BadMetadata {
            key: key.to_string(),
            reason: format!("expected a string, found {}", v.type_name()),
        })
    }

    fn require(&self, key: &str) -> Result<&GgufValue, GgufError> {
        self.get(key).ok_or_else(|| GgufError::BadMetadata {
            key: key.to_string(),
            reason: "missing".to_string(),
        })
    }

    /// `general.architecture`, e.g. `"llama"`.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(|v| v.as_str())
    }

    /// A tensor's description by name.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor, from the same `file` this header was parsed from.
    pub fn tensor_bytes<'a>(
        &self,
        file: &'a [u8],
        info: &GgufTensorInfo,
    ) -> Result<&'a [u8], GgufError> {
        let size = info.n_bytes().ok_or_else(|| GgufError::UnsupportedType {
            ggml_type: info.ggml_type,
            name: ggml_type_name(info.ggml_type),
            context: format!("tensor {:?} (its size is unknown)", info.name),
        })?;
        let start = self.data_offset.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(size));
        match (start, end) {
            (Some(start), Some(end)) if end <= file.len() as u64 => {
                Ok(&file[start as usize..end as usize])
            }
            _ => Err(GgufError::BadTensor {
                name: info.name.clone(),
                reason: format!(
                    "data ({size} bytes at data offset {} + {}) runs past the end of the {}-byte buffer",
                    self.data_offset,
                    info.offset,
                    file.len()
                ),
            }),
        }
    }

    /// A tensor's values as f32, in GGUF (row-major, `dims[0]` fastest) order.
    pub fn tensor_f32(&self, file: &[u8], name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::BadTensor {
            name: name.to_string(),
            reason: "no such tensor in the file".to_string(),
        })?;
        let bytes = self.tensor_bytes(file, info)?;
        let n = usize::try_from(info.n_elements()).map_err(|_| GgufError::BadTensor {
            name: name.to_string(),
            reason: "too many elements for this platform".to_string(),
        })?;
        dequantize(info.ggml_type, bytes, n).map_err(|e| match e {
            GgufError::UnsupportedType {
                ggml_type,
                name: tn,
                ..
            } => GgufError::UnsupportedType {
                ggml_type,
                name: tn,
                context: format!("tensor {name:?}"),
            },
            e => e,
        })
    }
}

// ------------------------------------------------------------------------------------------------
// Dequantization

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    // ---- a minimal JSON reader, so these tests need nothing outside std ----

    #[derive(Debug, Clone)]
    #[allow(dead_code)] // Bool's payload is parsed, never read
    enum Json {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<Json>),
        Obj(BTreeMap<String, Json>),
    }

    impl Json {
        fn get(&self, k: &str) -> &Json {
            match self {
                Json::Obj(m) => m.get(k).unwrap_or_else(|| panic!("no key {k:?}")),
                _ => panic!("not an object looking up {k:?}"),
            }
        }
        fn arr(&self) -> &[Json] {
            match self {
                Json::Arr(a) => a,
                _ => panic!("not an array: {self:?}"),
            }
        }
        fn obj(&self) -> &BTreeMap<String, Json> {
            match self {
                Json::Obj(m) => m,
                _ => panic!("not an object"),
            }
        }
        fn num(&self) -> f64 {
            match self {
                Json::Num(n) => *n,
                // the goldens spell non-finite floats as strings
                Json::Str(s) if s == "inf" => f64::INFINITY,
                Json::Str(s) if s == "-inf" => f64::NEG_INFINITY,
                Json::Str(s) if s == "nan" => f64::NAN,
                _ => panic!("not a number: {self:?}"),
            }
        }
        fn str(&self) -> &str {
            match self {
                Json::Str(s) => s,
                _ => panic!("not a string: {self:?}"),
            }
        }
        fn f32s(&self) -> Vec<f32> {
            self.arr().iter().map(|v| v.num() as f32).collect()
        }
    }

    fn parse_json(s: &str) -> Json {
        let b = s.as_bytes();
        let mut i = 0;
        let v = json_value(b, &mut i);
        json_ws(b, &mut i);
        assert_eq!(i, b.len(), "trailing data in JSON");
        v
    }

    fn json_ws(b: &[u8], i: &mut usize) {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }

    fn json_value(b: &[u8], i: &mut usize) -> Json {
        json_ws(b, i);
        match b[*i] {
            b'{' => {
                *i += 1;
                let mut m = BTreeMap::new();
                json_ws(b, i);
                if b[*i] == b'}' {
                    *i += 1;
                    return Json::Obj(m);
                }
                loop {
                    json_ws(b, i);
                    let Json::Str(k) = json_value(b, i) else {
                        panic!("object key")
                    };
                    json_ws(b, i);
                    assert_eq!(b[*i], b':');
                    *i += 1;
                    let v = json_value(b, i);
                    m.insert(k, v);
                    json_ws(b, i);
                    *i += 1;
                    if b[*i - 1] == b'}' {
                        return Json::Obj(m);
                    }
                }
            }
            b'[' => {
                *i += 1;
                let mut a = Vec::new();
                json_ws(b, i);
                if b[*i] == b']' {
                    *i += 1;
                    return Json::Arr(a);
                }
                loop {
                    a.push(json_value(b, i));
                    json_ws(b, i);
                    *i += 1;
                    if b[*i - 1] == b']' {
                        return Json::Arr(a);
                    }
                }
            }
            b'"' => {
                *i += 1;
                let mut out: Vec<u8> = Vec::new();
                loop {
                    let c = b[*i];
                    *i += 1;
                    match c {
                        b'"' => return Json::Str(String::from_utf8(out).unwrap()),
                        b'\\' => {
                            let e = b[*i];
                            *i += 1;
                            let ch = match e {
                                b'n' => '\n',
                                b't' => '\t',
                                b'r' => '\r',
                                b'b' => '\u{8}',
                                b'f' => '\u{c}',
                                b'u' => {
                                    let hex = |i: &mut usize| {
                                        let h = std::str::from_utf8(&b[*i..*i + 4]).unwrap();
                                        *i += 4;
                                        u32::from_str_radix(h, 16).unwrap()
                                    };
                                    let mut cp = hex(i);
                                    if (0xd800..0xdc00).contains(&cp) {
                                        *i += 2; // \u
                                        let lo = hex(i);
                                        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                                    }
                                    char::from_u32(cp).unwrap()
                                }
                                other => other as char,
                            };
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        c => out.push(c),
                    }
                }
            }
            b't' => {
                *i += 4;
                Json::Bool(true)
            }
            b'f' => {
                *i += 5;
                Json::Bool(false)
            }
            b'n' => {
                *i += 4;
                Json::Null
            }
            _ => {
                let start = *i;
                while *i < b.len()
                    && matches!(b[*i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    *i += 1;
                }
                Json::Num(std::str::from_utf8(&b[start..*i]).unwrap().parse().unwrap())
            }
        }
    }

    // ---- fixtures ----

    fn fixture_path() -> String {
        std::env::var("GGUF_FIXTURE")
            .unwrap_or_else(|_| "tests/fixtures/train/tiny_llama.gguf".to_string())
    }

    fn golden_path() -> String {
        std::env::var("GGUF_GOLDEN").unwrap_or_else(|_| {
            let f = fixture_path();
            match f.strip_suffix(".gguf") {
                Some(stem) => format!("{stem}_gguf_golden.json"),
                None => "tests/fixtures/train/tiny_llama_gguf_golden.json".to_string(),
            }
        })
    }

    fn load_fixture() -> (Vec<u8>, GgufFile) {
        let path = fixture_path();
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("reading {path}: {e} (set GGUF_FIXTURE)"));
        let f = GgufFile::parse(&bytes).unwrap_or_else(|e| panic!("parsing {path}: {e}"));
        (bytes, f)
    }

    fn load_golden() -> Json {
        let path = golden_path();
        let s = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {path}: {e} (set GGUF_GOLDEN)"));
        parse_json(&s)
    }

    /// HF tensor name -> GGUF tensor name (llama).
    fn gguf_name(hf: &str) -> String {
        if hf == "model.embed_tokens.weight" || hf == "lm_head.weight" {
            return "token_embd.weight".into();
        }
        if hf == "model.norm.weight" {
            return "output_norm.weight".into();
        }
        let rest = hf.strip_prefix("model.layers.").unwrap();
        let (layer, leaf) = rest.split_once('.').unwrap();
        let g = match leaf {
            "self_attn.q_proj.weight" => "attn_q",
            "self_attn.k_proj.weight" => "attn_k",
            "self_attn.v_proj.weight" => "attn_v",
            "self_attn.o_proj.weight" => "attn_output",
            "mlp.gate_proj.weight" => "ffn_gate",
            "mlp.up_proj.weight" => "ffn_up",
            "mlp.down_proj.weight" => "ffn_down",
            "input_layernorm.weight" => "attn_norm",
            "post_attention_layernorm.weight" => "ffn_norm",
            other => panic!("unmapped {other}"),
        };
        format!("blk.{layer}.{g}.weight")
    }

    /// A tensor in HF layout and values, as transformers loads it.
    fn hf_tensor(f: &GgufFile, bytes: &[u8], hf: &str) -> (Vec<f32>, Vec<u64>) {
        let name = gguf_name(hf);
        let info = f.tensor(&name).unwrap();
        let mut v = f.tensor_f32(bytes, &name).unwrap();
        let shape = info.shape();
        let n_head = f.get_u64("llama.attention.head_count").unwrap() as usize;
        let n_kv = f.get_u64("llama.attention.head_count_kv").unwrap() as usize;
        if name.ends_with("attn_q.weight") {
            v = unpermute_qk(&v, n_head, shape[0] as usize, shape[1] as usize);
        } else if name.ends_with("attn_k.weight") {
            v = unpermute_qk(&v, n_kv, shape[0] as usize, shape[1] as usize);
        }
        (v, shape)
    }

    fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits(),
                "{what}[{i}]: got {g:e}, want {w:e}"
            );
        }
    }

    // ---- the fixture ----

    #[test]
    fn fixture_header_and_metadata() {
        let (bytes, f) = load_fixture();
        assert_eq!(f.version, 3);
        assert_eq!(f.alignment, 32);
        assert_eq!(f.data_offset % 32, 0);
        assert!(f.data_offset <= bytes.len() as u64);
        assert_eq!(f.architecture(), Some("llama"));
        assert_eq!(f.get_str("general.name").unwrap(), "grist-tiny-llama");
        assert_eq!(f.get_u64("llama.block_count").unwrap(), 2);
        assert_eq!(f.get_u64("llama.context_length").unwrap(), 64);
        assert_eq!(f.get_u64("llama.embedding_length").unwrap(), 64);
        assert_eq!(f.get_u64("llama.feed_forward_length").unwrap(), 128);
        assert_eq!(f.get_u64("llama.attention.head_count").unwrap(), 4);
        assert_eq!(f.get_u64("llama.attention.head_count_kv").unwrap(), 2);
        assert_eq!(f.get_u64("llama.rope.dimension_count").unwrap(), 16);
        assert_eq!(f.get_u64("llama.vocab_size").unwrap(), 96);
        assert_eq!(f.get_f64("llama.rope.freq_base").unwrap(), 10000.0);
        assert_eq!(
            f.get("llama.attention.layer_norm_rms_epsilon"),
            Some(&GgufValue::F32(1e-5))
        );
        assert_eq!(f.get("general.file_type"), Some(&GgufValue::U32(2)));
        // the extra typed keys the script writes
        assert_eq!(f.get("grist.test.u8"), Some(&GgufValue::U8(200)));
        assert_eq!(f.get("grist.test.i8"), Some(&GgufValue::I8(-100)));
        assert_eq!(f.get("grist.test.u16"), Some(&GgufValue::U16(60000)));
        assert_eq!(f.get("grist.test.i16"), Some(&GgufValue::I16(-30000)));
        assert_eq!(
            f.get("grist.test.i32"),
            Some(&GgufValue::I32(-2_000_000_000))
        );
        assert_eq!(f.get("grist.test.u64"), Some(&GgufValue::U64(1 << 40)));
        assert_eq!(f.get("grist.test.i64"), Some(&GgufValue::I64(-(1 << 40))));
        assert_eq!(f.get("grist.test.f64"), Some(&GgufValue::F64(0.1)));
        assert_eq!(f.get("grist.test.bool"), Some(&GgufValue::Bool(true)));
        let strings: Vec<&str> = f
            .get("grist.test.strings")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(strings, ["a", "ßç", ""]);
        assert_eq!(
            f.get("grist.test.i32s").unwrap().as_array().unwrap(),
            &[GgufValue::I32(1), GgufValue::I32(-2), GgufValue::I32(3)]
        );
        assert_eq!(
            f.get("grist.test.f32s").unwrap().as_array().unwrap(),
            &[GgufValue::F32(0.5), GgufValue::F32(-1.25)]
        );
        assert_eq!(f.get("grist.test.i64").unwrap().as_u64(), None);
        assert_eq!(f.get("grist.test.i64").unwrap().as_i64(), Some(-(1 << 40)));
        assert!(f.get("no.such.key").is_none());

        // tensors: 1 embedding + 9 per block + final norm, no output.weight (tied)
        assert_eq!(f.tensors.len(), 1 + 2 * 9 + 1);
        assert!(f.tensor("output.weight").is_none());
        let emb = f.tensor("token_embd.weight").unwrap();
        assert_eq!(emb.dims, [64, 96]);
        assert_eq!(emb.shape(), [96, 64]);
        assert_eq!(emb.ggml_type, ggml_type::F16);
        let want = [
            ("attn_q", ggml_type::Q4_0, [64u64, 64]),
            ("attn_k", ggml_type::Q4_1, [64, 32]),
            ("attn_v", ggml_type::Q8_0, [64, 32]),
            ("attn_output", ggml_type::F16, [64, 64]),
            ("ffn_gate", ggml_type::Q4_1, [64, 128]),
            ("ffn_up", ggml_type::Q4_0, [64, 128]),
            ("ffn_down", ggml_type::Q8_0, [128, 64]),
        ];
        for layer in 0..2 {
            for (g, t, dims) in want {
                let info = f.tensor(&format!("blk.{layer}.{g}.weight")).unwrap();
                assert_eq!(
                    (info.ggml_type, info.dims.as_slice()),
                    (t, dims.as_slice()),
                    "{}",
                    info.name
                );
                assert_eq!(info.offset % f.alignment, 0);
                let b = f.tensor_bytes(&bytes, info).unwrap();
                assert_eq!(b.len() as u64, info.n_bytes().unwrap());
            }
            for g in ["attn_norm", "ffn_norm"] {
                let info = f.tensor(&format!("blk.{layer}.{g}.weight")).unwrap();
                assert_eq!(
                    (info.ggml_type, info.dims.as_slice()),
                    (ggml_type::F32, [64u64].as_slice())
                );
            }
        }
    }

    #[test]
    fn fixture_dequantized_matches_transformers() {
        let (bytes, f) = load_fixture();
        let g = load_golden();
        let stats = g.get("dequantized_stats").obj();
        let col0 = g.get("dequantized_col0").obj();
        let mut checked = 0;
        for (hf, want) in g.get("dequantized").obj() {
            let (v, shape) = hf_tensor(&f, &bytes, hf);
            let want = want.f32s();
            // transformers dequantizes with gguf-py, which does ggml's f32 arithmetic: bit-exact.
            assert_bits_eq(&v[..want.len()], &want, hf);
            let st = stats[hf].obj();
            let want_shape: Vec<u64> = st["shape"].arr().iter().map(|x| x.num() as u64).collect();
            assert_eq!(shape, want_shape, "{hf} shape");
            let sum: f64 = v.iter().map(|&x| x as f64).sum();
            let wsum: f64 = v
                .iter()
                .enumerate()
                .map(|(i, &x)| ((i % 97) + 1) as f64 * x as f64)
                .sum();
            let (ws, ww) = (st["sum"].num(), st["wsum"].num());
            assert!(
                (sum - ws).abs() <= 1e-9 * (1.0 + ws.abs()),
                "{hf}: sum {sum} vs {ws}"
            );
            assert!(
                (wsum - ww).abs() <= 1e-9 * (1.0 + ww.abs()),
                "{hf}: wsum {wsum} vs {ww}"
            );
            if let Some(c) = col0.get(hf) {
                let cols = shape[1] as usize;
                let got: Vec<f32> = v.iter().step_by(cols).copied().collect();
                assert_bits_eq(&got, &c.f32s(), &format!("{hf} column 0"));
            }
            checked += 1;
        }
        assert_eq!(checked, 21);
        assert!(col0.len() >= 4);
    }

    #[test]
    fn dequant_blocks_match_gguf_py() {
        let g = load_golden();
        for (name, case) in g.get("dequant_blocks").obj() {
            let t = case.get("ggml_type").num() as u32;
            assert_eq!(ggml_type_name(t), name.as_str());
            let hex = case.get("bytes_hex").str();
            let raw: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let want = case.get("values").f32s();
            let got = dequantize(t, &raw, want.len()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.len(), want.len());
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                let same = a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
                assert!(same, "{name}[{i}]: got {a:e}, want {b:e}");
            }
        }
    }

    #[test]
    fn truncated_fixture_is_an_error_at_every_length() {
        let (bytes, f) = load_fixture();
        let needed = f
            .tensors
            .iter()
            .map(|t| f.data_offset + t.offset + t.n_bytes().unwrap())
            .max()
            .unwrap();
        for len in 0..bytes.len() {
            let r = GgufFile::parse(&bytes[..len]);
            if (len as u64) < needed {
                let e = r.expect_err(&format!("prefix of {len} bytes parsed"));
                let msg = e.to_string();
                assert!(!msg.is_empty());
                if len == 10 {
                    assert!(
                        msg.contains("truncated") && msg.contains("offset 8"),
                        "{msg}"
                    );
                }
            } else {
                r.unwrap();
            }
        }
        // tensor_bytes refuses a buffer that is too short for that tensor
        let last = f.tensors.iter().max_by_key(|t| t.offset).unwrap();
        let short = &bytes[..(f.data_offset + last.offset) as usize + 1];
        let e = f.tensor_bytes(short, last).unwrap_err();
        assert!(e.to_string().contains(&last.name), "{e}");
    }

    // ---- an in-memory GGUF builder, for the corrupt-file and value-type cases ----

    #[derive(Default)]
    struct Builder {
        version: u32,
        kv: Vec<u8>,
        n_kv: u64,
        ti: Vec<u8>,
        n_t: u64,
        data: Vec<u8>,
        alignment: usize,
    }

    fn put_str(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                version: 3,
                alignment: 32,
                ..Default::default()
            }
        }
        /// Raw key/value: `value` is the encoded value (without its type).
        fn kv(&mut self, key: &str, t: u32, value: &[u8]) -> &mut Self {
            put_str(&mut self.kv, key.as_bytes());
            self.kv.extend_from_slice(&t.to_le_bytes());
            self.kv.extend_from_slice(value);
            self.n_kv += 1;
            self
        }
        /// An F32 tensor with `dims`, data appended (aligned).
        fn tensor_f32(&mut self, name: &str, dims: &[u64], values: &[f32]) -> &mut Self {
            while !self.data.len().is_multiple_of(self.alignment) {
                self.data.push(0);
            }
            let offset = self.data.len() as u64;
            for v in values {
                self.data.extend_from_slice(&v.to_le_bytes());
            }
            self.tensor_raw(name, dims, ggml_type::F32, offset)
        }
        fn tensor_raw(&mut self, name: &str, dims: &[u64], t: u32, offset: u64) -> &mut Self {
            put_str(&mut self.ti, name.as_bytes());
            self.ti
                .extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                self.ti.extend_from_slice(&d.to_le_bytes());
            }
            self.ti.extend_from_slice(&t.to_le_bytes());
            self.ti.extend_from_slice(&offset.to_le_bytes());
            self.n_t += 1;
            self
        }
        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(b"GGUF");
            out.extend_from_slice(&self.version.to_le_bytes());
            out.extend_from_slice(&self.n_t.to_le_bytes());
            out.extend_from_slice(&self.n_kv.to_le_bytes());
            out.extend_from_slice(&self.kv);
            out.extend_from_slice(&self.ti);
            while out.len() % self.alignment != 0 {
                out.push(0);
            }
            out.extend_from_slice(&self.data);
            out
        }
    }

    fn arr(et: u32, count: u64, items: &[u8]) -> Vec<u8> {
        let mut v = et.to_le_bytes().to_vec();
        v.extend_from_slice(&count.to_le_bytes());
        v.extend_from_slice(items);
        v
    }

    #[test]
    fn all_value_types_and_nested_arrays() {
        let mut strs = Vec::new();
        put_str(&mut strs, b"x");
        put_str(&mut strs, "é".as_bytes());
        let inner1 = arr(T_U16, 2, &[1, 0, 2, 0]);
        let inner2 = arr(T_U16, 0, &[]);
        let nested = arr(T_ARRAY, 2, &[inner1, inner2].concat());
        let mut b = Builder::new();
        b.version = 2;
        b.kv("u8", T_U8, &[255])
            .kv("i8", T_I8, &[0x80])
            .kv("u16", T_U16, &65535u16.to_le_bytes())
            .kv("i16", T_I16, &(-2i16).to_le_bytes())
            .kv("u32", T_U32, &7u32.to_le_bytes())
            .kv("i32", T_I32, &(-7i32).to_le_bytes())
            .kv("u64", T_U64, &u64::MAX.to_le_bytes())
            .kv("i64", T_I64, &i64::MIN.to_le_bytes())
            .kv("f32", T_F32, &1.5f32.to_le_bytes())
            .kv("f64", T_F64, &(-2.25f64).to_le_bytes())
            .kv("bool", T_BOOL, &[0])
            .kv(
                "str",
                T_STRING,
                &[5u64.to_le_bytes().as_slice(), b"hello"].concat(),
            )
            .kv("strs", T_ARRAY, &arr(T_STRING, 2, &strs))
            .kv("nested", T_ARRAY, &nested)
            .kv("empty", T_ARRAY, &arr(T_F64, 0, &[]))
            .kv("general.alignment", T_U32, &64u32.to_le_bytes());
        b.alignment = 64;
        b.tensor_f32("a", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .tensor_f32("scalar", &[], &[7.0]);
        let bytes = b.build();
        let f = GgufFile::parse(&bytes).unwrap();
        assert_eq!(f.version, 2);
        assert_eq!(f.alignment, 64);
        assert_eq!(f.data_offset % 64, 0);
        use GgufValue as V;
        let expect = [
            ("u8", V::U8(255)),
            ("i8", V::I8(-128)),
            ("u16", V::U16(65535)),
            ("i16", V::I16(-2)),
            ("u32", V::U32(7)),
            ("i32", V::I32(-7)),
            ("u64", V::U64(u64::MAX)),
            ("i64", V::I64(i64::MIN)),
            ("f32", V::F32(1.5)),
            ("f64", V::F64(-2.25)),
            ("bool", V::Bool(false)),
            ("str", V::String("hello".into())),
            (
                "strs",
                V::Array(vec![V::String("x".into()), V::String("é".into())]),
            ),
            (
                "nested",
                V::Array(vec![V::Array(vec![V::U16(1), V::U16(2)]), V::Array(vec![])]),
            ),
            ("empty", V::Array(vec![])),
        ];
        for (k, v) in &expect {
            assert_eq!(f.get(k), Some(v), "{k}");
        }
        // metadata stays in file order
        let keys: Vec<&str> = f.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&keys[..3], ["u8", "i8", "u16"]);
        assert_eq!(f.get("u8").unwrap().as_u64(), Some(255));
        assert_eq!(f.get("i8").unwrap().as_u64(), None);
        assert_eq!(f.get("i8").unwrap().as_i64(), Some(-128));
        assert_eq!(f.get("u64").unwrap().as_i64(), None);
        assert_eq!(f.get("u32").unwrap().as_f64(), Some(7.0));
        assert_eq!(f.get("f32").unwrap().as_f64(), Some(1.5));
        assert_eq!(f.get("str").unwrap().as_f64(), None);
        assert_eq!(f.get("bool").unwrap().as_bool(), Some(false));
        assert_eq!(f.get("nested").unwrap().as_array().unwrap().len(), 2);
        assert!(
            f.get_u64("str")
                .unwrap_err()
                .to_string()
                .contains("\"str\"")
        );
        assert_eq!(
            f.tensor_f32(&bytes, "a").unwrap(),
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!(f.tensor("a").unwrap().shape(), [2, 3]);
        assert_eq!(f.tensor_f32(&bytes, "scalar").unwrap(), [7.0]);
        assert_eq!(f.tensor("scalar").unwrap().n_elements(), 1);
    }

    fn err_of(bytes: &[u8]) -> String {
        match GgufFile::parse(bytes) {
            Ok(_) => panic!("parsed a corrupt file"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn corrupt_files_are_errors() {
        // magic / version
        let mut b = Builder::new().build();
        b[0] = b'X';
        assert!(err_of(&b).contains("not a GGUF file"));
        for v in [0u32, 1, 4] {
            let mut bld = Builder::new();
            bld.version = v;
            assert!(err_of(&bld.build()).contains(&format!("unsupported GGUF version {v}")));
        }
        let mut bld = Builder::new();
        bld.version = 3u32.swap_bytes();
        assert!(err_of(&bld.build()).contains("big-endian"));

        // huge counts: no allocation, an error
        let mut b = Builder::new().build();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err_of(&b).contains("tensor count"), "{}", err_of(&b));
        let mut b = Builder::new().build();
        b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(err_of(&b).contains("key/value count"));
        let e = err_of(
            Builder::new()
                .kv("k", T_STRING, &u64::MAX.to_le_bytes())
                .build()
                .as_slice(),
        );
        assert!(e.contains("truncated") && e.contains("\"k\""), "{e}");
        let e = err_of(
            Builder::new()
                .kv("big", T_ARRAY, &arr(T_U64, 1 << 40, &[]))
                .build()
                .as_slice(),
        );
        assert!(e.contains("array length") && e.contains("\"big\""), "{e}");
        let e = err_of(
            Builder::new()
                .kv("arrs", T_ARRAY, &arr(T_ARRAY, u64::MAX / 2, &[]))
                .build()
                .as_slice(),
        );
        assert!(e.contains("\"arrs\""), "{e}");
        // key longer than the file
        let mut raw = b"GGUF".to_vec();
        raw.extend_from_slice(&3u32.to_le_bytes());
        raw.extend_from_slice(&0u64.to_le_bytes());
        raw.extend_from_slice(&1u64.to_le_bytes());
        raw.extend_from_slice(&(1u64 << 62).to_le_bytes());
        raw.extend_from_slice(&[0u8; 16]);
        assert!(err_of(&raw).contains("truncated"));

        // bad value types, deep nesting, bad bool, bad UTF-8, duplicate key
        let e = err_of(Builder::new().kv("weird", 13, &[0; 8]).build().as_slice());
        assert!(
            e.contains("unknown value type 13") && e.contains("\"weird\""),
            "{e}"
        );
        let e = err_of(
            Builder::new()
                .kv("weird", T_ARRAY, &arr(99, 0, &[]))
                .build()
                .as_slice(),
        );
        assert!(e.contains("unknown value type 99"), "{e}");
        let mut deep = arr(T_U8, 0, &[]);
        for _ in 0..MAX_ARRAY_DEPTH {
            deep = arr(T_ARRAY, 1, &deep);
        }
        let e = err_of(Builder::new().kv("deep", T_ARRAY, &deep).build().as_slice());
        assert!(e.contains("nests arrays"), "{e}");
        let e = err_of(Builder::new().kv("b", T_BOOL, &[2]).build().as_slice());
        assert!(e.contains("\"b\"") && e.contains("not 0 or 1"), "{e}");
        let e = err_of(
            Builder::new()
                .kv(
                    "s",
                    T_STRING,
                    &[2u64.to_le_bytes().as_slice(), &[0xff, 0xfe]].concat(),
                )
                .build()
                .as_slice(),
        );
        assert!(e.contains("UTF-8") && e.contains("\"s\""), "{e}");
        let e = err_of(
            Builder::new()
                .kv("d", T_U8, &[1])
                .kv("d", T_U8, &[2])
                .build()
                .as_slice(),
        );
        assert!(e.contains("appears twice"), "{e}");

        // alignment
        for a in [0u32, 3, 48] {
            let e = err_of(
                Builder::new()
                    .kv("general.alignment", T_U32, &a.to_le_bytes())
                    .build()
                    .as_slice(),
            );
            assert!(
                e.contains("general.alignment") && e.contains("power of two"),
                "{e}"
            );
        }
        let e = err_of(
            Builder::new()
                .kv(
                    "general.alignment",
                    T_STRING,
                    &[1u64.to_le_bytes().as_slice(), b"x"].concat(),
                )
                .build()
                .as_slice(),
        );
        assert!(e.contains("general.alignment"), "{e}");

        // tensors: too many dims, overflowing dims, misaligned offset, out of bounds,
        // bad block multiple, duplicate name
        let e = err_of(
            Builder::new()
                .tensor_raw("t5", &[1, 1, 1, 1, 1], 0, 0)
                .build()
                .as_slice(),
        );
        assert!(e.contains("\"t5\"") && e.contains("5 dims"), "{e}");
        let e = err_of(
            Builder::new()
                .tensor_raw("big", &[1 << 40, 1 << 40], 0, 0)
                .build()
                .as_slice(),
        );
        assert!(e.contains("\"big\"") && e.contains("overflow"), "{e}");
        let e = err_of(
            Builder::new()
                .tensor_f32("a", &[8], &[0.0; 8])
                .tensor_raw("mis", &[1], 0, 4)
                .build()
                .as_slice(),
        );
        assert!(
            e.contains("\"mis\"") && e.contains("multiple of the alignment"),
            "{e}"
        );
        let e = err_of(
            Builder::new()
                .tensor_f32("a", &[8], &[0.0; 8])
                .tensor_raw("oob", &[1], 0, 64)
                .build()
                .as_slice(),
        );
        assert!(e.contains("\"oob\"") && e.contains("past the end"), "{e}");
        let e = err_of(
            Builder::new()
                .tensor_raw("q", &[16, 2], ggml_type::Q4_0, 0)
                .build()
                .as_slice(),
        );
        assert!(e.contains("\"q\"") && e.contains("block size 32"), "{e}");
        let e = err_of(
            Builder::new()
                .tensor_f32("a", &[1], &[0.0])
                .tensor_f32("a", &[1], &[0.0])
                .build()
                .as_slice(),
        );
        assert!(e.contains("\"a\"") && e.contains("twice"), "{e}");

        // unknown tensor types parse (the header is fine) but their bytes are an error naming them
        let mut bld = Builder::new();
        bld.tensor_f32("a", &[8], &[0.0; 8])
            .tensor_raw("new", &[8], 200, 0);
        let bytes = bld.build();
        let f = GgufFile::parse(&bytes).unwrap();
        let e = f.tensor_f32(&bytes, "new").unwrap_err().to_string();
        assert!(e.contains("200") && e.contains("\"new\""), "{e}");
        let e = f.tensor_f32(&bytes, "missing").unwrap_err().to_string();
        assert!(e.contains("\"missing\""), "{e}");
    }

    #[test]
    fn dequantize_errors() {
        let e = dequantize(ggml_type::Q8_K, &[0; 292], 256)
            .unwrap_err()
            .to_string();
        assert!(e.contains("15") && e.contains("Q8_K"), "{e}");
        let e = dequantize(16, &[0; 66], 256).unwrap_err().to_string();
        assert!(e.contains("IQ2_XXS"), "{e}");
        let e = dequantize(999, &[], 0).unwrap_err().to_string();
        assert!(e.contains("999") && e.contains("unknown"), "{e}");
        let e = dequantize(ggml_type::Q4_0, &[0; 18], 31)
            .unwrap_err()
            .to_string();
        assert!(e.contains("whole number"), "{e}");
        let e = dequantize(ggml_type::Q4_0, &[0; 17], 32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("need 18 bytes, got 17"), "{e}");
        let e = dequantize(ggml_type::F32, &[0; 7], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("need 8 bytes"), "{e}");
        assert_eq!(
            dequantize(ggml_type::F32, &[], 0).unwrap(),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn simple_quant_blocks_by_hand() {
        // Q4_0, d = 0.5: nibbles 0..15 -> (q - 8) * 0.5
        let mut b = vec![0x00, 0x38]; // f16 0.5
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(ggml_type::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], (j as f32 - 8.0) * 0.5);
            assert_eq!(v[j + 16], ((15 - j) as f32 - 8.0) * 0.5);
        }
        // Q4_1, d = 2, m = -1
        let mut b = vec![0x00, 0x40, 0x00, 0xbc];
        b.extend((0..16u8).map(|j| j | (j << 4)));
        let v = dequantize(ggml_type::Q4_1, &b, 32).unwrap();
        assert_eq!(v[3], 5.0);
        assert_eq!(v[19], 5.0);
        // Q8_0, d = 0.25
        let mut b = vec![0x00, 0x34];
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let v = dequantize(ggml_type::Q8_0, &b, 32).unwrap();
        assert_eq!(v[0], -4.0);
        assert_eq!(v[31], 3.75);
        // BF16 and F16 tensors
        assert_eq!(
            dequantize(ggml_type::BF16, &[0x80, 0x3f, 0x49, 0x40], 2).unwrap(),
            [1.0, 3.140625]
        );
        assert_eq!(
            dequantize(ggml_type::F16, &[0x00, 0x3c, 0x00, 0xc0], 2).unwrap(),
            [1.0, -2.0]
        );
    }

    #[test]
    fn f16_edge_cases() {
        assert_eq!(f16_to_f32(0x0000).to_bits(), 0.0f32.to_bits());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0xfbff), -65504.0);
        assert_eq!(f16_to_f32(0x0400), 6.103_515_6e-5); // smallest normal 2^-14
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8); // smallest subnormal 2^-24
        assert_eq!(f16_to_f32(0x8001), -5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 5.960_464_5e-8); // largest subnormal
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert!(f16_to_f32(0xfe01).is_nan());
        assert!(f16_to_f32(0x7c01).is_nan()); // signalling NaN stays NaN
        assert_eq!(f16_to_f32(0x7e00).to_bits(), 0x7fc0_0000);
        // every value against the textbook formula
        for h in 0..=u16::MAX {
            let got = f16_to_f32(h);
            let s = if h & 0x8000 != 0 { -1.0f64 } else { 1.0 };
            let e = ((h >> 10) & 0x1f) as i32;
            let m = (h & 0x3ff) as f64;
            let want = match e {
                0 => s * m * 2f64.powi(-24),
                31 if m == 0.0 => s * f64::INFINITY,
                31 => f64::NAN,
                _ => s * (1.0 + m / 1024.0) * 2f64.powi(e - 15),
            };
            if want.is_nan() {
                assert!(got.is_nan(), "{h:#06x}");
            } else {
                assert_eq!(got as f64, want, "{h:#06x}");
                assert_eq!(got.is_sign_negative(), h & 0x8000 != 0, "{h:#06x} sign");
            }
        }
        assert_eq!(bf16_to_f32(0xff80), f32::NEG_INFINITY);
        assert!(bf16_to_f32(0x7fc1).is_nan());
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // convert_hf_to_gguf: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)
        fn llama_cpp_permute(w: &[f32], n_head: usize, rows: usize, cols: usize) -> Vec<f32> {
            let hd = rows / n_head;
            let half = hd / 2;
            let mut out = Vec::with_capacity(w.len());
            // output index order (h, j, i, c) reads input (h, i, j, c)
            for h in 0..n_head {
                for j in 0..half {
                    for i in 0..2 {
                        let src = h * hd + i * half + j;
                        out.extend_from_slice(&w[src * cols..(src + 1) * cols]);
                    }
                }
            }
            out
        }
        for (n_head, rows, cols) in [(4, 64, 3), (2, 32, 5), (1, 2, 1), (9, 576, 2), (3, 192, 1)] {
            let w: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let p = llama_cpp_permute(&w, n_head, rows, cols);
            assert_eq!(permute_qk(&w, n_head, rows, cols), p);
            assert_eq!(unpermute_qk(&p, n_head, rows, cols), w);
            assert_eq!(
                unpermute_qk(&permute_qk(&w, n_head, rows, cols), n_head, rows, cols),
                w
            );
        }
        // one head of dim 4, one column: HF rows [a0 a1 b0 b1] (halves a, b) are stored [a0 b0 a1 b1]
        assert_eq!(
            unpermute_qk(&[0.0, 2.0, 1.0, 3.0], 1, 4, 1),
            [0.0, 1.0, 2.0, 3.0]
        );
    }

    #[test]
    #[should_panic(expected = "do not split")]
    fn unpermute_rejects_bad_heads() {
        unpermute_qk(&[0.0; 6], 2, 6, 1);
    }

    #[test]
    fn errors_display_and_are_std_errors() {
        let e: Box<dyn std::error::Error> = Box::new(GgufError::BadTensor {
            name: "x".into(),
            reason: "r".into(),
        });
        assert_eq!(e.to_string(), "GGUF tensor \"x\": r");
        let e = GgufError::UnsupportedType {
            ggml_type: 12,
            name: ggml_type_name(12),
            context: "tensor \"t\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "unsupported ggml tensor type 12 (Q4_K) for tensor \"t\""
        );
    }
}
