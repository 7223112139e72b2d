#!/usr/bin/env python3
"""Benchmark: grist `langid` vs Python fastText predict, one core each, same documents.

Documents: every non-empty text of ../shared/data/web_en (wceb2026 raw and trafilatura text, C4
sample, dolma fixtures): the 2,429 documents of the parity goldens, 25 MB.
Peer: Python fastText (`fasttext-predict`, the wheel datatrove's LanguageFilter runs on) calling
`model.predict(text.replace("\\n", " "), k=-1)` on each document, as datatrove does.
grist: `read_jsonl -> langid (label_only) -> write_parquet` with `--workers 1`; the langid
stage's own time comes from its stats, and the whole run's wall time is reported too.

Usage (from the repository root, after `cargo build --release`):
  python3 tests/bench/langid_speed.py [--python PATH_TO_PYTHON_WITH_fasttext]
The default Python is the parity venv made by tests/parity/make_goldens.sh.
"""

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
MODEL = REPO / "filters/models/lid.176.ftz"

PEER = r"""
import json, sys, time, fasttext
model = fasttext.load_model(sys.argv[1])
texts = [json.loads(l)["text"] for l in open(sys.argv[2])]
start = time.perf_counter()
for t in texts:
    model.predict(t.replace("\n", " "), k=-1)
print(time.perf_counter() - start)
"""


def documents():
    sources = [
        ("web_en/wceb2026_pages/pages_first800.jsonl.gz", ["raw_text", "trafilatura_text"]),
        ("web_en/c4_sample/c4_sample_docs000-799.jsonl.gz", ["text"]),
        ("web_en/dolma_fixtures/multiple_files__cc_en_head-0091.jsonl.gz", ["text"]),
        ("web_en/dolma_fixtures/multiple_files__cc_en_head-0174.jsonl.gz", ["text"]),
        ("web_en/dolma_fixtures/provided__documents__000.json.gz", ["text"]),
    ]
    for path, fields in sources:
        with gzip.open(DATA / path, "rt") as f:
            for line in f:
                d = json.loads(line)
                for field in fields:
                    if d.get(field):
                        yield d[field]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=os.path.expanduser("~/.cache/grist/parity-venv/bin/python"))
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs each")
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    grist = target / "release/grist"
    work = REPO / "tests/bench/work/langid"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    docs = work / "docs.jsonl"
    texts = list(documents())
    with open(docs, "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    mb = sum(len(t.encode()) for t in texts) / 1e6

    peer = min(float(subprocess.check_output(["taskset", "-c", "0", args.python, "-c", PEER, str(MODEL), str(docs)])) for _ in range(args.repeat))

    pipeline = work / "p.yaml"
    pipeline.write_text(
        f"name: langid-bench\nworkdir: {work}/run\ninput: {{jsonl: {docs}}}\nstages:\n"
        f"  - {{id: lang, type: langid, model: {MODEL}, label_only: true}}\n"
        f"  - {{id: out, type: write_parquet, path: {work}/out}}\n"
    )
    best_stage, best_wall = float("inf"), float("inf")
    for _ in range(args.repeat):
        shutil.rmtree(work / "run", ignore_errors=True)
        start = time.perf_counter()
        subprocess.check_call(["taskset", "-c", "0", str(grist), "-q", "run", str(pipeline), "--workers", "1", "--no-progress"], stdout=subprocess.DEVNULL)
        best_wall = min(best_wall, time.perf_counter() - start)
        best_stage = min(best_stage, json.loads((work / "run/stats/lang.json").read_text())["seconds"])
    result = {
        "documents": len(texts),
        "mb": round(mb, 1),
        "python_fasttext": {"seconds": round(peer, 3), "docs_per_s": round(len(texts) / peer), "mb_per_s": round(mb / peer, 2)},
        "grist_langid_stage": {"seconds": round(best_stage, 3), "docs_per_s": round(len(texts) / best_stage), "mb_per_s": round(mb / best_stage, 2)},
        "grist_whole_run": {"seconds": round(best_wall, 3), "mb_per_s": round(mb / best_wall, 2)},
        "stage_speed_vs_python": round(peer / best_stage, 3),
    }
    print(json.dumps(result, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
