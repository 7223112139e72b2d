#!/usr/bin/env python3
"""Benchmark: grist `quality_classifier` vs Python fastText predict, one core each, same documents.

Documents: every non-empty text of ../shared/data/web_en (wceb2026 raw and trafilatura text, C4
sample, dolma fixtures): the 2,429 documents of the parity goldens, 25 MB.
Models: the parity fixture tests/fixtures/parity/quality_hq_cc.bin (dim 8, trained by Python
fastText), and a dim-100 model trained here with `grist classifier train` on the shared data
(WikiText-2 + trafilatura text vs raw page text, 200k buckets), closer to DCLM's size of vector.
Peer: the official Python fastText binding (fasttext-numpy2-wheel, from the venv made by
tests/parity/make_goldens.sh) calling `model.predict(" ".join(text.split()), k=-1)` per document:
DCLM's normalisation and predict, as our stage does them.
grist: `read_jsonl -> quality_classifier (scores only) -> write_parquet`, `--workers 1`, pinned to
one core with taskset. The stage's own time comes from its stats (`seconds`); the whole run's
wall time (reading JSON Lines and writing Parquet included) gives the streaming segment's
overhead. Best of --repeat runs each.

Usage (from the repository root, after `cargo build --release`):
  python3 tests/bench/classifier_speed.py [--python ~/.cache/grist/fasttext-venv/bin/python]
Prints a JSON object.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from langid_speed import documents  # noqa: E402  (the same 2,429 web_en documents)

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
FIXTURE_MODEL = REPO / "tests/fixtures/parity/quality_hq_cc.bin"

PEER = r"""
import json, sys, time, fasttext
model = fasttext.load_model(sys.argv[1])
texts = [json.loads(l)["text"] for l in open(sys.argv[2])]
best = float("inf")
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    for t in texts:
        model.predict(" ".join(t.split()), k=-1)
    best = min(best, time.perf_counter() - start)
print(best)
"""


def run_grist(grist, work, model, repeat):
    """Best stage seconds and best wall seconds of the scoring pipeline."""
    pipeline = work / "score.yaml"
    pipeline.write_text(
        f"name: score\nworkdir: {work}/run\nstages:\n"
        f"  - {{id: docs, type: read_jsonl, path: {work}/docs.jsonl}}\n"
        f"  - {{id: q, type: quality_classifier, model: {model}, label: hq}}\n"
        f"  - {{id: out, type: write_parquet, path: {work}/out}}\n"
    )
    best_stage, best_wall = float("inf"), float("inf")
    for _ in range(repeat):
        shutil.rmtree(work / "run", ignore_errors=True)
        shutil.rmtree(work / "out", ignore_errors=True)
        start = time.perf_counter()
        subprocess.check_call(
            ["taskset", "-c", "0", str(grist), "-q", "run", str(pipeline), "--workers", "1", "--no-progress"],
            stdout=subprocess.DEVNULL,
        )
        best_wall = min(best_wall, time.perf_counter() - start)
        stats = json.loads((work / "run/stats/q.json").read_text())
        best_stage = min(best_stage, stats["seconds"])
    return best_stage, best_wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=os.path.expanduser("~/.cache/grist/fasttext-venv/bin/python"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    grist = target / "release/grist"
    work = REPO / "tests/bench/work/classifier"
    work.mkdir(parents=True, exist_ok=True)
    texts = list(documents())
    with open(work / "docs.jsonl", "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    mb = sum(len(t.encode()) for t in texts) / 1e6

    big = work / "dim100.bin"
    if not big.exists():
        subprocess.check_call(
            [str(grist), "-q", "classifier", "train",
             "--positive", str(DATA / "wikitext2/valid.txt"), str(DATA / "wikitext2/test.txt"),
             "--negative", str(DATA / "web_en/wceb2026_pages/pages_first800.jsonl.gz"),
             "--text-column", "raw_text", "--dim", "100", "--bucket", "200000", "-o", str(big)],
            stdout=subprocess.DEVNULL,
        )

    results = {"documents": len(texts), "text_mb": round(mb, 2), "models": {}}
    for name, model in [("fixture_dim8", FIXTURE_MODEL), ("dim100", big)]:
        peer = float(subprocess.check_output(
            ["taskset", "-c", "0", args.python, "-c", PEER, str(model), str(work / "docs.jsonl"), str(args.repeat)]
        ))
        stage, wall = run_grist(grist, work, model, args.repeat)
        results["models"][name] = {
            "peer_seconds": round(peer, 3),
            "peer_docs_per_s": round(len(texts) / peer),
            "grist_stage_seconds": round(stage, 3),
            "grist_stage_docs_per_s": round(len(texts) / stage),
            "grist_wall_seconds": round(wall, 3),
            "stage_vs_peer": round(peer / stage, 3),
            "segment_vs_peer": round(peer / wall, 3),
            "segment_overhead_seconds": round(wall - stage, 3),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
