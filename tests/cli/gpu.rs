//! The CUDA backend without a GPU: every kernel compiles with NVRTC (from PyPI) for sm_80 and
//! sm_90; without a driver `backend: cuda` is a clear error (exit 2); and on the host reference
//! device (`GRIST_CUDA_DEVICE=reference`) the backend's plan trains as the CPU backend does,
//! resumes across backends, evaluates and generates.

use serde_json::Value;

use crate::train::{TINY, config, evaluate, losses};
use crate::util::*;

/// NVRTC's library: `GRIST_NVRTC_LIB`, or the `nvidia-cuda-nvrtc` wheel fetched from PyPI once
/// (`tests/fetch_nvrtc.sh`, cached in `~/.cache/grist/nvrtc`); fails when neither works.
fn nvrtc_lib() -> String {
    if let Ok(p) = std::env::var("GRIST_NVRTC_LIB") {
        return p;
    }
    let out = std::process::Command::new("bash")
        .arg(repo().join("tests/fetch_nvrtc.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cannot fetch NVRTC from PyPI (tests/fetch_nvrtc.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn every_kernel_compiles_with_nvrtc_for_sm80_and_sm90() {
    let s = Scratch::new();
    let lib = nvrtc_lib();
    let cache = s.path("cache").display().to_string();
    let out = s.grist_env(
        &[
            "gpu",
            "check",
            "--compile-only",
            "--arch",
            "80,90",
            "--json",
        ],
        &[("GRIST_NVRTC_LIB", &lib), ("GRIST_CACHE_DIR", &cache)],
    );
    assert_ok(&out);
    let rows: Vec<Value> = text(&out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let families = [
        "embedding",
        "rmsnorm",
        "rope",
        "swiglu",
        "attention",
        "cross_entropy",
        "adamw",
        "norm",
        "cast",
    ];
    for arch in [80, 90] {
        for precision in ["bf16", "f32"] {
            for f in families {
                let name = format!("compile {f} sm_{arch} {precision}");
                let row = rows
                    .iter()
                    .find(|r| r["check"] == name)
                    .unwrap_or_else(|| panic!("no row {name}"));
                assert_eq!(row["pass"], true, "{row}");
            }
        }
    }
    assert_eq!(rows.len(), 1 + 2 * 2 * families.len());
}

/// Whether this machine has an NVIDIA driver (CI's has none).
fn has_driver() -> bool {
    std::process::Command::new("sh")
        .args(["-c", "ldconfig -p | grep -q 'libcuda.so'"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn cuda_without_a_driver_is_a_clear_error() {
    let s = Scratch::new();
    let lib = nvrtc_lib();
    let env = [("GRIST_NVRTC_LIB", lib.as_str())];
    if has_driver() {
        // A GPU machine: the same commands run, and every check passes.
        assert_ok(&s.grist_env(&["gpu", "check"], &env));
        return;
    }
    let cfg = config(&s, "run", &format!("{TINY}steps: 2\nbackend: cuda\n"));
    for args in [
        vec!["train", cfg.as_str()],
        vec!["gpu", "check"],
        vec![
            "gpu", "bench", "--model", "m.json", "--batch", "1", "--seq", "8",
        ],
    ] {
        s.write(
            "m.json",
            r#"{"vocab_size": 32, "hidden_size": 8, "intermediate_size": 16, "num_layers": 1, "num_heads": 2}"#,
        );
        let out = s.grist_env(&args, &env);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("no NVIDIA driver: libcuda.so was not found"),
            "{args:?}: {}",
            text(&out)
        );
        assert!(!text(&out).contains("panicked"), "{}", text(&out));
    }
}

fn metrics(s: &Scratch, run: &str) -> Vec<Value> {
    std::fs::read_to_string(s.path(&format!("{run}/metrics.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[track_caller]
fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * y.abs(), "{what}: {a:?} vs {b:?}");
    }
}

/// The CUDA backend's plan on the reference device trains as the CPU backend does (f32 within
/// 1e-4, bf16 within 2e-2 at every step), a run killed on one backend resumes on the other, and
/// its checkpoint evaluates and generates on both alike.
#[test]
fn the_cuda_plan_trains_resumes_evaluates_and_generates_like_the_cpu() {
    let s = Scratch::new();
    let reference = [("GRIST_CUDA_DEVICE", "reference")];
    let body = |backend: &str| {
        format!(
            "{TINY}micro_batch_size: 2\ngrad_accum_steps: 2\nsteps: 6\noptimizer: {{lr: 0.01}}\nschedule: {{warmup_steps: 2}}\ncheckpoint: {{every: 2, keep: 1}}\ndocument_masking: true\n{backend}"
        )
    };
    let cpu = config(&s, "cpu", &body(""));
    assert_ok(&s.grist(&["train", &cpu]));
    let want = losses(&s, "cpu");
    let f32_run = config(&s, "f32", &body("backend: cuda\nprecision: f32\n"));
    assert_ok(&s.grist_env(&["train", &f32_run], &reference));
    assert_close(&losses(&s, "f32"), &want, 1e-4, "cuda f32");
    assert!(
        metrics(&s, "f32")[0]["device_memory_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    let bf16_run = config(&s, "bf16", &body("backend: cuda\nrecompute: true\n"));
    assert_ok(&s.grist_env(&["train", &bf16_run], &reference));
    assert_close(&losses(&s, "bf16"), &want, 2e-2, "cuda bf16");

    // Killed on cuda after step 3 (checkpoint 2 on disk), resumed on cpu; and the reverse.
    let a = config(&s, "a", &body("backend: cuda\nprecision: f32\n"));
    kill_at_env(&s, &["train", &a], "train_step:3", &reference);
    let a = config(&s, "a", &body(""));
    assert_ok(&s.grist(&["train", &a]));
    assert_close(&losses(&s, "a"), &want, 1e-4, "cuda, then cpu");
    let b = config(&s, "b", &body(""));
    kill_at(&s, &["train", &b], "train_step:3");
    let b = config(&s, "b", &body("backend: cuda\nprecision: f32\n"));
    assert_ok(&s.grist_env(&["train", &b], &reference));
    assert_close(&losses(&s, "b"), &want, 1e-4, "cpu, then cuda");
    // Steps 1-2 from the cpu run's checkpoint, 3-6 on cuda.
    assert!(metrics(&s, "b")[1].get("device_memory_bytes").is_none());
    assert!(
        metrics(&s, "b")[2]["device_memory_bytes"]
            .as_u64()
            .is_some()
    );

    // The checkpoint evaluates and generates on both backends alike.
    let ckpt = s
        .path("cpu/checkpoints/step-00000006")
        .display()
        .to_string();
    let on_cpu = evaluate(&s, &ckpt, &[]);
    let args = [
        "evaluate",
        &ckpt,
        "--data",
        &crate::train::mix_dir(),
        "--split",
        "train",
        "--seq-len",
        "255",
        "--max-samples",
        "1000",
        "--backend",
        "cuda",
        "--precision",
        "f32",
    ];
    let out = s.grist_env(&args, &reference);
    assert_ok(&out);
    let on_cuda = serde_json::from_slice::<Value>(&out.stdout).unwrap()["loss"]
        .as_f64()
        .unwrap();
    assert!(
        (on_cuda - on_cpu).abs() < 1e-5 * on_cpu,
        "{on_cuda} vs {on_cpu}"
    );
    let generate = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            &ckpt,
            "--prompt-ids",
            "5,17,300,2",
            "--max-new-tokens",
            "12",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = s.grist_env(&args, &reference);
        assert_ok(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["ids"].clone()
    };
    let ids = generate(&[]);
    assert_eq!(ids.as_array().unwrap().len(), 12);
    assert_eq!(generate(&["--backend", "cuda", "--precision", "f32"]), ids);
}

/// `grist gpu bench` on the reference device: the figures check.sh reads, with the losses
/// finite and the memory of the plan reported; on the CPU backend the same first loss.
#[test]
fn gpu_bench_reports_speed_memory_and_losses() {
    let s = Scratch::new();
    s.write(
        "m.json",
        r#"{"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2}"#,
    );
    let bench = |extra: &[&str]| {
        let mut args = vec![
            "gpu",
            "bench",
            "--model",
            "m.json",
            "--batch",
            "2",
            "--seq",
            "48",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--document-masking",
            "--precision",
            "f32",
        ];
        args.extend_from_slice(extra);
        let out = s.grist_env(&args, &[("GRIST_CUDA_DEVICE", "reference")]);
        assert_ok(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let cuda = bench(&["--recompute"]);
    assert_eq!(cuda["backend"], "cuda");
    assert_eq!(cuda["losses"].as_array().unwrap().len(), 4);
    assert!(cuda["tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(cuda["device_memory_bytes"].as_u64().unwrap() > 0);
    assert!(
        cuda["mfu"].is_null(),
        "no peak is known for the reference device"
    );
    let cpu = bench(&["--backend", "cpu"]);
    let (a, b) = (
        cuda["first_loss"].as_f64().unwrap(),
        cpu["first_loss"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-5 * b, "{a} vs {b}");
}
