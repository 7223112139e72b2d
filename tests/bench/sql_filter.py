#!/usr/bin/env python3
"""Benchmark: read -> SQL filter -> write over a Parquet corpus, grist beside pyarrow and DuckDB.

The corpus is made from the real text in ../shared/data (C4 sample, web pages, WikiText-2,
tinyshakespeare): documents are re-assembled from real paragraphs with a seeded RNG, so the
text is natural but the corpus can be any size. Shards have a fixed size, so peak memory should
not depend on how many there are.

Both tools do the same work on the same files in the same run, one output file per input file:
  grist:   read_parquet -> sql `SELECT * FROM docs WHERE character_length(text) > 200`
           -> write_parquet (zstd 3)
  pyarrow: ParquetFile.iter_batches -> filter utf8_length(text) > 200 -> ParquetWriter (zstd 3),
           one thread per file, as many threads as grist has workers.
  duckdb:  per file, COPY (SELECT * FROM read_parquet(f) WHERE length(text) > 200) TO out
           (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3), `SET threads` = workers
           (DuckDB parallelises inside each query). `length` counts code points, as
           character_length does; the script checks all three keep the same rows.

Usage (from the repository root, after `cargo build --release`; the Python running it needs
pyarrow and duckdb):
  python3 tests/bench/sql_filter.py --sizes-gb 1 4 --workers 2
Reports MB/s (input Parquet bytes / wall second, and text MB/s) and peak RSS of each process.
"""

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
SHARD_BYTES = 256 << 20  # text bytes per shard


def paragraphs():
    """Real paragraphs from ../shared/data."""
    out = []
    with gzip.open(DATA / "web_en/c4_sample/c4_sample_docs000-799.jsonl.gz", "rt") as f:
        for line in f:
            out += [p for p in json.loads(line)["text"].split("\n") if p.strip()]
    with gzip.open(DATA / "web_en/wceb2026_pages/pages_first800.jsonl.gz", "rt") as f:
        for line in f:
            d = json.loads(line)
            out += [p for p in (d.get("raw_text") or "").split("\n") if p.strip()]
    for name in ["wikitext2/valid.txt", "wikitext2/test.txt"]:
        out += [p for p in (DATA / name).read_text().split("\n") if p.strip()]
    text = (DATA / "tinyshakespeare/input.txt").read_text()
    out += [p for p in text.split("\n\n") if p.strip()]
    return out


def make_corpus(dest: Path, total_parquet_bytes: int, seed: int = 0):
    """Writes snappy Parquet shards of SHARD_BYTES of text until they hold total_parquet_bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest.mkdir(parents=True, exist_ok=True)
    paras = paragraphs()
    rng = random.Random(seed)
    shard, on_disk = 0, 0
    while on_disk < total_parquet_bytes:
        texts, urls, size = [], [], 0
        while size < SHARD_BYTES:
            # Short and long documents alike: 1 to 40 paragraphs.
            n = rng.choice([1, 1, 2, 3, 5, 8, 13, 21, 40])
            doc = "\n".join(rng.choice(paras) for _ in range(n))
            texts.append(doc)
            urls.append(f"https://example.org/{shard}/{len(texts)}")
            size += len(doc.encode())
        table = pa.table({"text": texts, "url": urls, "id": [f"{shard}-{i}" for i in range(len(texts))]})
        path = dest / f"shard-{shard:04d}.parquet"
        pq.write_table(table, path, compression="snappy")
        on_disk += path.stat().st_size
        shard += 1
    return sorted(dest.glob("*.parquet"))


PYARROW_PEER = r"""
import sys, pyarrow.parquet as pq, pyarrow.compute as pc
from concurrent.futures import ThreadPoolExecutor
out_dir, workers, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def one(path):
    src = pq.ParquetFile(path)
    writer = None
    kept = 0
    for batch in src.iter_batches(batch_size=8192):
        mask = pc.greater(pc.utf8_length(batch.column("text")), 200)
        batch = batch.filter(mask)
        if writer is None:
            writer = pq.ParquetWriter(f"{out_dir}/{path.rsplit('/', 1)[1]}", batch.schema,
                                      compression="zstd", compression_level=3)
        writer.write_batch(batch)
        kept += batch.num_rows
    writer.close()
    return kept
with ThreadPoolExecutor(workers) as pool:
    print(sum(pool.map(one, files)))
"""


DUCKDB_PEER = r"""
import sys, duckdb
out_dir, workers, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
con = duckdb.connect()
con.execute(f"SET threads = {workers}")
con.execute("SET preserve_insertion_order = true")
con.execute("SET enable_progress_bar = false")
kept = 0
for path in files:
    name = path.rsplit('/', 1)[1]
    kept += con.execute(
        f"COPY (SELECT * FROM read_parquet('{path}') WHERE length(text) > 200) "
        f"TO '{out_dir}/{name}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)"
    ).fetchone()[0]
print(kept)
"""


def run_measured(cmd, **kw):
    """Runs cmd; returns (seconds, peak RSS in MiB, stdout).

    Peak RSS is the child's VmHWM, polled until it exits. (wait4's ru_maxrss is no good here:
    Linux carries the forking parent's high-water mark over exec, and this script's own RSS is
    large after making a corpus.)"""
    start = time.perf_counter()
    # Output goes to files: a full pipe would stall the child while we poll.
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, **kw)
    peak_kib = 0
    status_file = f"/proc/{proc.pid}/status"
    while proc.poll() is None:
        try:
            with open(status_file) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peak_kib = max(peak_kib, int(line.split()[1]))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
        time.sleep(0.005)
    seconds = time.perf_counter() - start
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read().decode(), err_f.read().decode()
    if proc.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{out}\n{err}")
    return seconds, peak_kib / 1024, out


def bench(size_gb: float, workers: int, work: Path, grist: Path):
    corpus = work / f"corpus-{size_gb}gb"
    files = sorted(corpus.glob("*.parquet"))
    if not files:
        print(f"making a {size_gb} GB corpus in {corpus} ...", file=sys.stderr)
        files = make_corpus(corpus, int(size_gb * (1 << 30)))
    in_bytes = sum(f.stat().st_size for f in files)
    import pyarrow.parquet as pq

    text_bytes = sum(
        pq.ParquetFile(f).metadata.row_group(i).column(0).total_uncompressed_size
        for f in files
        for i in range(pq.ParquetFile(f).metadata.num_row_groups)
    )

    out_g, out_p, out_d = work / "out-grist", work / "out-pyarrow", work / "out-duckdb"
    for d in (out_g, out_p, out_d, work / "run-grist"):
        shutil.rmtree(d, ignore_errors=True)
    out_p.mkdir(parents=True)
    out_d.mkdir(parents=True)
    pipeline = work / "bench.yaml"
    pipeline.write_text(
        "name: bench\n"
        f"workdir: {work / 'run-grist'}\n"
        f"input: {{parquet: {corpus}}}\n"
        "stages:\n"
        "  - {id: f, type: sql, query: 'SELECT * FROM docs WHERE character_length(text) > 200'}\n"
        f"  - {{id: out, type: write_parquet, path: {out_g}}}\n"
    )
    g_sec, g_rss, _ = run_measured([str(grist), "-q", "run", str(pipeline), "--workers", str(workers), "--no-progress"])
    stats = json.loads((work / "run-grist/stats/out.json").read_text())
    p_sec, p_rss, p_out = run_measured([sys.executable, "-c", PYARROW_PEER, str(out_p), str(workers), *map(str, files)])
    kept_p = int(p_out.strip())
    if kept_p != stats["rows_in"]:
        sys.exit(f"kept rows differ: grist {stats['rows_in']}, pyarrow {kept_p}")
    d_sec, d_rss, d_out = run_measured([sys.executable, "-c", DUCKDB_PEER, str(out_d), str(workers), *map(str, files)])
    kept_d = int(d_out.strip())
    if kept_d != stats["rows_in"]:
        sys.exit(f"kept rows differ: grist {stats['rows_in']}, duckdb {kept_d}")
    out_bytes = {name: sum(f.stat().st_size for f in d.glob("*.parquet")) for name, d in
                 [("grist", out_g), ("pyarrow", out_p), ("duckdb", out_d)]}
    mb = in_bytes / 1e6
    return {
        "input_parquet_gb": size_gb,
        "files": len(files),
        "parquet_mb": round(mb, 1),
        "text_mb": round(text_bytes / 1e6, 1),
        "rows_kept": kept_p,
        "workers": workers,
        "grist": {"seconds": round(g_sec, 2), "mb_per_s": round(mb / g_sec, 1), "text_mb_per_s": round(text_bytes / 1e6 / g_sec, 1), "peak_rss_mib": round(g_rss)},
        "pyarrow": {"seconds": round(p_sec, 2), "mb_per_s": round(mb / p_sec, 1), "text_mb_per_s": round(text_bytes / 1e6 / p_sec, 1), "peak_rss_mib": round(p_rss)},
        "duckdb": {"seconds": round(d_sec, 2), "mb_per_s": round(mb / d_sec, 1), "text_mb_per_s": round(text_bytes / 1e6 / d_sec, 1), "peak_rss_mib": round(d_rss)},
        "output_mb": {k: round(v / 1e6, 1) for k, v in out_bytes.items()},
        "speedup": round(p_sec / g_sec, 2),
        "speedup_vs_duckdb": round(d_sec / g_sec, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 4.0], help="Parquet GB (on disk) of each corpus")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--work", type=Path, default=REPO / "tests/bench/work")
    ap.add_argument("--grist", type=Path, default=None, help="grist binary (default: release build)")
    ap.add_argument("--keep", action="store_true", help="keep the corpora for the next run")
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    grist = args.grist or target / "release/grist"
    if not grist.exists():
        sys.exit(f"{grist} not found: run `cargo build --release` first")
    results = []
    for size in args.sizes_gb:
        r = bench(size, args.workers, args.work, grist)
        results.append(r)
        print(json.dumps(r), flush=True)
    print("\n| input | files | Parquet MB | grist MB/s | pyarrow MB/s | DuckDB MB/s | grist ÷ pyarrow | grist ÷ DuckDB | grist peak RSS | pyarrow peak RSS | DuckDB peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['input_parquet_gb']} GB | {r['files']} | {r['parquet_mb']} | {r['grist']['mb_per_s']} | {r['pyarrow']['mb_per_s']} "
            f"| {r['duckdb']['mb_per_s']} | {r['speedup']}× | {r['speedup_vs_duckdb']}× | {r['grist']['peak_rss_mib']} MiB "
            f"| {r['pyarrow']['peak_rss_mib']} MiB | {r['duckdb']['peak_rss_mib']} MiB |"
        )
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
