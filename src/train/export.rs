//! `grist export CKPT DIR`: a folder `transformers` loads with `LlamaForCausalLM`:
//! `config.json`, `model.safetensors` (f32), and `tokenizer.json` and
//! `chat_template.jinja` (when the checkpoint has them).

use std::path::Path;

use serde_json::{Value, json};

use super::checkpoint::{self, TOKENIZER_FILE, write_safetensors};
use super::config::{ModelConfig, RopeScaling};
use super::params::tensor_specs;
use super::rope::ntk_theta;
use crate::error::{GristError, Result};

/// `transformers`' `rope_parameters` (v5) for grist's RoPE. Static NTK has no type of its
/// own there: it is the default type with the enlarged theta.
pub fn rope_parameters(cfg: &ModelConfig) -> Value {
    let theta = cfg.rope.theta;
    match &cfg.rope.scaling {
        RopeScaling::None => json!({"rope_type": "default", "rope_theta": theta}),
        RopeScaling::Linear { factor } => {
            json!({"rope_type": "linear", "rope_theta": theta, "factor": factor})
        }
        RopeScaling::Ntk { factor } => {
            json!({"rope_type": "default", "rope_theta": ntk_theta(theta, *factor, cfg.head_dim())})
        }
        RopeScaling::Yarn {
            factor,
            original_max_position_embeddings,
            beta_fast,
            beta_slow,
            attention_factor,
        } => {
            let mut v = json!({
                "rope_type": "yarn", "rope_theta": theta, "factor": factor,
                "original_max_position_embeddings": original_max_position_embeddings,
                "beta_fast": beta_fast, "beta_slow": beta_slow, "truncate": true,
            });
            if let Some(a) = attention_factor {
                v["attention_factor"] = json!(a);
            }
            v
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3", "rope_theta": theta, "factor": factor,
            "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    }
}

/// The `config.json` of a `LlamaForCausalLM`.
pub fn hf_config(cfg: &ModelConfig) -> Value {
    let rope = rope_parameters(cfg);
    json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads(),
        "head_dim": cfg.head_dim(),
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "max_position_embeddings": cfg.max_position_embeddings,
        "rope_parameters": rope,
        "rope_theta": rope["rope_theta"],
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": false,
        "mlp_bias": false,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "dtype": "float32",
    })
}

pub fn export(ckpt: &Path, dir: &Path) -> Result<()> {
    let model = checkpoint::load_model(ckpt)?;
    std::fs::create_dir_all(dir).map_err(|e| GristError::io(dir, e))?;
    let cfg = &model.config;
    let mut text = serde_json::to_string_pretty(&hf_config(cfg)).expect("json");
    text.push('\n');
    std::fs::write(dir.join("config.json"), text).map_err(|e| GristError::io(dir, e))?;
    let tensors: Vec<_> = tensor_specs(cfg)
        .into_iter()
        .zip(model.weights.tensors())
        .map(|(s, t)| (s.name, s.shape, t.as_slice()))
        .collect();
    let meta = [("format".to_string(), "pt".to_string())]
        .into_iter()
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &tensors, Some(meta))?;
    if let Some(t) = &model.chat_template {
        let p = dir.join(checkpoint::CHAT_TEMPLATE_FILE);
        std::fs::write(&p, t).map_err(|e| GristError::io(&p, e))?;
    }
    if let Some(t) = &model.tokenizer {
        std::fs::copy(t, dir.join(TOKENIZER_FILE)).map_err(|e| GristError::io(t, e))?;
    }
    Ok(())
}
