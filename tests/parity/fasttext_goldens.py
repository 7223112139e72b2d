#!/usr/bin/env python3
"""Golden predictions of a small fastText supervised quality classifier ("hq" vs "cc").

Run through tests/parity/make_goldens.sh, which builds the pinned venv
(~/.cache/grist/fasttext-venv, the OFFICIAL fastText binding from `fasttext-numpy2-wheel`, not
the predict-only `fasttext-predict` of the parity venv). Direct use:

    python tests/parity/fasttext_goldens.py [--model PATH] [--out PATH] [--versions PATH]
                                            [--keep-train-dir DIR] [--no-determinism-check]

What it does, deterministically:

1. Builds a labelled set from ../shared/data ($GRIST_PARITY_DATA):
   `__label__hq`: WikiText-2 paragraphs (valid.txt, then test.txt: every non-empty line that is
   not a ` = Heading = ` line) and the non-empty `trafilatura_text` of the wceb2026 pages;
   `__label__cc`: the non-empty `raw_text` of the same pages.
   Every text is normalised with `" ".join(text.split())`; texts empty after that are dropped.
2. Shuffles the examples with `random.Random(0)`, holds out the first 10% (rounded down) and
   trains `fasttext.train_supervised` on the other 90% with TRAIN_PARAMS (thread=1, seed=0), in a
   child process with glibc's mmap threshold pinned (see MALLOC_ENV: fastText leaves 9/10 of the
   input matrix uninitialised when thread=1). The model is trained twice, the second time after
   dirtying the heap, and the two files must be byte-identical. Prints the model's `test()`
   N / P@1 / R@1 on the holdout.
3. Predicts `model.predict(normalised_text, k=-1)` on every web_en document, in the order and
   with the ids of datatrove_goldens.py (its `iter_documents()` is imported), and writes
   tests/fixtures/parity/fasttext_quality.jsonl.gz.
4. Refreshes the fastText block at the end of tests/fixtures/parity/VERSIONS.txt.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata as importlib_metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# datatrove_goldens has no side effects on import (main() is guarded); it needs only numpy.
from datatrove_goldens import DATA, iter_documents, sha256_file  # noqa: E402

import fasttext  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "parity")
DEFAULT_MODEL = os.path.join(FIXTURES, "quality_hq_cc.bin")
DEFAULT_OUT = os.path.join(FIXTURES, "fasttext_quality.jsonl.gz")
DEFAULT_VERSIONS = os.path.join(FIXTURES, "VERSIONS.txt")
WIKITEXT = [os.path.join(DATA, "wikitext2", n) for n in ("valid.txt", "test.txt")]
PAGES = os.path.join(DATA, "web_en", "wceb2026_pages", "pages_first800.jsonl.gz")

LABEL_HQ = "__label__hq"
LABEL_CC = "__label__cc"
SPLIT_SEED = 0
HOLDOUT_FRACTION = 10  # 1/10 of the shuffled examples
MAX_MODEL_BYTES = 1_600_000

# Everything passed to train_supervised besides `input`. thread=1 + seed make training
# deterministic (one thread reads the file from offset 0 and uses minstd_rand(seed)).
TRAIN_PARAMS = dict(
    lr=0.1,
    dim=8,
    ws=5,
    epoch=5,
    # The brief said minCount=3; that gives 66,436 words and a 3.9 MB file. minCount=20 keeps
    # 16,023 words and 1.42 MB (holdout P@1 0.904 -> 0.909).
    minCount=20,
    minCountLabel=0,
    minn=0,
    maxn=0,
    neg=5,
    wordNgrams=2,
    loss="softmax",
    bucket=20000,
    thread=1,
    lrUpdateRate=100,
    t=1e-4,
    label="__label__",
    seed=0,
    verbose=1,
)

VERSIONS_BEGIN = "# --- fastText quality classifier (tests/parity/fasttext_goldens.py) ---"
VERSIONS_END = "# --- end fastText quality classifier ---"


def normalise(text: str) -> str:
    """Python str.split(): any Unicode whitespace run (\\n, \\t, \\x0b, \\x0c, \\r, \\x1c-\\x1f,
    \\x85, \\xa0, \\u1680, \\u2000-\\u200a, \\u2028, \\u2029, \\u202f, \\u205f, \\u3000) becomes one
    space; leading/trailing whitespace is dropped."""
    return " ".join(text.split())


def is_wikitext_heading(stripped: str) -> bool:
    # ` = Title = `, ` = = Section = = `, ... (all 1,326 such lines in valid+test start and end with "=")
    return stripped.startswith("=") and stripped.endswith("=")


def iter_jsonl_gz(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def labelled_examples():
    """[(label, normalised text)] in a fixed order, and per-source counts."""
    ex = []
    counts = {}

    def add(label, src, text):
        t = normalise(text or "")
        if not t:
            counts[src + ":dropped_empty"] = counts.get(src + ":dropped_empty", 0) + 1
            return
        ex.append((label, t))
        counts[src] = counts.get(src, 0) + 1

    for path in WIKITEXT:
        with open(path, encoding="utf-8") as f:
            for line in f:
                s = line.strip()
                if not s or is_wikitext_heading(s):
                    continue
                add(LABEL_HQ, "wikitext2/" + os.path.basename(path), line)
    pages = list(iter_jsonl_gz(PAGES))
    for p in pages:
        add(LABEL_HQ, "wceb2026:trafilatura_text", p.get("trafilatura_text"))
    for p in pages:
        add(LABEL_CC, "wceb2026:raw_text", p.get("raw_text"))
    return ex, counts


def write_lines(path, examples):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for label, text in examples:
            f.write(f"{label} {text}\n")


# fastText master (what fasttext-numpy2-wheel builds) keeps matrices in an `intgemm::AlignedVector`
# from posix_memalign, which is NOT zeroed, and `DenseMatrix::uniform(a, thread, seed)` only fills
# `thread` tenths of the input matrix (block i = elements [i*m*n/10, (i+1)*m*n/10)). With thread=1
# the other 9/10 keep whatever the allocator hands back: zeros when the block is a fresh mmap, heap
# garbage (e.g. 1.8e37, then "Encountered NaN.") when malloc recycles memory. So training runs in a
# child process with glibc's mmap threshold pinned at 64 KiB, which makes every matrix a fresh,
# zero-filled mmap (a pinned threshold also stops glibc from raising it dynamically). The rows
# behind the first tenth then start at 0, as with the zero-filled std::vector of older fastText.
MALLOC_ENV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536", "MALLOC_MMAP_THRESHOLD_": "65536"}


def train_child(path_in, path_model, dirty_heap):
    """Runs in the child process (--train-only)."""
    if dirty_heap:
        # Leave non-zero freed memory behind, as the parent's data loading does. Without the pinned
        # threshold, freeing the 24 MiB mmap raises glibc's threshold, the 4 MiB blocks then come
        # from the heap, and fastText's matrices would reuse them.
        big = bytearray(b"\xff") * (24 << 20)
        del big
        junk = [bytearray(b"\x7f") * (4 << 20) for _ in range(8)]
        del junk
    fasttext.train_supervised(input=path_in, **TRAIN_PARAMS).save_model(path_model)
    # Probe: lr=0 leaves the initial matrix unchanged; everything after the first tenth must be 0.
    probe = fasttext.train_supervised(input=path_in, **{**TRAIN_PARAMS, "lr": 0.0, "epoch": 1, "verbose": 0})
    a = probe.get_input_matrix().reshape(-1)
    first = a.size // 10
    if not (a[first:] == 0).all() or not (a[:first] != 0).any():
        raise SystemExit("input matrix is not zero beyond the seeded tenth: allocator state leaks into training")


def train(path_in, path_model, dirty_heap=False):
    env = dict(os.environ)
    env.update(MALLOC_ENV)
    cmd = [sys.executable, os.path.abspath(__file__), "--train-only", path_in, path_model]
    if dirty_heap:
        cmd.append("--dirty-heap")
    subprocess.run(cmd, env=env, check=True)


def ver(p):
    try:
        return importlib_metadata.version(p)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def binding_dist():
    for d in ("fasttext-numpy2-wheel", "fasttext-wheel", "fasttext"):
        v = ver(d)
        if v != "not installed":
            return f"{d}=={v}"
    return "unknown"


def refresh_versions(path, lines):
    old = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read().splitlines()
    kept, skip = [], False
    for line in old:
        if line == VERSIONS_BEGIN:
            skip = True
            continue
        if skip:
            if line == VERSIONS_END:
                skip = False
            continue
        kept.append(line)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in kept + [VERSIONS_BEGIN] + lines + [VERSIONS_END]:
            f.write(line + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--versions", default=DEFAULT_VERSIONS, help="'' to skip")
    ap.add_argument("--keep-train-dir", default="", help="write train/holdout files here and keep them")
    ap.add_argument("--no-determinism-check", action="store_true", help="train once, not twice")
    args = ap.parse_args()
    assert hasattr(fasttext, "train_supervised"), "need the full fastText binding, not fasttext-predict"

    examples, src_counts = labelled_examples()
    rng = random.Random(SPLIT_SEED)
    order = list(range(len(examples)))
    rng.shuffle(order)
    shuffled = [examples[i] for i in order]
    n_hold = len(shuffled) // HOLDOUT_FRACTION
    holdout, trainset = shuffled[:n_hold], shuffled[n_hold:]

    def label_counts(xs):
        return {lab: sum(1 for l, _ in xs if l == lab) for lab in (LABEL_HQ, LABEL_CC)}

    print(f"examples by source: {json.dumps(src_counts, sort_keys=True)}", flush=True)
    print(f"train {len(trainset)} {label_counts(trainset)}; holdout {len(holdout)} {label_counts(holdout)}", flush=True)

    work = args.keep_train_dir or tempfile.mkdtemp(prefix="grist_ft_")
    os.makedirs(work, exist_ok=True)
    try:
        train_txt = os.path.join(work, "train.txt")
        hold_txt = os.path.join(work, "holdout.txt")
        write_lines(train_txt, trainset)
        write_lines(hold_txt, holdout)
        train_sha = sha256_file(train_txt)

        os.makedirs(os.path.dirname(os.path.abspath(args.model)), exist_ok=True)
        train(train_txt, args.model)
        model_sha = sha256_file(args.model)
        model_bytes = os.path.getsize(args.model)
        determinism = "not checked"
        if not args.no_determinism_check:
            # Second run in a child whose heap was dirtied first: same bytes or fail.
            second = os.path.join(work, "second.bin")
            train(train_txt, second, dirty_heap=True)
            sha2 = sha256_file(second)
            if sha2 != model_sha:
                raise SystemExit(f"training is not deterministic: {model_sha} != {sha2}")
            determinism = "trained twice, identical sha256"
        model = fasttext.load_model(args.model)
        n_hold_test, p1, r1 = model.test(hold_txt, k=1)
    finally:
        if not args.keep_train_dir:
            shutil.rmtree(work, ignore_errors=True)

    margs = model.f.getArgs()
    nwords, nlabels = len(model.words), len(model.labels)
    print(
        f"model {args.model}: {model_bytes} bytes, sha256 {model_sha}; dim={margs.dim} bucket={margs.bucket} "
        f"wordNgrams={margs.wordNgrams} minCount={margs.minCount} nwords={nwords} labels={list(model.labels)} "
        f"({determinism})",
        flush=True,
    )
    if model_bytes > MAX_MODEL_BYTES:
        raise SystemExit(f"model is {model_bytes} bytes; lower bucket or raise minCount")
    print(f"holdout: N={n_hold_test} P@1={p1:.6f} R@1={r1:.6f}", flush=True)

    # Predictions on every web_en document, as datatrove_goldens.py orders and names them.
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    n = skipped = empty_after_norm = 0
    hqs = []
    raw = open(tmp, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)
    out = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
    for source, fname, rec, field, text in iter_documents():
        if not text:  # datatrove_goldens.py skips these too (the one empty trafilatura_text)
            skipped += 1
            continue
        doc_id = f"{source}/{fname}/{rec}/{field}"
        t = normalise(text)
        empty_after_norm += not t
        labels, probs = model.predict(t, k=-1)
        probs = [float(p) for p in probs]
        hq = dict(zip(labels, probs)).get(LABEL_HQ, 0.0)
        row = {"id": doc_id, "labels": list(labels), "probs": probs, "hq": hq}
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        hqs.append(hq)
        n += 1
    out.close()
    raw.close()
    os.replace(tmp, args.out)
    top_hq = sum(1 for h in hqs if h > 0.5)
    stats = (
        f"documents={n} skipped_empty={skipped} empty_after_normalisation={empty_after_norm} "
        f"hq_min={min(hqs)!r} hq_max={max(hqs)!r} hq_mean={sum(hqs) / len(hqs)!r} hq_gt_0.5={top_hq}"
    )
    print(f"golden {args.out}: {stats}", flush=True)

    if args.versions:
        params = " ".join(f"{k}={v}" for k, v in TRAIN_PARAMS.items())
        refresh_versions(
            args.versions,
            [
                f"fasttext binding={binding_dist()} numpy=={ver('numpy')} python=={platform.python_version()}"
                f" venv=~/.cache/grist/fasttext-venv",
                f"fasttext model={os.path.basename(args.model)} sha256={model_sha} bytes={model_bytes}"
                f" nwords={nwords} labels={','.join(model.labels)} ({determinism})",
                f"fasttext train_supervised {params}",
                f"fasttext train_set lines={len(trainset)} sha256={train_sha} hq={label_counts(trainset)[LABEL_HQ]}"
                f" cc={label_counts(trainset)[LABEL_CC]} split=random.Random({SPLIT_SEED}).shuffle holdout=first 1/{HOLDOUT_FRACTION}"
                f" sources={json.dumps(src_counts, sort_keys=True, separators=(',', ':'))}",
                f"fasttext holdout N={n_hold_test} P@1={p1!r} R@1={r1!r}",
                f"fasttext golden={os.path.basename(args.out)} {stats}",
            ],
        )


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--train-only":
        train_child(sys.argv[2], sys.argv[3], dirty_heap="--dirty-heap" in sys.argv[4:])
    else:
        main()
