//! Checkpoints: a directory `step-NNNNNNNN/` holding `model.safetensors` (f32, `transformers`
//! names), `model.json` (the shape), `optimizer.safetensors` (AdamW's moments), `state.json`
//! (step, samples consumed, tokens, seed) and `tokenizer.json` when known. It is written under
//! a temporary name and renamed, so a killed run never leaves half a checkpoint; the newest
//! `keep` are kept. `grist import` writes the same layout without optimizer and state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::params::{Weights, tensor_specs};
use crate::error::{GristError, Result};

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "model.json";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The chat template (Jinja source), as transformers v5 names it.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// Where a run stands, saved with its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer updates done.
    pub step: u64,
    /// Training samples consumed (the data position).
    pub samples: u64,
    /// Tokens trained on (counted targets).
    pub tokens: u64,
    /// The run's seed (init and data order derive from it and the position).
    pub seed: u64,
    /// The run config's hash: resuming with another config is refused.
    pub config_hash: String,
}

fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `tensors` (name → shape, data) as an f32 safetensors file.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, &[f32])],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| f32_bytes(t.2)).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(StDtype::F32, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| GristError::data(path, format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, metadata)
        .map_err(|e| GristError::data(path, format!("safetensors: {e}")))?;
    std::fs::write(path, data).map_err(|e| GristError::io(path, e))
}

/// A tensor of a safetensors file as f32 (from F32, F16 or BF16).
pub fn tensor_f32(st: &SafeTensors, name: &str, path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .map_err(|_| GristError::data(path, format!("no tensor `{name}`")))?;
    let d = t.data();
    let values = match t.dtype() {
        StDtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        StDtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        StDtype::BF16 => d
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        other => {
            return Err(GristError::data(
                path,
                format!("tensor `{name}` is {other:?}; F32, F16 and BF16 are read"),
            ));
        }
    };
    Ok((t.shape().to_vec(), values))
}

/// Reads the weights of a model of shape `cfg` from safetensors buffers; `rename` maps grist's
/// (transformers') names to the file's.
pub fn weights_from(
    files: &[(PathBuf, Vec<u8>)],
    cfg: &ModelConfig,
    prefix: &str,
) -> Result<Weights> {
    let parsed = files
        .iter()
        .map(|(p, b)| {
            SafeTensors::deserialize(b)
                .map(|st| (p, st))
                .map_err(|e| GristError::data(p, format!("not a safetensors file: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let specs = tensor_specs(cfg);
    let mut out = Vec::with_capacity(specs.len());
    for spec in &specs {
        let name = format!("{prefix}{}", spec.name);
        let Some((path, st)) = parsed.iter().find(|(_, st)| st.tensor(&name).is_ok()) else {
            let path = files.first().map(|f| f.0.clone()).unwrap_or_default();
            return Err(GristError::data(path, format!("no tensor `{name}`")));
        };
        let (shape, data) = tensor_f32(st, &name, path)?;
        if shape != spec.shape {
            return Err(GristError::data(
                path,
                format!(
                    "tensor `{name}` has shape {shape:?}; the config needs {:?}",
                    spec.shape
                ),
            ));
        }
        out.push(data);
    }
    Ok(Weights::from_tensors(cfg, out))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| GristError::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| GristError::data(path, format!("{e}")))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("serializable");
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(|e| GristError::io(path, e))
}

/// A model loaded from a checkpoint directory.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub weights: Weights,
    /// `tokenizer.json` beside the weights, when there is one.
    pub tokenizer: Option<PathBuf>,
    /// `chat_template.jinja` beside the weights, when there is one.
    pub chat_template: Option<String>,
}

/// Loads `model.json` and `model.safetensors` of a checkpoint directory.
pub fn load_model(dir: &Path) -> Result<LoadedModel> {
    if !dir.join(CONFIG_FILE).is_file() {
        return Err(GristError::data(
            dir,
            format!(
                "not a grist checkpoint (no {CONFIG_FILE}); make one with `grist import` or `grist train`"
            ),
        ));
    }
    let config: ModelConfig = read_json(&dir.join(CONFIG_FILE))?;
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(GristError::data(dir.join(CONFIG_FILE), problems.join("; ")));
    }
    let path = dir.join(MODEL_FILE);
    let weights = weights_from(&[(path.clone(), read(&path)?)], &config, "")?;
    let tok = dir.join(TOKENIZER_FILE);
    let chat = dir.join(CHAT_TEMPLATE_FILE);
    let chat_template = chat
        .is_file()
        .then(|| std::fs::read_to_string(&chat))
        .transpose()
        .map_err(|e| GristError::io(&chat, e))?;
    Ok(LoadedModel {
        config,
        weights,
        tokenizer: tok.is_file().then_some(tok),
        chat_template,
    })
}

fn named<'a>(
    cfg: &ModelConfig,
    w: &'a Weights,
    prefix: &str,
) -> Vec<(String, Vec<usize>, &'a [f32])> {
    tensor_specs(cfg)
        .into_iter()
        .zip(w.tensors())
        .map(|(s, t)| (format!("{prefix}{}", s.name), s.shape, t.as_slice()))
        .collect()
}

/// Writes a model (weights, shape, tokenizer) into `dir`, which must exist.
pub fn write_model(
    dir: &Path,
    cfg: &ModelConfig,
    w: &Weights,
    tokenizer: Option<&Path>,
) -> Result<()> {
    write_safetensors(&dir.join(MODEL_FILE), &named(cfg, w, ""), None)?;
    write_json(&dir.join(CONFIG_FILE), cfg)?;
    if let Some(t) = tokenizer {
        std::fs::copy(t, dir.join(TOKENIZER_FILE)).map_err(|e| GristError::io(t, e))?;
    }
    Ok(())
}

/// Everything a checkpoint holds.
pub struct Checkpoint<'a> {
    pub config: &'a ModelConfig,
    pub weights: &'a Weights,
    pub m: &'a Weights,
    pub v: &'a Weights,
    pub state: &'a TrainState,
    pub tokenizer: Option<&'a Path>,
}

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:08}")
}

/// Writes a checkpoint under `root` atomically and keeps the newest `keep`.
pub fn save(root: &Path, c: &Checkpoint, keep: usize) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| GristError::io(root, e))?;
    let name = step_dir_name(c.state.step);
    let tmp = root.join(format!("{name}.tmp"));
    let dest = root.join(&name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| GristError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| GristError::io(&tmp, e))?;
    write_model(&tmp, c.config, c.weights, c.tokenizer)?;
    let mut moments = named(c.config, c.m, "m.");
    moments.extend(named(c.config, c.v, "v."));
    write_safetensors(&tmp.join(OPTIMIZER_FILE), &moments, None)?;
    write_json(&tmp.join(STATE_FILE), c.state)?;
    for f in std::fs::read_dir(&tmp).map_err(|e| GristError::io(&tmp, e))? {
        let p = f.map_err(|e| GristError::io(&tmp, e))?.path();
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(|e| GristError::io(&p, e))?;
    }
    crate::util::hook::checkpoint("train_checkpoint");
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| GristError::io(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| GristError::io(&dest, e))?;
    let all = list(root)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(old).map_err(|e| GristError::io(old, e))?;
    }
    Ok(dest)
}

/// Complete checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in rd {
        let p = e.map_err(|e| GristError::io(root, e))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
            && p.join(STATE_FILE).is_file()
        {
            out.push((step, p));
        }
    }
    out.sort();
    Ok(out)
}

/// A checkpoint's optimizer moments and state.
pub fn load_training(dir: &Path, cfg: &ModelConfig) -> Result<(Weights, Weights, TrainState)> {
    let path = dir.join(OPTIMIZER_FILE);
    let bytes = read(&path)?;
    let files = [(path, bytes)];
    let m = weights_from(&files, cfg, "m.")?;
    let v = weights_from(&files, cfg, "v.")?;
    let state = read_json(&dir.join(STATE_FILE))?;
    Ok((m, v, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzz (issue 16): a checkpoint whose `model.json` or `model.safetensors` is mutated (or
    /// random bytes) loads or fails with an error naming the file; never a panic, and never
    /// more memory than the weights file's size allows (shapes are checked before tensors are
    /// built).
    #[test]
    fn fuzz_checkpoints() {
        let cfg = crate::train::params::tests::tiny();
        let weights = Weights::init(&cfg, 1, 0.02);
        let good = tempfile::tempdir().unwrap();
        write_model(good.path(), &cfg, &weights, None).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(good.path().join(CONFIG_FILE)).unwrap()).unwrap();
        let tensors = std::fs::read(good.path().join(MODEL_FILE)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let load = |config: &[u8], model: &[u8]| -> Result<(), String> {
            std::fs::write(dir.path().join(CONFIG_FILE), config).unwrap();
            std::fs::write(dir.path().join(MODEL_FILE), model).unwrap();
            let (result, peak) = crate::fuzz::peak_bytes(|| load_model(dir.path()));
            if let Err(e) = result {
                let msg = e.to_string();
                if !msg.contains(CONFIG_FILE) && !msg.contains(MODEL_FILE) {
                    return Err(format!("an error that names no file: {msg}"));
                }
            }
            let size = config.len() + model.len();
            crate::fuzz::within("checkpoint", peak, 16 * size + (4 << 20), size)
        };
        let config_bytes = serde_json::to_vec(&json).unwrap();
        crate::fuzz::fuzz(
            "model.json",
            2000,
            crate::fuzz::json_inputs(vec![json.clone()]),
            |bytes| load(&bytes, &tensors),
        );
        crate::fuzz::fuzz(
            "model.safetensors",
            2000,
            crate::fuzz::inputs(vec![tensors.clone()]),
            |bytes| load(&config_bytes, &bytes),
        );
    }
}
