#!/usr/bin/env python3
"""Benchmark: grist's heuristic filters vs datatrove 0.10.1's, one core each, same documents.

Documents: the first N non-empty texts of ../shared/data/web_en in the parity goldens' order
(wceb2026 raw and trafilatura text, C4 sample, dolma fixtures); all 2,429 by default (25 MB).
Peer: tests/bench/datatrove_filters_speed.py in the parity venv (datatrove 0.10.1, spaCy 3.8.18),
each filter's `filter(doc)` timed alone, and the four as FineWeb's cascade.
grist: one `read_jsonl -> <filter> -> write_parquet` run per filter, `--workers 1`, pinned to
one core with taskset; the filter stage's own time comes from its stats (`seconds`), and the
cascade `read_jsonl -> gopher_repetition -> gopher_quality -> c4_quality(FineWeb setting) ->
fineweb_quality -> write_parquet` is reported both as the four stages' time and as the whole
run's wall time (reading JSON Lines and writing Parquet included). Best of --repeat runs.

Usage (from the repository root, after `cargo build --release` and tests/parity/make_goldens.sh):
  ~/.cache/grist/parity-venv/bin/python tests/bench/filters_speed.py [--limit N] [--repeat 3]
(it imports the parity scripts, which need numpy)
Prints a JSON object; the peer's run takes about 2 minutes per MB of text.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests/parity"))
os.environ.setdefault("GRIST_PARITY_DATA", str(REPO.parent / "shared" / "data"))

from datatrove_goldens import iter_documents  # noqa: E402

FILTERS = {
    "gopher_repetition": "{type: gopher_repetition}",
    "gopher_quality": "{type: gopher_quality}",
    "c4_quality": "{type: c4_quality}",
    "c4_quality_fineweb": "{type: c4_quality, filter_no_terminal_punct: false}",
    "fineweb_quality": "{type: fineweb_quality}",
}
CASCADE = ["gopher_repetition", "gopher_quality", "c4_quality_fineweb", "fineweb_quality"]


def run_grist(grist, work, name, stage_specs, repeat):
    """Best stage seconds (summed over the stages) and best wall seconds."""
    pipeline = work / f"{name}.yaml"
    stages = "".join(
        f"  - {{id: s{i}, {spec[1:-1]}}}\n" for i, spec in enumerate(stage_specs)
    )
    pipeline.write_text(
        f"name: {name}\nworkdir: {work}/run-{name}\ninput: {{jsonl: {work}/docs.jsonl}}\nstages:\n"
        f"{stages}  - {{id: out, type: write_parquet, path: {work}/out-{name}}}\n"
    )
    best_stage, best_wall = float("inf"), float("inf")
    for _ in range(repeat):
        shutil.rmtree(work / f"run-{name}", ignore_errors=True)
        shutil.rmtree(work / f"out-{name}", ignore_errors=True)
        start = time.perf_counter()
        subprocess.check_call(
            ["taskset", "-c", "0", str(grist), "-q", "run", str(pipeline), "--workers", "1", "--no-progress"],
            stdout=subprocess.DEVNULL,
        )
        best_wall = min(best_wall, time.perf_counter() - start)
        stats = [json.loads((work / f"run-{name}/stats/s{i}.json").read_text()) for i in range(len(stage_specs))]
        best_stage = min(best_stage, sum(s["seconds"] for s in stats))
    kept = stats[-1]["rows_out"] if "rows_out" in stats[-1] else None
    return best_stage, best_wall, kept


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=os.path.expanduser("~/.cache/grist/parity-venv/bin/python"))
    ap.add_argument("--limit", type=int, default=0, help="first N documents (0: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--peer-json", help="reuse a datatrove_filters_speed.py result instead of re-running it")
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    grist = target / "release/grist"
    work = REPO / "tests/bench/work/filters"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    texts = [t for _s, _f, _r, _field, t in iter_documents() if t]
    if args.limit:
        texts = texts[: args.limit]
    with open(work / "docs.jsonl", "w") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    mb = sum(len(t.encode()) for t in texts) / 1e6

    if args.peer_json:
        peer = json.loads(Path(args.peer_json).read_text())
    else:
        cmd = ["taskset", "-c", "0", args.python, str(REPO / "tests/bench/datatrove_filters_speed.py")]
        if args.limit:
            cmd += ["--limit", str(args.limit)]
        peer = json.loads(subprocess.check_output(cmd))
    assert peer["docs"] == len(texts), (peer["docs"], len(texts))

    rows = {}
    for name, spec in FILTERS.items():
        stage, wall, _ = run_grist(grist, work, name, [spec], args.repeat)
        dt = peer["filters"][name]["seconds"]
        rows[name] = {
            "datatrove_mb_per_s": round(mb / dt, 3),
            "grist_stage_mb_per_s": round(mb / stage, 2),
            "grist_stage_vs_datatrove": round(dt / stage, 1),
        }
    stage, wall, _ = run_grist(grist, work, "cascade", [FILTERS[n] for n in CASCADE], args.repeat)
    dt = peer["all4_pipeline"]["seconds"]
    rows["cascade_of_four"] = {
        "datatrove_mb_per_s": round(mb / dt, 3),
        "grist_stage_mb_per_s": round(mb / stage, 2),
        "grist_stage_vs_datatrove": round(dt / stage, 1),
        "grist_whole_run_mb_per_s": round(mb / wall, 2),
        "grist_whole_run_vs_datatrove": round(dt / wall, 1),
    }
    print(json.dumps({"documents": len(texts), "mb": round(mb, 2), "results": rows, "peer_env": peer.get("env")}, indent=1))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
