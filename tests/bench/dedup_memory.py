#!/usr/bin/env python3
"""Benchmark: `minhash_dedup` of one 1 M-document shard inside a memory cgroup.

Corpus: dedup_speed.py's generator, 1,000,000 documents in ONE Parquet shard (5 % planted
near-duplicates). Pipeline: read_parquet -> minhash_dedup -> write_parquet (rejects kept).
Two runs, each phase on its own (`grist run --phase P`, 2 workers) under /usr/bin/time:
  - reference: default memory_budget (1 GiB), no memory limit;
  - capped:    memory_budget --budget (default 128MiB), every phase inside a cgroup v1 memory
               group limited to --cap (default 512 MiB) (/sys/fs/cgroup/memory/grist-bench).
Reports per phase: wall seconds, peak RSS (the largest process, from /usr/bin/time) and, for the
capped run, the group's memory.max_usage_in_bytes (which counts page cache too) and whether the
kernel's OOM killer fired (memory.oom_control). Checks the capped run's output and rejects are
byte-identical to the reference's. Needs root (cgroup) and pyarrow.

Usage (from the repository root, after `cargo build --release`):
  python3 tests/bench/dedup_memory.py [--docs 1000000] [--budget 128MiB] [--cap-mib 512]
Prints a JSON object.
"""

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup_speed import make_corpus  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CGROUP = Path("/sys/fs/cgroup/memory/grist-bench")


def run_phases(grist, work, corpus, budget, cap_bytes):
    pipeline = work / "p.yaml"
    for d in ["run", "out", "rejects"]:
        shutil.rmtree(work / d, ignore_errors=True)
    extra = f", memory_budget: {budget}" if budget else ""
    pipeline.write_text(
        f"name: mem\nworkdir: {work}/run\nstages:\n"
        f"  - {{id: docs, type: read_parquet, path: {corpus}}}\n"
        f"  - {{id: dedup, type: minhash_dedup{extra}}}\n"
        f"  - {{id: out, type: write_parquet, path: {work}/out, rejects: {work}/rejects}}\n"
    )
    plan = subprocess.check_output([str(grist), "-q", "plan", str(pipeline)], text=True)
    phases = re.findall(r"^phase `([^`]+)`", plan, re.M)
    result = {}
    for phase in phases:
        cmd = ["/usr/bin/time", "-f", "%e %M", str(grist), "-q", "run", str(pipeline), "--phase", phase, "-j", "2"]
        if cap_bytes:
            CGROUP.mkdir(exist_ok=True)
            (CGROUP / "memory.limit_in_bytes").write_text(str(cap_bytes))
            (CGROUP / "memory.max_usage_in_bytes").write_text("0")
            oom_before = int(re.search(r"oom_kill (\d+)", (CGROUP / "memory.oom_control").read_text()).group(1))
            cmd = ["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs && exec "$@"', "sh"] + cmd
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall, rss_kb = done.stderr.strip().splitlines()[-1].split()[-2:]
        row = {"exit": done.returncode, "wall_s": float(wall), "peak_rss_mib": round(int(rss_kb) / 1024, 1)}
        if cap_bytes:
            row["cgroup_max_usage_mib"] = round(int((CGROUP / "memory.max_usage_in_bytes").read_text()) / 2**20, 1)
            oom_after = int(re.search(r"oom_kill (\d+)", (CGROUP / "memory.oom_control").read_text()).group(1))
            row["oom_kills"] = oom_after - oom_before
        if done.returncode != 0:
            row["stderr"] = done.stderr[-2000:]
        result[phase] = row
        if done.returncode != 0:
            break
    stats = json.loads((work / "run/stats/dedup.json").read_text()) if (work / "run/stats/dedup.json").exists() else {}
    return result, stats


def same_tree(a, b):
    files_a = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    files_b = sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a), len(files_a)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--budget", default="128MiB")
    ap.add_argument("--cap-mib", type=int, default=512)
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    grist = target / "release/grist"
    base = REPO / "tests/bench/work/membudget"
    corpus = base / "corpus"
    if not (corpus / "part-00000.parquet").exists():
        make_corpus(corpus, args.docs, args.docs, 0.05)
    ref_dir, cap_dir = base / "reference", base / "capped"
    ref_dir.mkdir(parents=True, exist_ok=True)
    cap_dir.mkdir(parents=True, exist_ok=True)
    reference, ref_stats = run_phases(grist, ref_dir, corpus, None, None)
    capped, cap_stats = run_phases(grist, cap_dir, corpus, args.budget, args.cap_mib << 20)
    out_same, n_out = same_tree(ref_dir / "out", cap_dir / "out")
    rej_same, n_rej = same_tree(ref_dir / "rejects", cap_dir / "rejects")
    print(json.dumps({
        "documents": ref_stats.get("rows_in"),
        "removed": ref_stats.get("rejected", {}).get("near_duplicate"),
        "reference_default_budget_no_cap": reference,
        f"budget_{args.budget}_cap_{args.cap_mib}MiB": capped,
        "signature_runs_spilled": cap_stats.get("metrics", {}).get("signature_runs_spilled"),
        "output_identical": out_same and n_out > 0,
        "rejects_identical": rej_same and n_rej > 0,
    }, indent=2))


if __name__ == "__main__":
    main()
