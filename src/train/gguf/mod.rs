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
//! `rustc --edition 2024 --test src/train/gguf/mod.rs -o /tmp/gguf_test && /tmp/gguf_test`.

use std::fmt;

/// The first four bytes of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// Arrays nested deeper than this are rejected (nothing real nests at all; this bounds recursion).
pub const MAX_ARRAY_DEPTH: usize = 16;
/// Metadata array elements a file may hold in all (a vocabulary of 256 k tokens, its scores,
/// types and merges take about 1 M).
pub const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;

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
    /// Metadata array elements read so far (each takes a [`GgufValue`] in memory).
    elements: u64,
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
                // Each element takes a `GgufValue` (32 bytes) however small it is in the file:
                // bound the total so a file cannot ask for many times its size in memory.
                self.elements = self.elements.saturating_add(count);
                if self.elements > MAX_ARRAY_ELEMENTS {
                    return Err(GgufError::TooLarge {
                        offset: count_at,
                        what: format!("metadata arrays (up to key {key:?})"),
                        count: self.elements,
                        limit: MAX_ARRAY_ELEMENTS,
                    });
                }
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
        let mut r = Reader {
            buf: bytes,
            pos: 0,
            elements: 0,
        };
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

mod dequant;
pub use dequant::*;

#[cfg(test)]
mod tests;
