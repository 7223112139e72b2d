//! A llama-architecture GGUF file (llama.cpp's format) as grist's model shape, weights and
//! `tokenizer.json`, the way `transformers` loads one (`from_pretrained(..., gguf_file=...)`):
//! tensors dequantised to f32, llama.cpp's rotary row permutation of Q and K undone, and a
//! GGUF `gpt2` tokenizer rebuilt as a byte-level BPE with the control tokens as specials.

use std::collections::HashSet;
use std::path::Path;

use serde_json::{Value, json};

use super::config::{ModelConfig, Rope, RopeScaling};
use super::gguf::{GgufError, GgufFile, unpermute_qk};
use super::import::ModelFiles;
use super::params::Weights;
use crate::error::{GristError, Result};
use crate::tokens::split::byte_chars;

fn err(path: &Path, e: GgufError) -> GristError {
    GristError::data(path, e.to_string())
}

/// Shape, weights, (for a `gpt2` tokenizer) `tokenizer.json` bytes and chat template of a GGUF
/// file.
pub fn read_gguf(path: &Path) -> Result<ModelFiles> {
    let file = std::fs::File::open(path).map_err(|e| GristError::io(path, e))?;
    // SAFETY: read-only map of a file we do not modify; a concurrent writer is out of contract.
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GristError::io(path, e))?;
    let g = GgufFile::parse(&bytes).map_err(|e| err(path, e))?;
    let arch = g.architecture().unwrap_or("");
    if arch != "llama" {
        return Err(GristError::data(
            path,
            format!("architecture `{arch}`: only `llama` GGUF files are supported"),
        ));
    }
    let cfg = config(&g, path)?;
    // A header may claim any number of blocks: check the last one's tensors are there before
    // building anything per block.
    let last = format!("blk.{}.attn_norm.weight", cfg.num_layers - 1);
    if g.tensor(&last).is_none() {
        return Err(GristError::data(
            path,
            format!(
                "llama.block_count is {}, but the file has no tensor `{last}`",
                cfg.num_layers
            ),
        ));
    }
    let tensor =
        |name: &str| -> Result<Vec<f32>> { g.tensor_f32(&bytes, name).map_err(|e| err(path, e)) };
    let (q_rows, kv_rows) = (
        cfg.num_heads * cfg.head_dim(),
        cfg.kv_heads() * cfg.head_dim(),
    );
    let d = cfg.hidden_size;
    let specs = super::params::tensor_specs(&cfg);
    let mut loaded = Vec::with_capacity(specs.len());
    for spec in &specs {
        let name = gguf_name(&spec.name);
        let mut data = tensor(&name)?;
        if data.len() != spec.len() {
            return Err(GristError::data(
                path,
                format!(
                    "tensor `{name}` has {} values; the header's shape needs {:?}",
                    data.len(),
                    spec.shape
                ),
            ));
        }
        if name.ends_with("attn_q.weight") {
            data = unpermute_qk(&data, cfg.num_heads, q_rows, d);
        } else if name.ends_with("attn_k.weight") {
            data = unpermute_qk(&data, cfg.kv_heads(), kv_rows, d);
        }
        loaded.push(data);
    }
    let weights = Weights::from_tensors(&cfg, loaded);
    let tokenizer = tokenizer_json(&g, path)?.map(|v| serde_json::to_vec(&v).expect("json"));
    let chat_template = g
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(ModelFiles {
        config: cfg,
        weights,
        tokenizer,
        chat_template,
    })
}

/// llama.cpp's tensor name for a `transformers` one.
fn gguf_name(hf: &str) -> String {
    if hf == "model.embed_tokens.weight" {
        return "token_embd.weight".into();
    }
    if hf == "model.norm.weight" {
        return "output_norm.weight".into();
    }
    if hf == "lm_head.weight" {
        return "output.weight".into();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
    let (layer, part) = rest.split_once('.').unwrap_or(("0", rest));
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => other,
    };
    format!("blk.{layer}.{part}")
}

fn config(g: &GgufFile, path: &Path) -> Result<ModelConfig> {
    let u = |k: &str| {
        g.get_u64(&format!("llama.{k}"))
            .map(|v| v as usize)
            .map_err(|e| err(path, e))
    };
    let opt_u = |k: &str| {
        g.get(&format!("llama.{k}"))
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
    };
    let opt_f = |k: &str| g.get(&format!("llama.{k}")).and_then(|v| v.as_f64());
    let heads = u("attention.head_count")?;
    let hidden = u("embedding_length")?;
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| GristError::data(path, "no tensor `token_embd.weight`"))?;
    let vocab = opt_u("vocab_size").unwrap_or(*embd.dims.get(1).unwrap_or(&0) as usize);
    if g.tensor("rope_freqs.weight").is_some() {
        return Err(GristError::data(
            path,
            "the file carries `rope_freqs.weight` (precomputed Llama 3 RoPE factors), which is not supported; import the transformers folder instead",
        ));
    }
    let theta = opt_f("rope.freq_base").unwrap_or(10_000.0);
    let context = opt_u("context_length").unwrap_or(2048);
    let scaling = match g
        .get("llama.rope.scaling.type")
        .and_then(|v| v.as_str())
        .unwrap_or("none")
    {
        "none" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: opt_f("rope.scaling.factor").unwrap_or(1.0),
        },
        "yarn" => RopeScaling::Yarn {
            factor: opt_f("rope.scaling.factor").unwrap_or(1.0),
            original_max_position_embeddings: opt_u("rope.scaling.original_context_length")
                .unwrap_or(context),
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
        },
        other => {
            return Err(GristError::data(
                path,
                format!("rope scaling `{other}` is not supported"),
            ));
        }
    };
    let id = |k: &str| g.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
    let head_dim = opt_u("attention.key_length").or(opt_u("rope.dimension_count"));
    let cfg = ModelConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: u("feed_forward_length")?,
        num_layers: u("block_count")?,
        num_heads: heads,
        num_kv_heads: Some(opt_u("attention.head_count_kv").unwrap_or(heads)),
        head_dim: head_dim.filter(|&h| h != hidden / heads.max(1)),
        // Stored as f32: widen it exactly as transformers does.
        norm_eps: opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope: Rope { theta, scaling },
        tie_embeddings: g.tensor("output.weight").is_none(),
        max_position_embeddings: context,
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_id: id("tokenizer.ggml.eos_token_id"),
    };
    let problems = cfg.problems();
    if !problems.is_empty() {
        return Err(GristError::data(path, problems.join("; ")));
    }
    Ok(cfg)
}

/// A `tokenizer.json` for a GGUF `gpt2` tokenizer, as `transformers` builds it: byte-level
/// BPE (GPT-2 split, no prefix space), the GGUF merges, tokens not already in the byte
/// alphabet re-spelled in it, CONTROL tokens (type 3) as special added tokens and
/// USER_DEFINED ones (type 4) as plain added tokens. Other tokenizer models: none.
fn tokenizer_json(g: &GgufFile, path: &Path) -> Result<Option<Value>> {
    let model = g.get("tokenizer.ggml.model").and_then(|v| v.as_str());
    if model != Some("gpt2") {
        if let Some(m) = model {
            tracing::warn!(
                "tokenizer model `{m}` is not rebuilt (only `gpt2`); the checkpoint has no tokenizer.json"
            );
        }
        return Ok(None);
    }
    let tokens = g
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .ok_or_else(|| GristError::data(path, "tokenizer.ggml.tokens missing"))?;
    let types: Vec<i64> = g
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().map(|t| t.as_i64().unwrap_or(1)).collect())
        .unwrap_or_default();
    let alphabet: HashSet<char> = byte_chars().iter().copied().collect();
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        let t = t
            .as_str()
            .ok_or_else(|| GristError::data(path, format!("token {id} is not a string")))?;
        let spelled: String = if t.chars().all(|c| alphabet.contains(&c)) {
            t.to_string()
        } else {
            t.bytes().map(|b| byte_chars()[b as usize]).collect()
        };
        vocab.insert(spelled.clone(), json!(id));
        let kind = types.get(id).copied().unwrap_or(1);
        if kind == 3 || kind == 4 {
            added.push(json!({
                "id": id, "content": spelled, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": kind == 3,
            }));
        }
    }
    let merges: Vec<Value> = g
        .get("tokenizer.ggml.merges")
        .and_then(|v| v.as_array())
        .unwrap_or(&[])
        .iter()
        .filter_map(|m| m.as_str()?.split_once(' ').map(|(a, b)| json!([a, b])))
        .collect();
    Ok(Some(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges,
        },
    })))
}
