#!/usr/bin/env python3
"""Benchmark: the HTML report of a 1 M-document run — its size and its load time in Chromium.

Corpus: tests/bench/dedup_speed.py's (1,000,000 documents from the shared sentences, 5 % planted
near-duplicates, shards of 62,500). Pipeline: read_parquet -> gopher_quality -> fineweb_quality ->
minhash_dedup -> write_parquet with rejects, run with the release binary on all cores; then
`grist report`, then tests/report/browser_check.sh renders it at 1280 and 800 px in headless
Chromium (load time, layout checks, screenshots in tests/bench/work/report/shots).
The issue's bounds: the file under 5 MB, the page loaded in under 2 s.

Usage (from the repository root, after `cargo build --release`):
  python3 tests/bench/report_render.py [--docs 1000000]
Needs pyarrow in the Python running it. Prints a JSON object.
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
from dedup_speed import make_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--shard-docs", type=int, default=62_500)
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    grist = target / "release/grist"
    work = REPO / "tests/bench/work/report"
    corpus = work / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    if not (corpus / "part-00000.parquet").exists():
        make_corpus(corpus, args.docs, args.shard_docs, 0.05)
    for d in ["run", "out", "rejects", "shots"]:
        shutil.rmtree(work / d, ignore_errors=True)
    pipeline = work / "report.yaml"
    pipeline.write_text(
        f"name: report-1m\nworkdir: {work}/run\nstages:\n"
        f"  - {{id: docs, type: read_parquet, path: {corpus}}}\n"
        f"  - {{id: qual, type: gopher_quality}}\n"
        f"  - {{id: fw, type: fineweb_quality}}\n"
        f"  - {{id: dedup, type: minhash_dedup}}\n"
        f"  - {{id: out, type: write_parquet, path: {work}/out, rejects: {work}/rejects}}\n"
    )
    start = time.perf_counter()
    subprocess.run([str(grist), "-q", "run", str(pipeline)], check=True)
    run_s = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([str(grist), "-q", "report", str(work / "run")], check=True)
    report_s = time.perf_counter() - start
    report = work / "run/report.html"
    check = subprocess.run(
        ["bash", str(REPO / "tests/report/browser_check.sh"), str(work / "shots"), str(report)],
        capture_output=True, text=True)
    renders = [json.loads(l) for l in check.stdout.splitlines() if l.startswith("{")]
    stats = json.loads((work / "run/stats/docs.json").read_text())
    print(json.dumps({
        "documents": stats["rows_in"],
        "run_s": round(run_s, 1),
        "grist_report_s": round(report_s, 3),
        "report_bytes": report.stat().st_size,
        "renders": [{k: r["result"][k] for k in ["width", "load_ms", "height", "charts", "overflows",
                                                  "charts_without_size", "chart_labels_cut",
                                                  "smallest_label_px"]} for r in renders],
        "browser_check_ok": check.returncode == 0,
        "browser_check_errors": check.stderr.strip(),
    }, indent=2))
    sys.exit(check.returncode)


if __name__ == "__main__":
    main()
