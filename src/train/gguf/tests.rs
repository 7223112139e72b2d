use super::*;

// ---- reading the goldens (serde_json), panicking with what was expected ----

type Json = serde_json::Value;

/// Lookups that fail loudly, so a golden of the wrong shape says where.
trait Golden {
    fn at(&self, k: &str) -> &Json;
    fn arr(&self) -> &[Json];
    fn obj(&self) -> &serde_json::Map<String, Json>;
    fn num(&self) -> f64;
    fn str(&self) -> &str;
    fn f32s(&self) -> Vec<f32>;
}

impl Golden for Json {
    fn at(&self, k: &str) -> &Json {
        self.get(k).unwrap_or_else(|| panic!("no key {k:?}"))
    }
    fn arr(&self) -> &[Json] {
        self.as_array()
            .unwrap_or_else(|| panic!("not an array: {self}"))
    }
    fn obj(&self) -> &serde_json::Map<String, Json> {
        self.as_object()
            .unwrap_or_else(|| panic!("not an object: {self}"))
    }
    fn num(&self) -> f64 {
        match self {
            Json::Number(n) => n.as_f64().expect("a number"),
            // the goldens spell non-finite floats as strings
            Json::String(s) if s == "inf" => f64::INFINITY,
            Json::String(s) if s == "-inf" => f64::NEG_INFINITY,
            Json::String(s) if s == "nan" => f64::NAN,
            _ => panic!("not a number: {self}"),
        }
    }
    fn str(&self) -> &str {
        self.as_str()
            .unwrap_or_else(|| panic!("not a string: {self}"))
    }
    fn f32s(&self) -> Vec<f32> {
        self.arr().iter().map(|v| v.num() as f32).collect()
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
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e} (set GGUF_FIXTURE)"));
    let f = GgufFile::parse(&bytes).unwrap_or_else(|e| panic!("parsing {path}: {e}"));
    (bytes, f)
}

fn load_golden() -> Json {
    let path = golden_path();
    let s = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e} (set GGUF_GOLDEN)"));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{path}: {e}"))
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
    let stats = g.at("dequantized_stats").obj();
    let col0 = g.at("dequantized_col0").obj();
    let mut checked = 0;
    for (hf, want) in g.at("dequantized").obj() {
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
    for (name, case) in g.at("dequant_blocks").obj() {
        let t = case.at("ggml_type").num() as u32;
        assert_eq!(ggml_type_name(t), name.as_str());
        let hex = case.at("bytes_hex").str();
        let raw: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want = case.at("values").f32s();
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

/// Fuzz (issue 16): mutated GGUF files and random bytes parse, dequantise and import (as
/// `grist import` / `generate` / `serve` read them) or fail with a clear error; never a panic,
/// and memory in proportion to the file (dequantised tensors are at most 8× their bytes).
#[test]
fn fuzz_gguf_files() {
    let (fixture, _) = load_fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    crate::fuzz::fuzz("gguf", 3000, crate::fuzz::inputs(vec![fixture]), |bytes| {
        let (msg, peak) = crate::fuzz::peak_bytes(|| {
            let parsed = match GgufFile::parse(&bytes) {
                Ok(f) => f,
                Err(e) => return e.to_string(),
            };
            for t in &parsed.tensors {
                let _ = parsed.tensor_f32(&bytes, &t.name);
            }
            std::fs::write(&path, &bytes).unwrap();
            match crate::train::gguf_import::read_gguf(&path) {
                Ok(m) => format!("{} layers", m.config.num_layers),
                Err(e) => e.to_string(),
            }
        });
        if msg.is_empty() {
            return Err("an error without a message".into());
        }
        crate::fuzz::within("gguf", peak, 64 * bytes.len() + (16 << 20), bytes.len())
    });
}
