#!/usr/bin/env python3
"""Benchmark: tokens/s of one training step, `grist train` (CPU) vs PyTorch + transformers on the CPU.

Same model, same batch shape, same thread count, same machine, one after the other:

  torch  `LlamaForCausalLM(LlamaConfig(...))` in float32, built from the YAML's `model` (vocab_size,
         hidden_size, intermediate_size, num_layers -> num_hidden_layers, num_heads ->
         num_attention_heads, num_kv_heads -> num_key_value_heads, head_dim = hidden/heads unless
         given, rms_norm_eps = norm_eps (1e-5), rope_theta = rope.theta (10000),
         tie_word_embeddings = tie_embeddings (False)), attention "sdpa" and "eager" (one row each).
         A step: zero_grad, then per micro-batch (grad_accum_steps of them) forward with
         `labels=input_ids` + backward, clip_grad_norm_(1.0), AdamW.step (lr from the YAML, betas
         0.9/0.95, eps 1e-8, weight decay on the 2-D matrices except the embedding, as grist does).
         Batches: random token ids of shape micro_batch_size x seq_len, a new one every micro-batch
         (made before the timing starts). torch.set_num_threads(T). Each step timed with
         time.perf_counter (the whole step, optimizer included).
  grist  `grist train CONFIG -j T` on a temporary copy of the YAML: `output` in a temporary
         directory, steps = warmup + timed, evaluation on 8 validation samples (at the end only, after
         the timed steps; not in the step time), relative paths made absolute. The step time is
         read back from metrics.jsonl: tokens_per_s = micro_batch_size * grad_accum_steps * seq_len /
         (that step's seconds: batch assembly, forward, backward, clipping, AdamW), so
         seconds = micro_batch_size * grad_accum_steps * seq_len / tokens_per_s.

Both: `--warmup` steps (default 3) untimed, then `--steps` timed steps (default 10);
tokens/s = micro_batch_size * grad_accum_steps * seq_len * timed steps / (sum of the timed steps'
seconds); best of `--repeat` runs (default 1). "grist / torch" > 1 means grist is faster.
With fewer threads than CPUs, this process (the torch runs) and grist are pinned to CPUs 0..T-1.

Usage (from the repository root; the venv comes from tests/parity/train_venv.sh):
  ~/.cache/grist/megatron-venv/bin/python tests/bench/train_speed.py [--threads 2] [--config
      tests/bench/train_tiny.yaml] [--warmup 3] [--steps 10] [--repeat 1] [--json out.json]
  ... --skip-grist / --skip-torch / --attn sdpa      one side, or one attention implementation
The grist binary: --grist, else $GRIST, else $CARGO_TARGET_DIR/release/grist, else
~/.cache/grist-target/release/grist, else target/release/grist; a debug build is used (with a warning,
and "profile": "debug" in the JSON) only when no release binary with `grist train` exists.
Prints a markdown table (tests/bench/RESULTS.md style); exit status 1 when a run fails.
"""

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def log(msg):
    print(f"[train_speed] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Machine, versions, binary
# ---------------------------------------------------------------------------------------------

def machine():
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l for l in open("/proc/cpuinfo") if l.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "nproc": int(nproc) if nproc.isdigit() else os.cpu_count(),
            "cpu_count": os.cpu_count(), "mem_gib": mem, "os": platform.platform()}


def versions():
    import importlib.metadata as m
    out = {"python": platform.python_version()}
    for d in ("torch", "transformers", "numpy", "safetensors", "accelerate"):
        try:
            out[d] = m.version(d)
        except m.PackageNotFoundError:
            pass
    import torch
    out["torch_build"] = torch.__version__
    out["torch_parallel"] = torch.__config__.parallel_info().strip().splitlines()[:6]
    out["mkldnn"] = bool(torch.backends.mkldnn.is_available())
    out["mkl"] = bool(torch.backends.mkl.is_available())
    return out


def cpu_busy_s():
    """CPU seconds all processes spent busy since boot (/proc/stat), or None."""
    try:
        f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Contention:
    """CPU time other processes used while a measurement ran (busy time of the whole machine
    minus this process's and its waited-for children's)."""

    def __enter__(self):
        self.t, self.busy, self.own = time.perf_counter(), cpu_busy_s(), sum(os.times()[:4])
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t
        busy = cpu_busy_s()
        self.other_cpu_s = None if busy is None or self.busy is None else max(
            0.0, (busy - self.busy) - (sum(os.times()[:4]) - self.own))
        self.share = self.other_cpu_s / (wall * os.cpu_count()) if self.other_cpu_s is not None else None
        return False


def has_train(binary):
    try:
        r = subprocess.run([str(binary), "train", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def find_grist(explicit):
    """(binary, profile, note)."""
    if explicit:
        return Path(explicit), profile_of(Path(explicit)), None
    if os.environ.get("GRIST"):
        return Path(os.environ["GRIST"]), profile_of(Path(os.environ["GRIST"])), None
    release = []
    if os.environ.get("CARGO_TARGET_DIR"):
        release.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release/grist")
    release += [Path.home() / ".cache/grist-target/release/grist", REPO / "target/release/grist"]
    for r in release:
        if r.is_file() and has_train(r):
            return r, "release", None
    for r in release:
        d = r.parent.parent / "debug/grist"
        if d.is_file() and has_train(d):
            return d, "debug", (f"no release binary with `grist train` ({', '.join(map(str, release))}); "
                                f"using the DEBUG build {d}: its figures say nothing about grist's speed")
    sys.exit("error: no grist binary with `grist train`: cargo build --release, or pass --grist / set GRIST")


def profile_of(path):
    return "debug" if "debug" in path.parts else "release"


def grist_version(binary):
    r = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    st = binary.stat()
    return {"version": r.stdout.strip(), "path": str(binary),
            "mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime))}


def git_head():
    r = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
    return r.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


# ---------------------------------------------------------------------------------------------
# The run's shape
# ---------------------------------------------------------------------------------------------

def load_run(path):
    cfg = yaml.safe_load(Path(path).read_text())
    m = cfg.get("model")
    if not m:
        sys.exit(f"error: {path} has no `model` (only mode pretrain configs can be benchmarked)")
    rope = m.get("rope") or {}
    if (rope.get("scaling") or {}).get("type", "none") != "none":
        sys.exit("error: RoPE scaling in the config: the PyTorch side only builds the default RoPE")
    heads = m["num_heads"]
    shape = {
        "vocab_size": m["vocab_size"],
        "hidden_size": m["hidden_size"],
        "intermediate_size": m["intermediate_size"],
        "num_layers": m["num_layers"],
        "num_heads": heads,
        "num_kv_heads": m.get("num_kv_heads") or heads,
        "head_dim": m.get("head_dim") or m["hidden_size"] // heads,
        "norm_eps": m.get("norm_eps", 1e-5),
        "rope_theta": rope.get("theta", 10000.0),
        "tie_embeddings": bool(m.get("tie_embeddings", False)),
        "max_position_embeddings": m.get("max_position_embeddings", 2048),
    }
    opt = cfg.get("optimizer") or {}
    run = {
        "seq_len": cfg["seq_len"],
        "micro_batch_size": cfg.get("micro_batch_size", 8),
        "grad_accum_steps": cfg.get("grad_accum_steps", 1),
        "lr": opt.get("lr", 1e-3),
        "weight_decay": opt.get("weight_decay", 0.1),
        "grad_clip": opt.get("grad_clip", 1.0),
    }
    return cfg, shape, run


def parameter_count(s):
    d, f, hd = s["hidden_size"], s["intermediate_size"], s["head_dim"]
    q, kv = s["num_heads"] * hd, s["num_kv_heads"] * hd
    layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * f
    head = 0 if s["tie_embeddings"] else s["vocab_size"] * d
    return s["vocab_size"] * d + s["num_layers"] * layer + d + head


# ---------------------------------------------------------------------------------------------
# PyTorch
# ---------------------------------------------------------------------------------------------

def torch_run(shape, run, attn, threads, warmup, steps, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
        intermediate_size=shape["intermediate_size"], num_hidden_layers=shape["num_layers"],
        num_attention_heads=shape["num_heads"], num_key_value_heads=shape["num_kv_heads"],
        head_dim=shape["head_dim"], rms_norm_eps=shape["norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]},
        max_position_embeddings=shape["max_position_embeddings"],
        tie_word_embeddings=shape["tie_embeddings"], attention_bias=False, mlp_bias=False,
        hidden_act="silu", use_cache=False, attn_implementation=attn, dtype=torch.float32)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.train()
    used = getattr(model.config, "_attn_implementation", attn)
    if used != attn:
        raise RuntimeError(f"asked for attention {attn!r}, transformers uses {used!r}")
    n_params = sum(p.numel() for p in model.parameters())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() == 2 and "embed_tokens" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": run["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=run["lr"], betas=(0.9, 0.95), eps=1e-8)
    B, T, A = run["micro_batch_size"], run["seq_len"], run["grad_accum_steps"]
    g = torch.Generator().manual_seed(seed + 1)
    batches = [[torch.randint(0, shape["vocab_size"], (B, T), generator=g) for _ in range(A)]
               for _ in range(warmup + steps)]
    times, losses = [], []
    for i, micro in enumerate(batches):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for x in micro:
            out = model(input_ids=x, labels=x)
            (out.loss / A).backward()
            loss_sum += out.loss.item() / A
        torch.nn.utils.clip_grad_norm_(model.parameters(), run["grad_clip"])
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss_sum)
        if i >= warmup:
            times.append(dt)
    del model, opt, batches
    return {"parameters": n_params, "step_s": times, "first_loss": losses[0], "last_loss": losses[-1]}


# ---------------------------------------------------------------------------------------------
# grist
# ---------------------------------------------------------------------------------------------

def absolute(p):
    q = Path(p)
    return str(q if q.is_absolute() else (REPO / q).resolve())


def grist_run(binary, cfg, run, threads, warmup, steps, work, pin):
    cfg = json.loads(json.dumps(cfg))
    out = work / "run"
    if out.exists():
        shutil.rmtree(out)
    cfg["output"] = str(out)
    cfg["steps"] = warmup + steps
    cfg["data"]["path"] = absolute(cfg["data"]["path"])
    if cfg["data"].get("replay"):
        cfg["data"]["replay"]["path"] = absolute(cfg["data"]["replay"]["path"])
    for key in ("tokenizer", "init_from"):
        if cfg.get(key):
            cfg[key] = absolute(cfg[key])
    cfg["eval"] = {"every": 0, "samples": 8}
    cfg["checkpoint"] = {"every": 0, "keep": 1}
    path = work / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [str(binary), "-q", "train", str(path), "-j", str(threads)]
    if pin:
        cmd = ["taskset", "-c", pin, *cmd]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({r.returncode}):\n{r.stderr[-3000:]}")
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()]
    per_step = run["micro_batch_size"] * run["grad_accum_steps"] * run["seq_len"]
    timed = [rec for rec in records if rec["step"] > warmup]
    if len(timed) != steps:
        raise RuntimeError(f"metrics.jsonl has {len(timed)} steps after the warmup, expected {steps}")
    summary = json.loads((out / "summary.json").read_text())
    return {"parameters": summary.get("parameters"), "step_s": [per_step / rec["tokens_per_s"] for rec in timed],
            "first_loss": records[0]["loss"], "last_loss": records[-1]["loss"], "wall_s": wall,
            "elapsed_s": summary.get("elapsed_s")}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def figures(res, per_step):
    s = res["step_s"]
    srt = sorted(s)
    return {"tokens_per_s": per_step * len(s) / sum(s), "mean_step_ms": 1e3 * sum(s) / len(s),
            "median_step_ms": 1e3 * srt[len(srt) // 2] if len(srt) % 2 else 1e3 * (srt[len(srt) // 2 - 1] + srt[len(srt) // 2]) / 2,
            "min_step_ms": 1e3 * srt[0], "max_step_ms": 1e3 * srt[-1]}


def markdown(r):
    out = []
    t = r["threads"]
    out.append(f"## Training step vs PyTorch + transformers on the CPU (`train_speed.py`), {t} thread"
               f"{'s' if t != 1 else ''} each, {r['date']}")
    out.append("")
    m, v, s, run = r["machine"], r["versions"], r["shape"], r["run"]
    g = r.get("grist_binary") or {}
    out.append(f"Machine: {m['cpu']}, nproc {m['nproc']}, {m['mem_gib']} GiB. torch {v.get('torch')}, "
               f"transformers {v.get('transformers')}, Python {v['python']}; grist {g.get('profile', '—')} build "
               f"({g.get('version', '')}, {g.get('path', '')}). Model ({r['config']}): vocab {s['vocab_size']}, hidden "
               f"{s['hidden_size']}, MLP {s['intermediate_size']}, {s['num_layers']} layers, {s['num_heads']} heads / "
               f"{s['num_kv_heads']} KV heads, head_dim {s['head_dim']}, {'tied' if s['tie_embeddings'] else 'untied'} "
               f"output, {r['parameters']:,} parameters, float32. Batch {run['micro_batch_size']} × "
               f"{run['seq_len']} tokens"
               + (f" × {run['grad_accum_steps']} micro-batches" if run["grad_accum_steps"] > 1 else "")
               + f" per step; {r['warmup']} warmup steps, then {r['steps']} timed; best of {r['repeat']}.")
    out.append("")
    out.append("| implementation | tokens/s | mean step ms | median step ms | min–max step ms | first → last loss | grist ÷ this |")
    out.append("|---|---|---|---|---|---|---|")
    gt = r["results"].get("grist", {}).get("tokens_per_s")
    labels = {"grist": "grist `train` (CPU backend)", "torch_sdpa": "PyTorch, attn sdpa",
              "torch_eager": "PyTorch, attn eager"}
    for key, res in r["results"].items():
        if "error" in res:
            out.append(f"| {labels.get(key, key)} | failed: {res['error'].splitlines()[0][:120]} | | | | | |")
            continue
        ratio = f"{gt / res['tokens_per_s']:.2f}×" if gt else "—"
        out.append(f"| {labels.get(key, key)} | {res['tokens_per_s']:,.0f} | {res['mean_step_ms']:.1f} | "
                   f"{res['median_step_ms']:.1f} | {res['min_step_ms']:.1f}–{res['max_step_ms']:.1f} | "
                   f"{res['first_loss']:.3f} → {res['last_loss']:.3f} | {ratio} |")
    out.append("")
    for note in r["notes"]:
        out.append(f"- {note}")
    return "\n".join(out)


def busy_warning(c, what, notes):
    if c.share is not None and c.share > 0.05:
        msg = (f"{what}: other processes used {c.other_cpu_s:.1f} CPU-seconds ({100 * c.share:.0f}% of the "
               f"machine) during the run: the machine was not idle, the figure is unreliable")
        log("WARNING: " + msg)
        notes.append(msg)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "tests/bench/train_tiny.yaml"))
    ap.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs of each (default 1)")
    ap.add_argument("--attn", default="sdpa,eager", help="PyTorch attention implementations (default sdpa,eager)")
    ap.add_argument("--grist", help="the grist binary (see above)")
    ap.add_argument("--skip-grist", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--json", help="also write the figures as JSON to this file")
    ap.add_argument("--workdir", help="keep grist's run here (default: a temporary directory, removed)")
    args = ap.parse_args()
    if args.threads < 1 or args.steps < 1 or args.warmup < 0 or args.repeat < 1:
        sys.exit("error: need --threads >= 1, --steps >= 1, --warmup >= 0, --repeat >= 1")

    cfg, shape, run = load_run(args.config)
    per_step = run["micro_batch_size"] * run["grad_accum_steps"] * run["seq_len"]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))
    pin = None
    notes = []
    if args.threads < len(cpus):
        chosen = cpus[:args.threads]
        pin = ",".join(map(str, chosen))
        os.sched_setaffinity(0, chosen)
        notes.append(f"Pinned to CPUs {pin} (this process's torch runs, and grist through taskset).")
    elif args.threads > len(cpus):
        notes.append(f"{args.threads} threads on {len(cpus)} CPUs: oversubscribed.")

    result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "versions": versions(),
              "git": git_head(), "config": os.path.relpath(args.config, REPO), "threads": args.threads,
              "warmup": args.warmup, "steps": args.steps, "repeat": args.repeat, "shape": shape, "run": run,
              "parameters": parameter_count(shape), "tokens_per_step": per_step, "results": {}, "notes": notes}
    failed = False

    if not args.skip_grist:
        binary, profile, note = find_grist(args.grist)
        result["grist_binary"] = {**grist_version(binary), "profile": profile}
        if note:
            log("WARNING: " + note)
            notes.append(note)
        keep = args.workdir is not None
        work = Path(args.workdir).resolve() if keep else Path(tempfile.mkdtemp(prefix="grist-trainbench-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            best = None
            for i in range(args.repeat):
                log(f"grist train -j {args.threads} ({args.warmup}+{args.steps} steps, run {i + 1}/{args.repeat})")
                with Contention() as c:
                    res = grist_run(binary, cfg, run, args.threads, args.warmup, args.steps, work, pin)
                f = {**figures(res, per_step), **res, "other_cpu_share": c.share}
                busy_warning(c, "grist", notes)
                log(f"  grist: {f['tokens_per_s']:,.0f} tokens/s, mean step {f['mean_step_ms']:.1f} ms "
                    f"(whole command {res['wall_s']:.1f} s)")
                if best is None or f["tokens_per_s"] > best["tokens_per_s"]:
                    best = f
            result["results"]["grist"] = best
            if best["parameters"] is not None and best["parameters"] != result["parameters"]:
                notes.append(f"grist reports {best['parameters']:,} parameters, the config gives "
                             f"{result['parameters']:,}.")
        except Exception as e:  # noqa: BLE001 - reported in the table and the exit status
            result["results"]["grist"] = {"error": str(e)}
            log(f"grist failed: {e}")
            failed = True
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)

    if not args.skip_torch:
        for attn in [a.strip() for a in args.attn.split(",") if a.strip()]:
            try:
                best = None
                for i in range(args.repeat):
                    log(f"torch attn={attn} threads={args.threads} ({args.warmup}+{args.steps} steps, "
                        f"run {i + 1}/{args.repeat})")
                    with Contention() as c:
                        res = torch_run(shape, run, attn, args.threads, args.warmup, args.steps)
                    f = {**figures(res, per_step), **res, "other_cpu_share": c.share}
                    busy_warning(c, f"torch {attn}", notes)
                    log(f"  torch {attn}: {f['tokens_per_s']:,.0f} tokens/s, mean step {f['mean_step_ms']:.1f} ms")
                    if best is None or f["tokens_per_s"] > best["tokens_per_s"]:
                        best = f
                result["results"][f"torch_{attn}"] = best
                if best["parameters"] != result["parameters"]:
                    notes.append(f"torch ({attn}) has {best['parameters']:,} parameters, the config gives "
                                 f"{result['parameters']:,}.")
            except Exception as e:  # noqa: BLE001
                result["results"][f"torch_{attn}"] = {"error": f"{type(e).__name__}: {e}"}
                log(f"torch {attn} failed: {e}")
                failed = True

    res = result["results"]
    if "grist" in res and "tokens_per_s" in res["grist"]:
        result["ratio_grist_over_torch"] = {k: res["grist"]["tokens_per_s"] / v["tokens_per_s"]
                                            for k, v in res.items() if k != "grist" and "tokens_per_s" in v}
    notes.append("Step time: grist's from metrics.jsonl (tokens_per_s = batch·seq / step seconds; batch assembly "
                 "from the memory-mapped data included, evaluation and checkpointing excluded); PyTorch's from "
                 "perf_counter around zero_grad + forward(labels) + backward + clip_grad_norm_ + AdamW.step on "
                 "pre-made random batches. Loss: PyTorch's on random tokens (≈ ln vocab), grist's on the data.")
    text = markdown(result)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
