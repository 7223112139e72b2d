//! `grist import SRC CKPT`: a published Llama-architecture model into a grist checkpoint.
//! SRC is a `transformers` folder (`config.json` + `model.safetensors` or sharded
//! `model.safetensors.index.json`) or a GGUF file (llama architecture; F32, F16, BF16, Q8_0,
//! Q4_0, Q4_1 tensors dequantised, llama.cpp's Q/K row permutation undone, the tokenizer
//! rebuilt as a `tokenizer.json`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::checkpoint::{self, weights_from};
use super::config::{ModelConfig, Rope, RopeScaling};
use super::params::Weights;
use crate::error::{GristError, Result};

/// A model read from a published format: shape, weights, `tokenizer.json` bytes and the chat
/// template (Jinja source) when the source has them.
pub struct ModelFiles {
    pub config: ModelConfig,
    pub weights: Weights,
    pub tokenizer: Option<Vec<u8>>,
    pub chat_template: Option<String>,
}

/// Reads `src`: a `transformers` folder or a `.gguf` file.
pub fn read_model(src: &Path) -> Result<ModelFiles> {
    if src.is_dir() {
        let (config, weights) = read_hf(src)?;
        let read_opt = |name: &str| -> Result<Option<Vec<u8>>> {
            let p = src.join(name);
            p.is_file()
                .then(|| std::fs::read(&p))
                .transpose()
                .map_err(|e| GristError::io(&p, e))
        };
        let tokenizer = read_opt(checkpoint::TOKENIZER_FILE)?;
        // transformers v5 writes `chat_template.jinja`; v4 kept it in `tokenizer_config.json`.
        let mut chat_template = read_opt(checkpoint::CHAT_TEMPLATE_FILE)?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if chat_template.is_none()
            && let Some(b) = read_opt("tokenizer_config.json")?
        {
            let v: Value = serde_json::from_slice(&b).unwrap_or_default();
            chat_template = v["chat_template"].as_str().map(str::to_string);
        }
        Ok(ModelFiles {
            config,
            weights,
            tokenizer,
            chat_template,
        })
    } else if src.is_file() {
        super::gguf_import::read_gguf(src)
    } else {
        Err(GristError::data(src, "no such file or folder"))
    }
}

/// Imports `src` (folder or `.gguf`) into the checkpoint directory `dest`.
pub fn import(src: &Path, dest: &Path) -> Result<ModelConfig> {
    let m = read_model(src)?;
    std::fs::create_dir_all(dest).map_err(|e| GristError::io(dest, e))?;
    checkpoint::write_model(dest, &m.config, &m.weights, None)?;
    if let Some(t) = m.tokenizer {
        let p = dest.join(checkpoint::TOKENIZER_FILE);
        std::fs::write(&p, t).map_err(|e| GristError::io(&p, e))?;
    }
    if let Some(t) = m.chat_template {
        let p = dest.join(checkpoint::CHAT_TEMPLATE_FILE);
        std::fs::write(&p, t).map_err(|e| GristError::io(&p, e))?;
    }
    Ok(m.config)
}

fn num(cfg: &Value, key: &str, path: &Path) -> Result<usize> {
    cfg[key]
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| GristError::data(path, format!("`{key}` missing or not a number")))
}

/// grist's RoPE from a `transformers` config: v5 `rope_parameters` or v4 `rope_theta` +
/// `rope_scaling`.
pub fn rope_from_hf(cfg: &Value, path: &Path) -> Result<Rope> {
    let params = if cfg["rope_parameters"].is_object() {
        cfg["rope_parameters"].clone()
    } else {
        let mut p = if cfg["rope_scaling"].is_object() {
            cfg["rope_scaling"].clone()
        } else {
            serde_json::json!({"rope_type": "default"})
        };
        p["rope_theta"] = cfg["rope_theta"].clone();
        if p["rope_type"].is_null() {
            p["rope_type"] = p["type"].clone();
        }
        p
    };
    let theta = params["rope_theta"].as_f64().unwrap_or(10_000.0);
    let f = |k: &str| params[k].as_f64();
    let factor =
        || f("factor").ok_or_else(|| GristError::data(path, "rope scaling without `factor`"));
    let orig = || {
        params["original_max_position_embeddings"]
            .as_u64()
            .or(cfg["max_position_embeddings"].as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| {
                GristError::data(
                    path,
                    "rope scaling without `original_max_position_embeddings`",
                )
            })
    };
    let scaling = match params["rope_type"].as_str().unwrap_or("default") {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "yarn" => RopeScaling::Yarn {
            factor: factor()?,
            original_max_position_embeddings: orig()?,
            beta_fast: f("beta_fast").unwrap_or(32.0),
            beta_slow: f("beta_slow").unwrap_or(1.0),
            attention_factor: f("attention_factor"),
        },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
            original_max_position_embeddings: orig()?,
        },
        other => {
            return Err(GristError::data(
                path,
                format!("rope type `{other}` is not supported (default, linear, yarn, llama3)"),
            ));
        }
    };
    Ok(Rope { theta, scaling })
}

/// The model shape of a `transformers` `config.json` (Llama architecture).
pub fn config_from_hf(cfg: &Value, path: &Path) -> Result<ModelConfig> {
    let arch = cfg["model_type"].as_str().unwrap_or("");
    // Only Llama: Mistral adds sliding windows and Qwen2 biases this model does not have.
    if arch != "llama" || cfg["attention_bias"] == true || cfg["mlp_bias"] == true {
        return Err(GristError::data(
            path,
            format!(
                "model_type `{arch}`: only Llama-architecture models without biases are supported"
            ),
        ));
    }
    let heads = num(cfg, "num_attention_heads", path)?;
    let hidden = num(cfg, "hidden_size", path)?;
    let id = |k: &str| cfg[k].as_u64().map(|v| v as u32);
    let config = ModelConfig {
        vocab_size: num(cfg, "vocab_size", path)?,
        hidden_size: hidden,
        intermediate_size: num(cfg, "intermediate_size", path)?,
        num_layers: num(cfg, "num_hidden_layers", path)?,
        num_heads: heads,
        num_kv_heads: cfg["num_key_value_heads"].as_u64().map(|v| v as usize),
        head_dim: cfg["head_dim"].as_u64().map(|v| v as usize),
        norm_eps: cfg["rms_norm_eps"].as_f64().unwrap_or(1e-6),
        rope: rope_from_hf(cfg, path)?,
        tie_embeddings: cfg["tie_word_embeddings"].as_bool().unwrap_or(false),
        max_position_embeddings: num(cfg, "max_position_embeddings", path).unwrap_or(2048),
        bos_token_id: id("bos_token_id"),
        eos_token_id: id("eos_token_id"),
    };
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(GristError::data(path, problems.join("; ")));
    }
    Ok(config)
}

/// Reads a `transformers` folder's shape and weights.
pub fn read_hf(dir: &Path) -> Result<(ModelConfig, Weights)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read(&cfg_path).map_err(|e| GristError::io(&cfg_path, e))?;
    let value: Value =
        serde_json::from_slice(&text).map_err(|e| GristError::data(&cfg_path, format!("{e}")))?;
    let cfg = config_from_hf(&value, &cfg_path)?;
    let index = dir.join("model.safetensors.index.json");
    let files: Vec<PathBuf> = if index.is_file() {
        let text = std::fs::read(&index).map_err(|e| GristError::io(&index, e))?;
        let v: Value =
            serde_json::from_slice(&text).map_err(|e| GristError::data(&index, format!("{e}")))?;
        let mut names: Vec<String> = v["weight_map"]
            .as_object()
            .ok_or_else(|| GristError::data(&index, "no `weight_map`"))?
            .values()
            .filter_map(|f| f.as_str().map(String::from))
            .collect();
        names.sort();
        names.dedup();
        names.into_iter().map(|n| dir.join(n)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    let buffers = files
        .into_iter()
        .map(|p| {
            std::fs::read(&p)
                .map(|b| (p.clone(), b))
                .map_err(|e| GristError::io(&p, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let weights = weights_from(&buffers, &cfg, "")?;
    Ok((cfg, weights))
}
