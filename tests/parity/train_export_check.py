#!/usr/bin/env python3
"""Acceptance check: `transformers` loads `grist export` output and gives the same logits as grist.

For a grist checkpoint (argument; default: one trained here with `grist train` on a copy of
tests/bench/train_tiny.yaml, steps 3, output in a temporary directory):

  1. `grist export CKPT DIR`; DIR must hold config.json, model.safetensors and tokenizer.json, and the
     exported tensors must be bit-identical to the checkpoint's model.safetensors (same names, shapes).
  2. config.json's `rope_parameters` must say what the checkpoint's model.json `rope` says
     (transformers v5 names: default / linear / yarn / llama3; static NTK is `default` with
     theta * factor^(d/(d-2))).
  3. `AutoModelForCausalLM.from_pretrained(DIR, dtype=torch.float32)` (no missing, unexpected or
     mismatched weights) and `AutoTokenizer.from_pretrained(DIR)` must load.
  4. For each prompt text: ids = the exported tokenizer's (add_special_tokens=False); they must equal
     the ids grist's own encoder gives (`grist generate --prompt TEXT`). Then
     `grist generate CKPT --prompt-ids IDS --max-new-tokens 8 --json --logits` (greedy): its
     prompt_logits (the next-token logits after the prompt) against transformers'
     `model(ids).logits[0, -1]`: max abs diff and max relative diff (abs diff / max |logit| of
     transformers'); must be < --tol (1e-4) relative. Its 8 greedy ids against
     `model.generate(ids, do_sample=False, max_new_tokens=8)`, both cut after the first EOS when the
     model has one. A differing token where transformers' logits for the two candidates are within
     --tol · max |logit| is a near-tie: reported as a warning, not a failure.

--rope-check also runs 1-4 on copies of the checkpoint whose model.json `rope` is edited: theta
500000; linear factor 4; ntk factor 4; yarn factor 4 / original context 64; yarn factor 8 / original
32 with beta_fast 16, beta_slow 2, attention_factor 1.25; llama3 factor 4 / original 64 (low 1,
high 4), so every exported rope_parameters form is verified against transformers' own RoPE. One
prompt is longer than 64 tokens, past the "original" context of the scaled variants.
A barely trained model attends almost uniformly (attention scores ~0.1), so its logits hardly depend
on RoPE: changing the RoPE moves them by ~5e-4 relative, too close to the 1e-4 tolerance for the
check to catch a wrong parameter. The copies therefore also get their q/k/v/o projection weights
multiplied by --sharpen (default 4; 1 keeps them), which makes attention position-sensitive; a
control copy `sharpened-default` (same weights, default RoPE) is checked first, and every variant
reports its "rope effect": how far transformers' logits move against the control's (max over prompts
of max |Δ| / max |logit|); an effect far above the tolerance shows the comparison can see the RoPE.

Exit status 1 on any failure (after printing the summary). Needs the venv of
tests/parity/train_venv.sh (torch, transformers 5.23, safetensors, accelerate).

Usage (from the repository root):
  ~/.cache/grist/megatron-venv/bin/python tests/parity/train_export_check.py [CKPT_DIR] [--rope-check]
      [--tol 1e-4] [--keep DIR] [--json out.json]
The grist binary: --grist, else $GRIST, else $CARGO_TARGET_DIR/release/grist, else
~/.cache/grist-target/release/grist, else target/release/grist; the debug build next to any of those
when no release binary has `grist train` (slower, same results).
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
NEW_TOKENS = 8

PROMPTS = [
    "The",
    "Hello world, this is a test of the exported model.",
    "In 1905, Albert Einstein published four papers that changed physics:",
    " The quick brown fox\n\njumps over   the lazy dog!",
    # Longer than 64 tokens: past the `original_max_position_embeddings` of the scaled variants.
    ("The history of the city begins with a small settlement on the river, where farmers and traders "
     "met every week to exchange grain, wool and tools. Over the following centuries the market grew "
     "into a town with walls, a church and a harbour, and by the eighteenth century it was one of the "
     "busiest ports in the region, known for its shipyards and its schools. Today the old town is a "
     "museum of its own past, and visitors walk"),
]

# model.json `rope` edits for --rope-check (name, rope); the first is the control.
ROPE_VARIANTS = [
    ("sharpened-default", {"theta": 10000.0, "scaling": {"type": "none"}}),
    ("theta-500k", {"theta": 500000.0, "scaling": {"type": "none"}}),
    ("linear", {"theta": 10000.0, "scaling": {"type": "linear", "factor": 4.0}}),
    ("ntk", {"theta": 10000.0, "scaling": {"type": "ntk", "factor": 4.0}}),
    ("yarn", {"theta": 10000.0, "scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}}),
    ("yarn-custom", {"theta": 10000.0, "scaling": {"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32,
                                                   "beta_fast": 16.0, "beta_slow": 2.0, "attention_factor": 1.25}}),
    ("llama3", {"theta": 10000.0, "scaling": {"type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
]


def log(msg):
    print(f"[train_export_check] {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# grist
# ---------------------------------------------------------------------------------------------

def has_train(binary):
    try:
        r = subprocess.run([str(binary), "train", "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def find_grist(explicit):
    if explicit:
        return Path(explicit)
    if os.environ.get("GRIST"):
        return Path(os.environ["GRIST"])
    release = []
    if os.environ.get("CARGO_TARGET_DIR"):
        release.append(Path(os.environ["CARGO_TARGET_DIR"]) / "release/grist")
    release += [Path.home() / ".cache/grist-target/release/grist", REPO / "target/release/grist"]
    for r in release:
        if r.is_file() and has_train(r):
            return r
    for r in release:
        d = r.parent.parent / "debug/grist"
        if d.is_file() and has_train(d):
            log(f"no release binary with `grist train`; using the debug build {d}")
            return d
    sys.exit("error: no grist binary with `grist train`: cargo build, or pass --grist / set GRIST")


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=REPO, **kw)
    if r.returncode != 0:
        raise Failed(f"`{' '.join(map(str, cmd))}` failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout


def train_tiny(grist, work, threads, steps):
    cfg = yaml.safe_load((REPO / "tests/bench/train_tiny.yaml").read_text())
    out = work / "train"
    cfg["output"] = str(out)
    cfg["steps"] = steps
    cfg["data"]["path"] = str((REPO / cfg["data"]["path"]).resolve())
    cfg["tokenizer"] = str((REPO / cfg["tokenizer"]).resolve())
    cfg["eval"] = {"every": 0, "samples": 8}
    cfg["checkpoint"] = {"every": 0, "keep": 1}
    path = work / "train.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    log(f"training a tiny model: grist train {path} ({steps} steps)")
    t0 = time.time()
    run([grist, "-q", "train", path, *(["-j", threads] if threads else [])])
    ckpts = sorted((out / "checkpoints").glob("step-*"))
    if not ckpts:
        raise Failed(f"grist train wrote no checkpoint under {out / 'checkpoints'}")
    log(f"  trained in {time.time() - t0:.1f} s: {ckpts[-1]}")
    return ckpts[-1]


def grist_generate(grist, ckpt, ids, threads):
    cmd = [grist, "generate", ckpt, "--prompt-ids", ",".join(map(str, ids)), "--max-new-tokens", NEW_TOKENS,
           "--json", "--logits", *(["-j", threads] if threads else [])]
    return json.loads(run(cmd).strip().splitlines()[-1])


def grist_encode(grist, ckpt, text):
    """grist's own encoding of `text` (the checkpoint's tokenizer.json)."""
    out = json.loads(run([grist, "generate", ckpt, "--prompt", text, "--max-new-tokens", 1, "--json"])
                     .strip().splitlines()[-1])
    return out["prompt_ids"]


# ---------------------------------------------------------------------------------------------
# Expectations
# ---------------------------------------------------------------------------------------------

def expected_rope_parameters(model_json):
    """transformers v5 `rope_parameters` for a grist `rope` (the fields that must be there)."""
    rope = model_json.get("rope") or {}
    theta = rope.get("theta", 10000.0)
    s = rope.get("scaling") or {"type": "none"}
    kind = s.get("type", "none")
    hd = model_json.get("head_dim") or model_json["hidden_size"] // model_json["num_heads"]
    if kind == "none":
        return {"rope_type": "default", "rope_theta": theta}
    if kind == "linear":
        return {"rope_type": "linear", "rope_theta": theta, "factor": s["factor"]}
    if kind == "ntk":
        return {"rope_type": "default", "rope_theta": theta * s["factor"] ** (hd / (hd - 2))}
    if kind == "yarn":
        out = {"rope_type": "yarn", "rope_theta": theta, "factor": s["factor"],
               "original_max_position_embeddings": s["original_max_position_embeddings"],
               "beta_fast": s.get("beta_fast", 32.0), "beta_slow": s.get("beta_slow", 1.0)}
        if s.get("attention_factor") is not None:
            out["attention_factor"] = s["attention_factor"]
        return out
    if kind == "llama3":
        return {"rope_type": "llama3", "rope_theta": theta, "factor": s["factor"],
                "low_freq_factor": s.get("low_freq_factor", 1.0), "high_freq_factor": s.get("high_freq_factor", 4.0),
                "original_max_position_embeddings": s["original_max_position_embeddings"]}
    raise Failed(f"unknown rope scaling type {kind!r}")


def rope_problems(exported, expected):
    out = []
    for k, want in expected.items():
        got = exported.get(k)
        if isinstance(want, float) or isinstance(got, float):
            ok = isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=1e-12)
        else:
            ok = got == want
        if not ok:
            out.append(f"{k}: exported {got!r}, expected {want!r}")
    return out


def compare_tensors(ckpt, export_dir):
    from safetensors.numpy import load_file
    a = load_file(str(ckpt / "model.safetensors"))
    b = load_file(str(export_dir / "model.safetensors"))
    problems = []
    if set(a) != set(b):
        problems.append(f"tensor names differ: only in checkpoint {sorted(set(a) - set(b))[:5]}, "
                        f"only in export {sorted(set(b) - set(a))[:5]}")
    for name in sorted(set(a) & set(b)):
        if a[name].shape != b[name].shape or a[name].dtype != b[name].dtype:
            problems.append(f"{name}: {a[name].dtype}{list(a[name].shape)} vs {b[name].dtype}{list(b[name].shape)}")
        elif a[name].tobytes() != b[name].tobytes():
            problems.append(f"{name}: values differ")
    return len(b), problems


def cut_at_eos(ids, eos):
    if not eos:
        return list(ids)
    out = []
    for t in ids:
        out.append(t)
        if t in eos:
            break
    return out


# ---------------------------------------------------------------------------------------------
# One checkpoint
# ---------------------------------------------------------------------------------------------

def check(name, grist, ckpt, work, tol, threads, baseline=None):
    """Steps 1-4 for one checkpoint; `baseline`: transformers' last-position logits per prompt of the
    control (for the rope effect). Returns (result, logits per prompt)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = {"variant": name, "checkpoint": str(ckpt), "failures": [], "warnings": [], "prompts": []}
    last_logits = {}
    fail = res["failures"].append
    model_json = json.loads((ckpt / "model.json").read_text())
    res["rope"] = model_json.get("rope")
    export_dir = work / f"export-{name}"
    if export_dir.exists():
        shutil.rmtree(export_dir)
    run([grist, "export", ckpt, export_dir])
    files = sorted(p.name for p in export_dir.iterdir())
    res["files"] = files
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        if f not in files:
            fail(f"export has no {f} (files: {files})")
    hf_config = json.loads((export_dir / "config.json").read_text())
    res["rope_parameters"] = hf_config.get("rope_parameters")
    probs = rope_problems(hf_config.get("rope_parameters") or {}, expected_rope_parameters(model_json))
    for p in probs:
        fail(f"config.json rope_parameters: {p}")
    n, probs = compare_tensors(ckpt, export_dir)
    res["tensors"] = n
    res["tensors_identical"] = not probs
    for p in probs[:10]:
        fail(f"model.safetensors: {p}")

    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(export_dir), dtype=torch.float32,
                                                           output_loading_info=True)
        tok = AutoTokenizer.from_pretrained(str(export_dir))
    except Exception as e:  # noqa: BLE001 - the acceptance criterion itself
        fail(f"transformers cannot load the export: {type(e).__name__}: {e}")
        return res, last_logits
    model.eval()
    res["transformers_class"] = type(model).__name__
    res["tokenizer_class"] = type(tok).__name__
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if info.get(key):
            fail(f"from_pretrained {key}: {sorted(info[key])[:5]}")
    rope_seen = dict(model.config.rope_parameters or {})
    res["transformers_rope_parameters"] = rope_seen
    rot = model.model.rotary_emb
    res["transformers_attention_scaling"] = float(getattr(rot, "attention_scaling", 1.0))
    eos = model.config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()

    for text in PROMPTS:
        p = {"text": text if len(text) <= 40 else text[:37] + "..."}
        ids = tok(text, add_special_tokens=False)["input_ids"]
        p["tokens"] = len(ids)
        grist_ids = grist_encode(grist, ckpt, text)
        p["same_ids_as_grist_encoder"] = grist_ids == ids
        if grist_ids != ids:
            fail(f"prompt {p['text']!r}: the exported tokenizer gives {ids[:12]}..., grist's encoder "
                 f"{grist_ids[:12]}...")
        g = grist_generate(grist, ckpt, ids, threads)
        if g["prompt_ids"] != ids:
            fail(f"prompt {p['text']!r}: grist generate echoed other prompt ids")
        with torch.no_grad():
            x = torch.tensor([ids])
            hf_logits = model(input_ids=x).logits[0, -1].double()
            gl = torch.tensor(g["prompt_logits"], dtype=torch.float64)
            if gl.shape != hf_logits.shape:
                fail(f"prompt {p['text']!r}: grist gives {gl.numel()} logits, transformers {hf_logits.numel()}")
                res["prompts"].append(p)
                continue
            last_logits[text] = hf_logits
            if baseline is not None and text in baseline:
                b = baseline[text]
                p["rope_effect"] = (hf_logits - b).abs().max().item() / b.abs().max().item()
            scale = hf_logits.abs().max().item()
            abs_diff = (gl - hf_logits).abs().max().item()
            p["max_abs_logit"] = scale
            p["max_abs_diff"] = abs_diff
            p["max_rel_diff"] = abs_diff / scale if scale > 0 else abs_diff
            p["argmax_same"] = int(gl.argmax()) == int(hf_logits.argmax())
            if not p["max_rel_diff"] < tol:
                fail(f"prompt {p['text']!r}: logits differ: max abs {abs_diff:.3e}, relative {p['max_rel_diff']:.3e} "
                     f"(tolerance {tol:g})")
            gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=NEW_TOKENS,
                                 min_new_tokens=0, pad_token_id=next(iter(eos)) if eos else 0,
                                 eos_token_id=sorted(eos) if eos else None)
        hf_new = cut_at_eos(gen[0, len(ids):].tolist(), eos)
        gr_new = cut_at_eos(g["ids"], eos)
        p["transformers_greedy"] = hf_new
        p["grist_greedy"] = gr_new
        p["grist_finish_reason"] = g.get("finish_reason")
        p["greedy_same"] = hf_new == gr_new
        if hf_new != gr_new:
            k = next((i for i, (a, b) in enumerate(zip(hf_new, gr_new)) if a != b), min(len(hf_new), len(gr_new)))
            if k < min(len(hf_new), len(gr_new)):
                with torch.no_grad():
                    prefix = torch.tensor([ids + hf_new[:k]])
                    lk = model(input_ids=prefix).logits[0, -1].double()
                gap = (lk[hf_new[k]] - lk[gr_new[k]]).item()
                rel = abs(gap) / lk.abs().max().item()
                p["greedy_divergence"] = {"at": k, "transformers": hf_new[k], "grist": gr_new[k],
                                          "logit_gap": gap, "relative_gap": rel}
                msg = (f"prompt {p['text']!r}: greedy continuations differ at new token {k}: transformers "
                       f"{hf_new[k]}, grist {gr_new[k]}; transformers' logit gap {gap:.3e} (relative {rel:.3e})")
                if rel < tol:
                    res["warnings"].append(msg + ": a near-tie")
                else:
                    fail(msg)
            else:
                fail(f"prompt {p['text']!r}: greedy continuations differ in length: transformers {hf_new}, "
                     f"grist {gr_new}")
        res["prompts"].append(p)
    effects = [p["rope_effect"] for p in res["prompts"] if "rope_effect" in p]
    if effects:
        res["rope_effect"] = max(effects)
    del model
    return res, last_logits


def rope_copy(ckpt, work, name, rope, sharpen):
    dst = work / f"ckpt-{name}"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in ("model.json", "model.safetensors", "tokenizer.json"):
        if (ckpt / f).exists():
            shutil.copy2(ckpt / f, dst / f)
    if sharpen != 1.0:
        from safetensors.numpy import load_file, save_file
        tensors = load_file(str(dst / "model.safetensors"))
        for k in tensors:
            if any(f"self_attn.{p}_proj." in k for p in "qkvo"):
                tensors[k] = (tensors[k] * sharpen).astype(tensors[k].dtype)
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    mj = json.loads((dst / "model.json").read_text())
    mj["rope"] = rope
    (dst / "model.json").write_text(json.dumps(mj, indent=2) + "\n")
    return dst


def describe_rope(rope):
    if not rope:
        return "default"
    s = dict(rope.get("scaling") or {"type": "none"})
    kind = s.pop("type", "none")
    parts = [f"theta {rope.get('theta', 10000.0):g}"] + [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                                                         for k, v in s.items()]
    return f"{kind}: " + ", ".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", help="a grist checkpoint directory (default: train a tiny one)")
    ap.add_argument("--rope-check", action="store_true", help="also check edited RoPE variants (see above)")
    ap.add_argument("--sharpen", type=float, default=4.0,
                    help="--rope-check: multiply the copies' q/k/v/o weights by this (default 4; 1: unchanged)")
    ap.add_argument("--train-steps", type=int, default=3, help="steps of the tiny model trained by default (3)")
    ap.add_argument("--tol", type=float, default=1e-4, help="relative logit tolerance (default 1e-4)")
    ap.add_argument("--grist", help="the grist binary (see above)")
    ap.add_argument("--threads", type=int, help="-j for grist train / generate (default: grist's, all cores)")
    ap.add_argument("--keep", help="work here and keep it (default: a temporary directory, removed)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()

    import torch
    import transformers
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    grist = find_grist(args.grist)
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="grist-export-check-"))
    work.mkdir(parents=True, exist_ok=True)
    results, failed = [], False
    try:
        ckpt = Path(args.checkpoint).resolve() if args.checkpoint else train_tiny(grist, work, args.threads,
                                                                                      args.train_steps)
        variants = [("as-saved", ckpt)]
        if args.rope_check:
            variants += [(name, rope_copy(ckpt, work, name, rope, args.sharpen)) for name, rope in ROPE_VARIANTS]
        baseline = None
        for name, c in variants:
            log(f"checking {name}: {c}")
            t0 = time.time()
            try:
                r, logits = check(name, grist, c, work, args.tol, args.threads,
                                  baseline if name != "sharpened-default" else None)
                if name == "sharpened-default":
                    baseline = logits
            except Failed as e:
                r = {"variant": name, "checkpoint": str(c), "failures": [str(e)], "warnings": [], "prompts": []}
            r["seconds"] = round(time.time() - t0, 1)
            results.append(r)
            failed |= bool(r["failures"])
            log(f"  {name}: {'FAILED' if r['failures'] else 'ok'} ({r['seconds']} s)")
    except Failed as e:
        print(f"error: {e}", file=sys.stderr)
        failed = True
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(f"## `grist export` → transformers {transformers.__version__} (torch {torch.__version__}), "
          f"grist: {grist}, tolerance {args.tol:g} relative")
    print()
    print("| variant | rope (model.json) | exported rope_parameters | tensors | tokenizer ids | max abs diff | "
          "max rel diff | rope effect | greedy 8 same | result |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ps = r["prompts"]
        rels = [p["max_rel_diff"] for p in ps if "max_rel_diff" in p]
        abss = [p["max_abs_diff"] for p in ps if "max_abs_diff" in p]
        rp = r.get("rope_parameters") or {}
        rp_text = ", ".join(f"{k}={v}" for k, v in rp.items()) if rp else "—"
        tensors = (f"{r['tensors']} identical" if r.get("tensors_identical") else "DIFFER") if "tensors" in r else "—"
        same_ids = sum(bool(p.get("same_ids_as_grist_encoder")) for p in ps)
        greedy = sum(bool(p.get("greedy_same")) for p in ps)
        print(f"| {r['variant']} | {describe_rope(r.get('rope'))} | {rp_text} | {tensors} | "
              f"{same_ids}/{len(ps)} same | {max(abss):.2e} | {max(rels):.2e} | "
              f"{format(r['rope_effect'], '.2e') if 'rope_effect' in r else '—'} | {greedy}/{len(ps)} | "
              f"{'FAIL' if r['failures'] else 'ok'} |" if rels else
              f"| {r['variant']} | {describe_rope(r.get('rope'))} | {rp_text} | {tensors} | — | — | — | — | — | FAIL |")
    print()
    for r in results:
        for f in r["failures"]:
            print(f"- FAIL {r['variant']}: {f}")
        for w in r["warnings"]:
            print(f"- warning {r['variant']}: {w}")
    if args.rope_check:
        print(f"- rope variants: q/k/v/o weights × {args.sharpen:g}; rope effect = max relative change of "
              f"transformers' last-position logits against `sharpened-default` (same weights, default RoPE).")
    print(f"\n{'FAILED' if failed else 'OK'}: {len(results)} checkpoint variant(s), {len(PROMPTS)} prompts each")
    if args.json:
        Path(args.json).write_text(json.dumps({"grist": str(grist), "tol": args.tol, "results": results,
                                               "transformers": transformers.__version__,
                                               "torch": torch.__version__}, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
