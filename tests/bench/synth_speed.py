#!/usr/bin/env python3
"""Benchmark: greedy generation speed of `grist serve` vs transformers on SmolLM2-135M-Instruct (Q4_1 GGUF).

Model: ~/.cache/grist/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf (tests/parity/gguf_goldens.py fetches
it). transformers loads it the way gguf_goldens.py does (`from_pretrained(dir, gguf_file=...)`,
dequantized to float32); grist serves the GGUF itself.

Prompts: 8 fixed prompts, 4 plain and 4 rendered with the model's chat template (SmolLM2's default
system prompt), 10-40 tokens each, tokenized without special tokens (as `grist serve` /
`grist generate` do). No multi-digit numbers: transformers' tokenizer built from the GGUF and
llama.cpp's "smollm" pre-tokenizer may split digits differently (see gguf_goldens.py).

transformers (CPU, torch.set_num_threads(--threads), float32, `model.generate(do_sample=False,
max_new_tokens=N)`, stops at EOS <|im_end|>; model load and one warm-up excluded):
  single   the 8 prompts one at a time;
  batch    the 8 prompts as one batch, left padding (pad = <|im_end|>).
grist (`grist serve MODEL --port P --model-name NAME -j THREADS`; load and one warm-up request
excluded; POST /v1/completions {"prompt", "temperature": 0, "max_tokens": N} through urllib):
  sequential  the 8 requests one after another;
  concurrent  the 8 requests at once from 8 threads (wall time until the last answer).
New tokens: transformers counts the generated ids up to and including the first EOS; grist reports
usage.completion_tokens. tokens/s = new tokens / seconds over the 8 prompts.

Parity: grist's choices[0].text must equal transformers' single-prompt greedy text (new ids decoded
with skip_special_tokens=True), for every prompt, sequential and concurrent; mismatches are listed
(with the first differing character) and make the exit status 1. Batched transformers text is also
compared with its single-prompt text (left padding can change float rounding; reported only).

Usage (from the repository root; the megatron venv has torch + transformers + gguf:
tests/parity/train_venv.sh):
  ~/.cache/grist/megatron-venv/bin/python tests/bench/synth_speed.py [--threads 2] [--max-new-tokens 64]
  ~/.cache/grist/megatron-venv/bin/python tests/bench/synth_speed.py --hf-only --max-new-tokens 16
The grist binary: --grist, else $GRIST, else $CARGO_TARGET_DIR/release/grist (default
CARGO_TARGET_DIR ~/.cache/grist-target). Prints a markdown table; --json writes the numbers.
"""

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

SMOL = Path.home() / ".cache/grist/smollm2"
DEFAULT_MODEL = SMOL / "SmolLM2-135M-Instruct.Q4_1.gguf"

PLAIN_PROMPTS = [
    "Paris, the capital of France, is famous for its museums, its old bridges and",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old woodcutter who",
    "In biology class today we learned that photosynthesis is the process by which green plants",
]
CHAT_QUESTIONS = [
    "Give me three tips for staying healthy.",
    "Write a short poem about the sea.",
    "Explain what a hash table is in simple words.",
    "What should I pack for a weekend hiking trip in the mountains?",
]


def prompts(tok) -> list[str]:
    chat = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
            for q in CHAT_QUESTIONS]
    return PLAIN_PROMPTS + chat


# ---------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------

def hf_side(model_path: Path, threads: int, n_new: int) -> dict:
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantization progress bar
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    tok_dir = model_path.parent / "hf_tokenizer"
    if tok_dir.is_dir():
        tok = AutoTokenizer.from_pretrained(str(tok_dir))
    else:
        tok = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(model_path.parent), gguf_file=model_path.name,
                                                 dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    texts = prompts(tok)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    print(f"transformers: loaded in {load_s:.1f} s, {threads} threads, torch {torch.__version__}; "
          f"prompt tokens {[len(i) for i in ids]}", file=sys.stderr)

    def useful(new: list[int]) -> list[int]:
        return new[: new.index(eos) + 1] if eos in new else new

    gen_kw = dict(do_sample=False, max_new_tokens=n_new, pad_token_id=pad, eos_token_id=eos,
                  temperature=None, top_p=None, top_k=None)
    with torch.no_grad():
        # warm-up: one single and one small batch
        w = torch.tensor([ids[0]])
        model.generate(w, attention_mask=torch.ones_like(w), **(gen_kw | {"max_new_tokens": 4}))
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = "<|im_end|>"
        wb = tok(texts[:2], add_special_tokens=False, padding=True, return_tensors="pt")
        model.generate(**wb, **(gen_kw | {"max_new_tokens": 4}))

        single_new, single_s = [], []
        for i in ids:
            x = torch.tensor([i])
            t = time.perf_counter()
            out = model.generate(x, attention_mask=torch.ones_like(x), **gen_kw)
            single_s.append(time.perf_counter() - t)
            single_new.append(useful(out[0, len(i):].tolist()))

        batch = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        t = time.perf_counter()
        out = model.generate(**batch, **gen_kw)
        batch_s = time.perf_counter() - t
        width = batch["input_ids"].shape[1]
        batch_new = [useful(row[width:].tolist()) for row in out]

    single_text = [tok.decode(n, skip_special_tokens=True) for n in single_new]
    batch_text = [tok.decode(n, skip_special_tokens=True) for n in batch_new]
    return {
        "prompts": texts,
        "prompt_tokens": [len(i) for i in ids],
        "single": {"new_tokens": [len(n) for n in single_new], "seconds": single_s, "text": single_text,
                   "ids": single_new},
        "batch": {"new_tokens": [len(n) for n in batch_new], "seconds": batch_s, "text": batch_text},
        "load_s": load_s,
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }


# ---------------------------------------------------------------------------------------------
# grist serve
# ---------------------------------------------------------------------------------------------

def default_grist() -> Path:
    if os.environ.get("GRIST"):
        return Path(os.environ["GRIST"])
    target = os.environ.get("CARGO_TARGET_DIR") or str(Path.home() / ".cache/grist-target")
    return Path(target) / "release/grist"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(grist: Path, model: Path, port: int, name: str, threads: int, timeout: float) -> subprocess.Popen:
    cmd = [str(grist), "serve", str(model), "--port", str(port), "--host", "127.0.0.1", "--model-name", name,
           "-j", str(threads)]
    print("$", " ".join(cmd), file=sys.stderr)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, errors="replace")
    ready = threading.Event()
    marker = f"grist serve: listening on http://127.0.0.1:{port}"

    def drain():
        for line in proc.stderr:
            print(f"  [serve] {line.rstrip()}", file=sys.stderr)
            if line.startswith(marker):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    t0 = time.monotonic()
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            stop(proc)
            raise RuntimeError(f"grist serve not ready (exit code {proc.poll()}); wanted a line {marker!r}")
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def complete(port: int, name: str, prompt: str, n_new: int) -> tuple[dict, float]:
    body = json.dumps({"model": name, "prompt": prompt, "temperature": 0, "max_tokens": n_new}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy for localhost
    t = time.perf_counter()
    with opener.open(req, timeout=3600) as r:
        out = json.loads(r.read())
    return out, time.perf_counter() - t


def grist_side(args, texts: list[str]) -> dict:
    port = args.port or free_port()
    proc = start_serve(args.grist, args.model, port, args.model_name, args.threads, args.startup_timeout)
    try:
        complete(port, args.model_name, texts[0], 4)  # warm-up
        seq = [complete(port, args.model_name, t, args.max_new_tokens) for t in texts]

        results: list = [None] * len(texts)
        barrier = threading.Barrier(len(texts) + 1)

        def worker(k):
            barrier.wait()
            results[k] = complete(port, args.model_name, texts[k], args.max_new_tokens)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(texts))]
        for th in threads:
            th.start()
        barrier.wait()
        t = time.perf_counter()
        for th in threads:
            th.join()
        conc_s = time.perf_counter() - t
    finally:
        stop(proc)

    def pack(rs):
        return {"new_tokens": [r["usage"]["completion_tokens"] for r, _ in rs],
                "prompt_tokens": [r["usage"]["prompt_tokens"] for r, _ in rs],
                "text": [r["choices"][0]["text"] for r, _ in rs],
                "finish_reason": [r["choices"][0].get("finish_reason") for r, _ in rs],
                "seconds": [s for _, s in rs]}

    return {"sequential": pack(seq), "concurrent": pack(results) | {"wall_seconds": conc_s}}


# ---------------------------------------------------------------------------------------------

def first_diff(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", "-j", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--grist", type=Path, default=default_grist())
    ap.add_argument("--model-name", default="smollm2-135m-instruct")
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    ap.add_argument("--hf-only", action="store_true", help="only the transformers half (no grist binary needed)")
    ap.add_argument("--json", type=Path, default=None, help="write all numbers and texts here")
    args = ap.parse_args()

    if not args.hf_only and not args.grist.exists():
        print(f"no grist binary at {args.grist} (cargo build --release, --grist PATH, or --hf-only)", file=sys.stderr)
        return 2

    hf = hf_side(args.model, args.threads, args.max_new_tokens)
    texts = hf["prompts"]
    single_tok, single_s = sum(hf["single"]["new_tokens"]), sum(hf["single"]["seconds"])
    batch_tok, batch_s = sum(hf["batch"]["new_tokens"]), hf["batch"]["seconds"]
    rows = [("transformers", "one prompt at a time", single_tok, single_s, None),
            ("transformers", "batch of 8, left padding", batch_tok, batch_s, None)]

    problems = []
    for k, (a, b) in enumerate(zip(hf["single"]["text"], hf["batch"]["text"])):
        if a != b:
            print(f"note: transformers batch text differs from single for prompt {k} at char {first_diff(a, b)}: "
                  f"{b!r} vs {a!r}", file=sys.stderr)

    gr = None
    if not args.hf_only:
        gr = grist_side(args, texts)
        s, c = gr["sequential"], gr["concurrent"]
        s_tok, s_s = sum(s["new_tokens"]), sum(s["seconds"])
        c_tok, c_s = sum(c["new_tokens"]), c["wall_seconds"]
        rows.append(("grist serve", "8 requests in sequence", s_tok, s_s, s_tok / s_s / (single_tok / single_s)))
        rows.append(("grist serve", "8 concurrent requests", c_tok, c_s, c_tok / c_s / (batch_tok / batch_s)))
        for mode, g in (("sequential", s), ("concurrent", c)):
            for k, (want, got) in enumerate(zip(hf["single"]["text"], g["text"])):
                if got != want:
                    i = first_diff(got, want)
                    problems.append(f"grist {mode} prompt {k}: text differs at char {i}: "
                                    f"grist {got[max(0, i - 20):i + 40]!r} vs transformers {want[max(0, i - 20):i + 40]!r}")
            for k, (pt, want) in enumerate(zip(g["prompt_tokens"], hf["prompt_tokens"])):
                if pt != want:
                    problems.append(f"grist {mode} prompt {k}: {pt} prompt tokens, transformers {want}")

    print(f"\nSmolLM2-135M-Instruct Q4_1, {args.threads} threads, greedy, max {args.max_new_tokens} new tokens, "
          f"8 prompts ({sum(hf['prompt_tokens'])} prompt tokens); {platform.processor() or platform.machine()}, "
          f"torch {hf['versions']['torch']}, transformers {hf['versions']['transformers']}\n")
    print("| engine | mode | new tokens | seconds | tokens/s | grist / transformers |")
    print("|---|---|---:|---:|---:|---:|")
    for eng, mode, ntok, sec, ratio in rows:
        print(f"| {eng} | {mode} | {ntok} | {sec:.2f} | {ntok / sec:.1f} | {'' if ratio is None else f'{ratio:.2f}x'} |")
    print()
    for k, t in enumerate(texts):
        print(f"prompt {k} ({hf['prompt_tokens'][k]} tokens, {hf['single']['new_tokens'][k]} new): "
              f"{t[-50:]!r} -> {hf['single']['text'][k][:70]!r}")
    if gr is not None:
        n_texts = 2 * len(texts)
        print(f"\ngreedy text parity grist vs transformers: "
              f"{n_texts - sum('text differs' in p for p in problems)}/{n_texts} equal")
        for p in problems:
            print(f"MISMATCH: {p}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "max_new_tokens": args.max_new_tokens,
                                         "transformers": hf, "grist": gr, "problems": problems}, indent=1,
                                        ensure_ascii=False))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
