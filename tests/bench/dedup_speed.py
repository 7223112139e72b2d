#!/usr/bin/env python3
"""Benchmark: grist `minhash_dedup` at scale, and its signature phase vs datatrove's.

Corpus: --docs documents (default 1,000,000) built from real text: sentences of the C4 sample,
WikiText-2 and the web pages' main text in ../shared/data, 4-12 per document (~1 KB), drawn with
a seeded RNG, written as Parquet shards of --shard-docs documents. A share --dup-rate of the
documents are injected near-duplicates: a copy of an earlier document with a share of its words
replaced (edit rates 1%, 3%, 5%, 10%, in turn); their ids record their source
(`dup<i>-of-<j>-e<rate>`).
grist: `read_parquet -> minhash_dedup (FineWeb defaults) -> write_parquet`, each phase run on its
own (`--phase`, all cores) under /usr/bin/time for wall time and peak RSS; docs/s per core from
the phase's task seconds in the stats (`*_seconds` metrics: time summed over tasks). Recall: an
injected copy is found when it and its source are not both kept. The same is run on a corpus a
quarter the size (same shard size) to show which phases' memory does not grow with the corpus.
Peer: datatrove 0.10.1's `MinhashDedupSignature` (one task, one core, `taskset -c 0`) on the first
--peer-docs documents, against grist's `signatures` phase on the same documents, one core.

Usage (from the repository root, after `cargo build --release`; the peer needs the parity venv
made by tests/parity/make_goldens.sh):
  python3 tests/bench/dedup_speed.py [--docs 1000000] [--peer-docs 10000]
Needs pyarrow in the Python running it. Prints a JSON object.
"""

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
EDIT_RATES = [0.01, 0.03, 0.05, 0.10]

PEER = r"""
import json, sys, time
from datatrove.data import Document
from datatrove.pipeline.dedup.minhash import MinhashDedupSignature, MinhashConfig
from datatrove.utils.typeshelper import Languages
docs = [Document(text=json.loads(l)["text"], id=json.loads(l)["id"]) for l in open(sys.argv[1])]
step = MinhashDedupSignature(output_folder=sys.argv[2], config=MinhashConfig(), language=Languages.english)
start = time.perf_counter()
step.run(iter(docs), rank=0, world_size=1)
print(time.perf_counter() - start)
"""


def sentences():
    pool = []
    splitter = re.compile(r"(?<=[.!?])\s+")

    def add(text):
        for s in splitter.split(" ".join(text.split())):
            # Long "sentences" (lists, menus without punctuation) would dominate a document's
            # shingles and make unplanted near-duplicates of the documents that draw them.
            if 5 <= len(s.split()) <= 60:
                pool.append(s)

    with gzip.open(DATA / "web_en/c4_sample/c4_sample_docs000-799.jsonl.gz", "rt") as f:
        for line in f:
            add(json.loads(line)["text"])
    with gzip.open(DATA / "web_en/wceb2026_pages/pages_first800.jsonl.gz", "rt") as f:
        for line in f:
            add(json.loads(line).get("trafilatura_text") or "")
    for name in ["valid.txt", "test.txt"]:
        for para in (DATA / "wikitext2" / name).read_text().split("\n \n"):
            if not para.strip().startswith("="):
                add(para)
    return pool


def make_corpus(out, n_docs, shard_docs, dup_rate, seed=20261122):
    """Writes the corpus; returns {copy id: source id} for the injected duplicates."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = random.Random(seed)
    pool = sentences()
    vocab = sorted({w for s in pool[:20000] for w in s.split()})
    texts, ids, injected = [], [], {}
    shard = 0

    def flush():
        nonlocal texts, ids, shard
        if ids:
            pq.write_table(pa.table({"id": ids, "text": texts}), out / f"part-{shard:05d}.parquet")
            shard += 1
            texts, ids = [], []

    all_texts, all_texts_ids = [], []
    for i in range(n_docs):
        if i > 10 and rng.random() < dup_rate:
            j = rng.randrange(i)
            rate = EDIT_RATES[len(injected) % len(EDIT_RATES)]
            words = all_texts[j].split()
            for k in range(len(words)):
                if rng.random() < rate:
                    words[k] = rng.choice(vocab)
            text = " ".join(words)
            src = all_texts_ids[j]
            doc_id = f"dup{i}-of-{src}-e{rate}"
            injected[doc_id] = src
        else:
            text = " ".join(rng.choice(pool) for _ in range(rng.randint(4, 12)))
            doc_id = f"d{i}"
        all_texts.append(text)
        all_texts_ids.append(doc_id)
        texts.append(text)
        ids.append(doc_id)
        if len(ids) == shard_docs:
            flush()
    flush()
    return injected, sum(len(t.encode()) for t in all_texts), all_texts_ids, all_texts


def run_phases(grist, work, corpus, workers):
    """Runs each phase separately; returns per-phase wall seconds, peak RSS (MB), and the stats."""
    pipeline = work / "dedup.yaml"
    shutil.rmtree(work / "run", ignore_errors=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    shutil.rmtree(work / "rejects", ignore_errors=True)
    pipeline.write_text(
        f"name: dedup\nworkdir: {work}/run\nstages:\n"
        f"  - {{id: docs, type: read_parquet, path: {corpus}}}\n"
        f"  - {{id: dedup, type: minhash_dedup}}\n"
        f"  - {{id: out, type: write_parquet, path: {work}/out, rejects: {work}/rejects}}\n"
    )
    plan = subprocess.check_output([str(grist), "-q", "plan", str(pipeline)], text=True)
    phases = re.findall(r"^phase `([^`]+)`", plan, re.M)
    result = {}
    for phase in phases:
        timed = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", str(grist), "-q", "run", str(pipeline), "--phase", phase,
             "--workers", str(workers), "--no-progress"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True,
        )
        wall, rss_kb = timed.stderr.strip().splitlines()[-1].split()
        result[phase] = {"wall_s": float(wall), "peak_rss_mb": round(int(rss_kb) / 1024, 1)}
    stats = json.loads((work / "run/stats/dedup.json").read_text())
    return result, stats


def recall(work, injected):
    removed = set()
    for f in sorted((work / "rejects/dedup").glob("*.parquet")):
        removed.update(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    by_rate = {}
    for copy, src in injected.items():
        rate = copy.rsplit("-e", 1)[1]
        found = copy in removed or src in removed
        n, k = by_rate.get(rate, (0, 0))
        by_rate[rate] = (n + 1, k + found)
    involved = set(injected) | set(injected.values())
    return {
        "injected": len(injected),
        "found": sum(k for _, k in by_rate.values()),
        "recall": round(sum(k for _, k in by_rate.values()) / max(1, len(injected)), 4),
        "recall_by_edit_rate": {r: round(k / n, 4) for r, (n, k) in sorted(by_rate.items())},
        # A share e of words replaced leaves about (1-e)^5 of the 5-word shingles, so Jaccard
        # q / (2 - q), found with probability 1 - (1 - J^8)^14.
        "expected_recall_by_edit_rate": {
            r: round(1 - (1 - ((1 - float(r)) ** 5 / (2 - (1 - float(r)) ** 5)) ** 8) ** 14, 4)
            for r in sorted(by_rate)
        },
        "removed": len(removed),
        "removed_not_injected": len(removed - involved),
    }


def scale_run(grist, work, n_docs, shard_docs, dup_rate, workers):
    corpus = work / f"corpus-{n_docs}"
    start = time.perf_counter()
    injected, text_bytes, _, _ = make_corpus(corpus, n_docs, shard_docs, dup_rate)
    made = time.perf_counter() - start
    phases, stats = run_phases(grist, work, corpus, workers)
    m = stats["metrics"]
    per_core = {
        "signatures": n_docs / m["signatures_seconds"],
        "buckets": n_docs / m["buckets_seconds"],
        "clusters": n_docs / m["clusters_seconds"],
    }
    return {
        "docs": n_docs,
        "text_mb": round(text_bytes / 1e6, 1),
        "shards": (n_docs + shard_docs - 1) // shard_docs,
        "corpus_seconds": round(made, 1),
        "phases": phases,
        "dedup_wall_s": round(sum(p["wall_s"] for p in phases.values()), 1),
        "docs_per_s_per_core": {k: round(v) for k, v in per_core.items()},
        "removed_share": m["removed_share"],
        "clusters": m["clusters"],
        "candidate_pairs": m["candidate_pairs"],
        **recall(work, injected),
    }


def peer_run(grist, python, work, n_docs):
    """datatrove's signature stage vs grist's signatures phase on the same documents, one core."""
    corpus = work / f"corpus-peer-{n_docs}"
    _, text_bytes, ids, texts = make_corpus(corpus, n_docs, n_docs, 0.0, seed=7)
    docs = work / "peer-docs.jsonl"
    with open(docs, "w") as f:
        for i, t in zip(ids, texts):
            f.write(json.dumps({"id": i, "text": t}) + "\n")
    shutil.rmtree(work / "peer-sigs", ignore_errors=True)
    peer = float(subprocess.check_output(
        ["taskset", "-c", "0", python, "-c", PEER, str(docs), str(work / "peer-sigs")], text=True
    ).strip().splitlines()[-1])
    sub = work / "peer-grist"
    sub.mkdir(exist_ok=True)
    _, stats = run_phases(grist, sub, corpus, 1)
    ours = stats["metrics"]["signatures_seconds"]
    mb = text_bytes / 1e6
    return {
        "docs": n_docs,
        "text_mb": round(mb, 2),
        "datatrove_s": round(peer, 2),
        "datatrove_mb_per_s": round(mb / peer, 3),
        "grist_s": round(ours, 3),
        "grist_mb_per_s": round(mb / ours, 2),
        "grist_vs_datatrove": round(peer / ours, 1),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--shard-docs", type=int, default=62_500)
    ap.add_argument("--dup-rate", type=float, default=0.05)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--peer-docs", type=int, default=10_000)
    ap.add_argument("--python", default=os.path.expanduser("~/.cache/grist/parity-venv/bin/python"))
    ap.add_argument("--skip-peer", action="store_true")
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    grist = target / "release/grist"
    work = REPO / "tests/bench/work/dedup"
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    if not args.skip_peer:
        results["signatures_vs_datatrove"] = peer_run(grist, args.python, work, args.peer_docs)
    for n in [args.docs // 4, args.docs]:
        results[f"scale_{n}"] = scale_run(grist, work, n, args.shard_docs, args.dup_rate, args.workers)
        shutil.rmtree(work / f"corpus-{n}", ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
