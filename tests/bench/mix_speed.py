#!/usr/bin/env python3
"""Packing speed of the `mix` stage against the disk it writes to.

Encodes a corpus (every web_en text, WikiText-2 and tinyshakespeare, repeated --scale times) with
`grist tokenizer encode` into two sources, then runs `mix` over them (best_fit and concat, all
tokens, one epoch) and compares the `pack` phase's wall time with `dd` writing the same number
of bytes to the same directory with fsync (grist fsyncs its `.bin` too). A ratio above 1 means
packing runs faster than the disk takes the bytes.

    cargo build --release && python3 tests/bench/mix_speed.py [--scale 4] [--workdir DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from tokenizer_speed import build_corpus  # noqa: E402


def grist_bin() -> str:
    for c in (os.environ.get("GRIST"), os.environ.get("CARGO_TARGET_DIR") and f"{os.environ['CARGO_TARGET_DIR']}/release/grist", str(REPO / "target/release/grist")):
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("no grist binary: cargo build --release, or set GRIST")


def run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return r


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--workdir")
    ap.add_argument("--vocab-size", type=int, default=32000)
    args = ap.parse_args()
    grist = grist_bin()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="grist-mixbench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    info = build_corpus(corpus, None, args.scale)
    docs, nbytes = info["documents"], info["text_bytes"]
    # Two sources: the corpus split in halves by line.
    lines = corpus.read_text().splitlines(keepends=True)
    (work / "a.jsonl").write_text("".join(lines[::2]))
    (work / "b.jsonl").write_text("".join(lines[1::2]))
    tok = work / "tokenizer.json"
    if not tok.exists():
        run([grist, "tokenizer", "train", "--input", str(corpus), "--output", str(tok), "--vocab-size", str(args.vocab_size)], work)
    for name in ("a", "b"):
        shutil.rmtree(work / "tokens.work", ignore_errors=True)
        run([grist, "tokenizer", "encode", str(tok), "--input", f"{name}.jsonl", "--output", "tokens", "--name", name], work)
    rows = []
    for packing in ("best_fit", "concat"):
        shutil.rmtree(work / "mixwork", ignore_errors=True)
        shutil.rmtree(work / "mix", ignore_errors=True)
        (work / "mix.yaml").write_text(
            "name: mixbench\nworkdir: mixwork\nstages:\n  - id: mix\n    type: mix\n    path: mix\n"
            f"    seq_len: 2048\n    packing: {packing}\n    max_epochs: 1\n    validation_fraction: 0.001\n"
            "    sources:\n      a: {dataset: tokens/a}\n      b: {dataset: tokens/b}\n"
        )
        t0 = time.perf_counter()
        run([grist, "run", "mix.yaml", "-q"], work)
        wall = time.perf_counter() - t0
        written = sum((work / "mix" / f).stat().st_size for f in os.listdir(work / "mix"))
        stats = json.loads((work / "mixwork/stats/mix.json").read_text())
        t0 = time.perf_counter()
        subprocess.run(["dd", "if=/dev/zero", f"of={work}/dd.bin", "bs=1M", f"count={max(1, written >> 20)}", "conv=fsync"], check=True, capture_output=True)
        dd = time.perf_counter() - t0
        os.remove(work / "dd.bin")
        rows.append((packing, written, wall, stats, dd))
    print(f"## mix packing vs disk writes (`mix_speed.py`), {time.strftime('%Y-%m-%d')}\n")
    print(f"Corpus: {docs:,} documents, {nbytes / 1e6:.1f} MB of text, two sources; seq_len 2048; one epoch of everything.\n")
    print("| packing | bytes written | grist `mix` (whole run) s | `pack` task s | pack MB/s | `dd` same bytes, fsync s | dd MB/s | pack vs disk × |")
    print("|---|---|---|---|---|---|---|---|")
    for packing, written, wall, stats, dd in rows:
        pack = stats["seconds"]
        print(
            f"| {packing} | {written / 1e6:.1f} MB | {wall:.2f} | {pack:.3f} | {written / 1e6 / pack:.0f} | "
            f"{dd:.3f} | {written / 1e6 / dd:.0f} | {dd / pack:.2f}× |"
        )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
