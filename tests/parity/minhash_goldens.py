#!/usr/bin/env python3
"""Golden results of datatrove 0.10.1's MinHash-LSH deduplication (the four stages) on real web text.

Run through tests/parity/make_goldens.sh (it builds the pinned venv). Direct use:

    python tests/parity/minhash_goldens.py [--out-dir DIR] [--limit N] [--keep-tmp DIR]

What it does (see tests/parity/MINHASH.md for the algorithm):

1. Builds a deterministic corpus: every non-empty web_en document of datatrove_goldens.py (same
   order and ids), the 100 Clough-Stevenson texts, and seeded synthetic word edits of 300 C4 docs.
2. Writes it as one JSONL file and runs datatrove's real pipeline on it with LocalPipelineExecutor
   (workers=1): JsonlReader -> MinhashDedupSignature (1 task), MinhashDedupBuckets (14 tasks, one
   per bucket, as datatrove requires), MinhashDedupCluster (1 task, with cluster ids and sizes),
   JsonlReader -> MinhashDedupFilter (exclusion writer) -> JsonlWriter (1 task). Config:
   MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="xxhash")), which equals
   MinhashConfig() (asserted). The same pipeline runs again with hash_fc="sha1"; a summary of that
   run goes into the header.
3. Calls MinhashDedupSignature.get_shingles / get_signature on every document and asserts that
   they match the signature files the pipeline wrote.
4. Re-derives everything from MINHASH.md with an independent implementation (own text
   simplification, spacy.blank("en") directly, pure-Python MT19937 + numpy's masked rejection for
   the permutation parameters, Python-int arithmetic on a sample of documents, own band sort, pair
   emission and union-find) and asserts that every signature, bucket file, .dups pair (in order),
   kept/removed decision and cluster root agrees with datatrove's.

Outputs (gzip with mtime 0, deterministic):
  minhash_corpus.jsonl.gz    one record per corpus document, in order (no web_en/clough text)
  minhash_datatrove.jsonl.gz header record, then one record per document, in order
"""

from __future__ import annotations

import argparse
import glob
import gzip
import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import traceback
import unicodedata
from collections import Counter, defaultdict
from importlib import metadata as importlib_metadata

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import datatrove_goldens  # noqa: E402  (module import has no side effects)

DATA = datatrove_goldens.DATA
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT_DIR = os.path.join(REPO, "tests", "fixtures", "parity")
CLOUGH_REL = "neardup_clough_stevenson/clough_stevenson.jsonl"
C4_REL = "web_en/c4_sample/c4_sample_docs000-799.jsonl.gz"
WEB_EN_DIRS = {
    "wceb2026": "web_en/wceb2026_pages",
    "c4": "web_en/c4_sample",
    "dolma_cc": "web_en/dolma_fixtures",
    "dolma_docs": "web_en/dolma_fixtures",
}

SYNTH_SEED = 20261122
SYNTH_SOURCES = 300
EDIT_RATES = (0.01, 0.05, 0.10, 0.20, 0.40)

MERSENNE_PRIME = (1 << 61) - 1
MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------


def edit_words(text: str, rate: float, rng: random.Random, vocab: list[str]):
    """Word-level edit of `text`: round(rate * n_words) (at least 1) distinct words, chosen with
    rng.sample, each replaced by a vocabulary word, deleted, or followed by an inserted vocabulary
    word (op chosen uniformly). Words are maximal runs of non-whitespace; separators are kept, so a
    deletion leaves two separators side by side."""
    parts = re.split(r"(\s+)", text)  # even indices: words (maybe "" at the ends), odd: whitespace
    word_pos = [i for i in range(0, len(parts), 2) if parts[i]]
    n = len(word_pos)
    k = max(1, round(rate * n))
    ops = {}
    for j in sorted(rng.sample(range(n), k)):
        ops[word_pos[j]] = rng.choice(("replace", "delete", "insert"))
    out = []
    for i, p in enumerate(parts):
        op = ops.get(i)
        if op is None:
            out.append(p)
        elif op == "replace":
            out.append(rng.choice(vocab))
        elif op == "delete":
            pass
        else:
            out.append(p + " " + rng.choice(vocab))
    return "".join(out), n, k, Counter(ops.values())


def build_corpus(limit: int = 0):
    """Returns a list of (record-without-text, text). `limit` shrinks every part (testing only)."""
    corpus = []
    # a. web_en, exactly as datatrove_goldens.py iterates it; empty/null texts are skipped there too.
    n_web = 0
    for source, fname, rec, field, text in datatrove_goldens.iter_documents():
        if not text:
            continue
        if limit and n_web >= limit:
            break
        n_web += 1
        doc_id = f"{source}/{fname}/{rec}/{field}"  # the id datatrove_goldens.py gives the Document
        corpus.append(
            (
                {
                    "id": doc_id,
                    "origin": "web_en",
                    "source": source,
                    "file": fname,
                    "record": rec,
                    "field": field,
                    "path": f"{WEB_EN_DIRS[source]}/{fname}",
                },
                text,
            )
        )
    # b. Clough-Stevenson, all lines in file order.
    with open(os.path.join(DATA, CLOUGH_REL), encoding="utf-8") as f:
        for line_no, line in enumerate(f):
            if limit and line_no >= limit:
                break
            obj = json.loads(line)
            assert obj["text"], obj["file"]
            corpus.append(
                (
                    {
                        "id": f"clough/{obj['file']}",
                        "origin": "clough",
                        "file": os.path.basename(CLOUGH_REL),
                        "path": CLOUGH_REL,
                        "line": line_no,
                        "task": obj["task"],
                        "category": obj["category"],
                    },
                    obj["text"],
                )
            )
    # c. Synthetic edits of C4 docs (the web_en C4 sample), seeded.
    c4 = [obj["text"] for _, obj in datatrove_goldens.iter_jsonl_gz(os.path.join(DATA, C4_REL))]
    vocab, seen = [], set()
    for t in c4:
        for w in t.split():
            if w not in seen:
                seen.add(w)
                vocab.append(w)
    rng = random.Random(SYNTH_SEED)
    n_sources = SYNTH_SOURCES if not limit else min(limit, SYNTH_SOURCES)
    sources = sorted(rng.sample(range(len(c4)), n_sources))
    k = 0
    for src in sources:
        n_copies = rng.randint(1, 3)
        for rate in rng.sample(EDIT_RATES, n_copies):
            text, n_words, n_edits, ops = edit_words(c4[src], rate, rng, vocab)
            assert text.strip(), src
            corpus.append(
                (
                    {
                        "id": f"synthetic/{k:04d}",
                        "origin": "synthetic",
                        "source_id": f"c4/{os.path.basename(C4_REL)}/{src}/text",
                        "edit_rate": rate,
                        "n_words": n_words,  # whitespace words of the source
                        "n_edits": n_edits,
                        "ops": {op: ops.get(op, 0) for op in ("replace", "delete", "insert")},
                        "text": text,
                    },
                    text,
                )
            )
            k += 1
    # d. Hand-made edge cases (full text in the fixture), after everything else.
    for j, (note, text) in enumerate(EDGE_DOCS):
        corpus.append(({"id": f"edge/{j:02d}", "origin": "edge", "note": note, "text": text}, text))
    ids = [r["id"] for r, _ in corpus]
    assert len(set(ids)) == len(ids), "duplicate ids"
    return corpus


_RIVER = (
    "the river bends slowly past the old mill where children used to fish on summer evenings while their "
    "parents talked about the harvest and "
)
EDGE_DOCS = [
    ("3 words: no shingle, no signature, never removed", "Hello, World! 123"),
    ("exact copy of the previous doc; still no signature, so both are kept", "Hello, World! 123"),
    ("only punctuation: simplifies to the empty string, 0 words", "!!! ??? ... \u2014 \u201c\u201d"),
    ("exactly 5 words: 1 shingle", "one two three four five"),
    ("same after lowercasing and punctuation removal as the previous doc: removed", "One, two; THREE four... five!"),
    ("digits: every number becomes 0", "1 2 3 4 5 6"),
    ("other numbers, same simplified text '0 0 0 0 0 0' as the previous doc: removed", "7, 8, 9, 10, 11, 12.5"),
    ("diacritics, precomposed (NFC)", "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e \u00e0 la carte tonight"),
    ("upper case without accents: same simplified text as the previous doc", "CAFE CREME BRULEE A LA CARTE TONIGHT"),
    ("decomposed accents (NFD): same simplified text", "cafe\u0301 cre\u0300me bru\u0302le\u0301e a\u0300 la carte tonight"),
    ("spaCy splits 'dont'/'cant' into 'do nt'/'ca nt'", "I dont know why we cant go there today"),
    ("same spaCy words as the previous doc, different whitespace words", "I do nt know why we ca nt go there today"),
    # X, Y, Z below were found by search: Y and Z share band 0; X shares bands 1, 6, 9, 11 and 12 with
    # Z but no band with Y and not band 0 with Z. Bucket 0 makes {Y, Z} (size 2) first; bucket 1's
    # pair (X, Z) then joins X's singleton to it, and union by size keeps Y as the root: X, the
    # earliest document of the cluster, is the one that is REMOVED along with Z.
    ("X: union by size makes a later doc the root; this doc is removed",
     _RIVER + "the weather and the price of grain at the cloud"),
    ("Y: root of the X/Y/Z cluster (kept)", _RIVER + "garden weather and the price of grain at the market"),
    ("Z", _RIVER + "the weather and the price of grain cloud the market"),
]


# --------------------------------------------------------------------------------------------
# Running datatrove's pipeline
# --------------------------------------------------------------------------------------------


def run_pipeline(workdir: str, input_dir: str, config, tag: str):
    """Runs the four MinHash stages with LocalPipelineExecutor. Returns paths and stage-1 time."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    base = os.path.join(workdir, tag)
    d = {k: os.path.join(base, k) for k in ("signatures", "buckets", "remove", "output", "removed", "logs")}

    def reader():
        return JsonlReader(input_dir, text_key="text", id_key="id", compression=None)

    t0 = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[reader(), MinhashDedupSignature(output_folder=d["signatures"], config=config)],
        tasks=1,
        workers=1,
        logging_dir=os.path.join(d["logs"], "s1"),
    ).run()
    t_sig = time.perf_counter() - t0
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=d["signatures"], output_folder=d["buckets"], config=config)],
        tasks=config.num_buckets,  # datatrove asserts tasks % num_buckets == 0; 1 worker per bucket
        workers=1,
        logging_dir=os.path.join(d["logs"], "s2"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[
            MinhashDedupCluster(
                input_folder=d["buckets"],
                output_folder=d["remove"],
                config=config,
                save_cluster_id=True,
                save_cluster_size=True,
            )
        ],
        tasks=1,
        workers=1,
        logging_dir=os.path.join(d["logs"], "s3"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[
            reader(),
            MinhashDedupFilter(
                input_folder=d["remove"],
                exclusion_writer=JsonlWriter(d["removed"], output_filename="${rank}.jsonl", compression=None),
                load_cluster_ids=True,
                load_cluster_sizes=True,
            ),
            JsonlWriter(d["output"], output_filename="${rank}.jsonl", compression=None),
        ],
        tasks=1,
        workers=1,
        logging_dir=os.path.join(d["logs"], "s4"),
    ).run()
    t_all = time.perf_counter() - t0
    return d, t_sig, t_all


def read_sig_files(sig_dir: str, config, n_docs: int):
    """The 14 sorted bucket files of rank 0 -> (per-doc list of 112 ints or None, per-bucket records)."""
    fmt = f"<{config.hashes_per_bucket}{config.hash_config.struct_format}I"
    size = struct.calcsize(fmt)
    sigs = [[None] * config.num_buckets for _ in range(n_docs)]
    bucket_records = []
    for bi in range(config.num_buckets):
        files = sorted(glob.glob(os.path.join(sig_dir, f"bucket_{bi:03d}", "*.minhash.sig")))
        assert [os.path.basename(f) for f in files] == ["00000.minhash.sig"], files
        data = open(files[0], "rb").read()
        assert len(data) % size == 0
        recs = [r for r in struct.iter_unpack(fmt, data)]
        bucket_records.append(recs)
        for r in recs:
            assert sigs[r[-1]][bi] is None
            sigs[r[-1]][bi] = list(r[:-1])
    out = []
    for s in sigs:
        if all(x is None for x in s):
            out.append(None)
        else:
            assert all(x is not None for x in s)
            out.append([v for band in s for v in band])
    return out, bucket_records


def read_dups(bucket_dir: str, config):
    files = sorted(glob.glob(os.path.join(bucket_dir, "*.dups")))
    assert [os.path.basename(f) for f in files] == [f"{b:05d}_00.dups" for b in range(config.num_buckets)], files
    out = []
    for f in files:
        out.append([t for t in struct.iter_unpack("<4I", open(f, "rb").read())])
    return out


def read_cluster_outputs(remove_dir: str):
    def u32s(name):
        p = os.path.join(remove_dir, name)
        if not os.path.exists(p):
            return []
        b = open(p, "rb").read()
        return list(struct.unpack(f"<{len(b) // 4}I", b))

    names = sorted(os.listdir(remove_dir))
    assert set(names) <= {"000000.remove", "000000.clusters", "000000.sizes"}, names
    remove = u32s("000000.remove")
    cl = u32s("000000.clusters")
    sz = u32s("000000.sizes")
    clusters = dict(zip(cl[0::2], cl[1::2]))
    sizes = dict(zip(sz[0::2], sz[1::2]))
    return remove, clusters, sizes


def read_jsonl_ids(d: str):
    ids = []
    for p in sorted(glob.glob(os.path.join(d, "*.jsonl"))):
        with open(p, encoding="utf-8") as f:
            for line in f:
                obj = json.loads(line)
                ids.append((obj["id"], obj.get("metadata", {})))
    return ids


# --------------------------------------------------------------------------------------------
# Independent implementation of MINHASH.md (used only to check the spec against datatrove)
# --------------------------------------------------------------------------------------------

# utils/text.py PUNCTUATION, written out as code points (checked against datatrove's string).
SPEC_PUNCT_CPS = (
    [c for c in range(0x21, 0x30)]  # ! " # $ % & ' ( ) * + , - . /
    + [c for c in range(0x3A, 0x41)]  # : ; < = > ? @
    + [c for c in range(0x5B, 0x61)]  # [ \ ] ^ _ `
    + [c for c in range(0x7B, 0x7F)]  # { | } ~
    + [0xAB, 0xB4, 0xBB]  # « ´ »
    + [0x2013, 0x2014, 0x2019, 0x201C, 0x201D, 0x201E, 0x2026]  # – — ’ “ ” „ …
    + [0x2236, 0x2501, 0x25BA]  # ∶ ━ ►
    + [0x3001, 0x3002, 0x3008, 0x3009, 0x300A, 0x300B, 0x300C, 0x300D, 0x3010, 0x3011]  # 、。〈〉《》「」【】
    + [0xFF01, 0xFF05, 0xFF08, 0xFF09, 0xFF0C, 0xFF0E, 0xFF11, 0xFF1A, 0xFF1B, 0xFF1F, 0xFF5E]  # ！％（），．１：；？～
    + list(range(0x00, 0x09)) + [0x0B, 0x0C] + list(range(0x0D, 0x20)) + list(range(0x7F, 0xA0))  # controls
)
SPEC_PUNCT_TABLE = {c: 0x20 for c in SPEC_PUNCT_CPS}


def spec_simplify(text: str) -> str:
    import regex

    text = text.lower()
    text = regex.sub(r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?", "0", text)
    text = text.translate(SPEC_PUNCT_TABLE)
    text = re.sub(r"\s+", " ", text.strip())
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text.strip()


class SpecMT19937:
    """numpy's legacy RandomState(seed) bit stream: MT19937 with init_genrand(seed)."""

    def __init__(self, seed: int):
        mt = [0] * 624
        mt[0] = seed & 0xFFFFFFFF
        for i in range(1, 624):
            mt[i] = (1812433253 * (mt[i - 1] ^ (mt[i - 1] >> 30)) + i) & 0xFFFFFFFF
        self.mt, self.i = mt, 624

    def next32(self):
        mt = self.mt
        if self.i >= 624:
            for k in range(624):
                y = (mt[k] & 0x80000000) | (mt[(k + 1) % 624] & 0x7FFFFFFF)
                mt[k] = mt[(k + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            self.i = 0
        y = mt[self.i]
        self.i += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y

    def next64(self):
        hi = self.next32()
        return (hi << 32) | self.next32()

    def randint_u64(self, low: int, high: int, n: int):
        """RandomState.randint(low, high, dtype=np.uint64): masked rejection on next64."""
        rng = high - 1 - low
        mask = rng
        for s in (1, 2, 4, 8, 16, 32):
            mask |= mask >> s
        out = []
        while len(out) < n:
            v = self.next64() & mask
            if v <= rng:
                out.append(low + v)
        return out


def spec_parameters(seed: int, num_hashes: int):
    mt = SpecMT19937(seed)
    a = mt.randint_u64(1, MERSENNE_PRIME, num_hashes)
    b = mt.randint_u64(0, MERSENNE_PRIME, num_hashes)
    return a, b


def spec_sha1_64(s: str) -> int:
    return int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:8], "little")


def spec_xxh64(s: str) -> int:
    import xxhash

    return xxhash.xxh64_intdigest(s.encode("utf-8"), seed=0)


def spec_signature_int(shingles: list[int], a: list[int], b: list[int]) -> list[int]:
    """Pure Python ints: ((s * a) mod 2^64 + b) mod 2^64 mod (2^61 - 1), min over shingles."""
    out = []
    for ai, bi in zip(a, b):
        out.append(min(((((s * ai) & MASK64) + bi) & MASK64) % MERSENNE_PRIME for s in shingles))
    return out


def spec_signature_np(shingles: list[int], a: np.ndarray, b: np.ndarray) -> list[int]:
    s = np.array(shingles, dtype=np.uint64).reshape(-1, 1)
    return ((s * a + b) % np.uint64(MERSENNE_PRIME)).min(axis=0).tolist()


def spec_dedup(sigs: list, num_buckets: int, rows: int):
    """Band sort, pair emission and union-find of MINHASH.md. Returns (pairs per bucket, sorted
    records per bucket, root per doc index or None)."""
    pairs_per_bucket, records_per_bucket = [], []
    for bi in range(num_buckets):
        recs = sorted((tuple(s[bi * rows:(bi + 1) * rows]), idx) for idx, s in enumerate(sigs) if s is not None)
        records_per_bucket.append(recs)
        pairs = []
        for prev, cur in zip(recs, recs[1:]):
            if prev[0] == cur[0]:
                pairs.append((prev[1], cur[1]))
        pairs_per_bucket.append(pairs)
    parent, size = {}, {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for pairs in pairs_per_bucket:
        for x, y in pairs:
            rx, ry = find(x), find(y)
            if rx == ry:
                continue
            sx, sy = size.get(rx, 1), size.get(ry, 1)
            if sx < sy:
                rx, ry = ry, rx
                sx, sy = sy, sx
            parent[ry] = rx
            size[rx] = sx + sy
            size.pop(ry, None)
    roots = [find(i) if i in parent else None for i in range(len(sigs))]
    sizes = [size[r] if r is not None else None for r in roots]
    return pairs_per_bucket, records_per_bucket, roots, sizes


# --------------------------------------------------------------------------------------------


EXAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, World! 123",  # fewer than 5 words: no signature
    "one two three four five",  # exactly 5 words: 1 shingle
    "spam spam spam spam spam spam spam spam",  # repeated shingles
    "Don't stop—it's e.g. U.S. $5.00 well-known... I dont know; can't walk 10km, im tired, gonna rest.",
    "Café naïve résumé — Ｆｕｌｌ　ｗｉｄｔｈ ① ² 3.14 1,000,000 1.2.3 ٣٫٥ İstanbul ΟΔΟΣ straße ﬁne 10:30pm",
    "한국어 텍스트 입니다. 中文文本 日本語のテキストです。 Ελληνικά κείμενα εδώ",
    "a\u00a0b\u200bc\td\u3000e\r\nf\x0bg\x1ch\x85i j\u2028k l\u0301m \u0301 n",
    "#hashtag @user http://x.com/a?b=c&d=1 user@mail.com a‘b’c • © ® ™ <tag> | x_y 2x4 3rd 1e10",
    "Inheritance is a basic concept of Object-Oriented Programming where the basic idea is to create "
    "new classes that add extra detail to existing classes.",
]


def make_examples(sig_x, sig_s, tokenizer):
    from datatrove.utils.text import ngrams, simplify_text

    out = []
    for text in EXAMPLE_TEXTS:
        simp = simplify_text(text, sig_x.config.norm_config)
        words = tokenizer.word_tokenize(simp)
        grams = [" ".join(g) for g in ngrams(words, sig_x.config.n_grams)]
        sh_x = sig_x.get_shingles(text)
        sh_s = sig_s.get_shingles(text)
        assert sh_x.reshape(-1).tolist() == [spec_xxh64(g) for g in grams]
        assert sh_s.reshape(-1).tolist() == [spec_sha1_64(g) for g in grams]
        ex = {
            "text": text,
            "simplified": simp,
            "words": words,
            "shingles": grams,
            "xxh64": sh_x.reshape(-1).tolist(),
            "sha1_64": sh_s.reshape(-1).tolist(),
            "signature_xxhash": [v for band in sig_x.get_signature(sh_x) for v in band] if sh_x.size else None,
            "signature_sha1": [v for band in sig_s.get_signature(sh_s) for v in band] if sh_s.size else None,
        }
        out.append(ex)
    return out


def sig_bytes(sig: list[int]) -> bytes:
    return struct.pack(f"<{len(sig)}Q", *sig)


def open_gz_text(path: str):
    raw = open(path, "wb")
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)
    return raw, gz, io.TextIOWrapper(gz, encoding="utf-8", newline="\n")


def ver(p):
    try:
        return importlib_metadata.version(p)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def analyse_run(d, config, corpus, n_docs):
    """Everything a run wrote, decoded per document."""
    sigs, bucket_records = read_sig_files(d["signatures"], config, n_docs)
    dups = read_dups(d["buckets"], config)
    remove, clusters, sizes = read_cluster_outputs(d["remove"])
    kept = read_jsonl_ids(d["output"])
    removed_w = read_jsonl_ids(d["removed"])
    ids = [r["id"] for r, _ in corpus]
    # The filter's kept + excluded outputs partition the corpus, in order.
    assert sorted([i for i, _ in kept] + [i for i, _ in removed_w]) == sorted(ids)
    kept_set = {i for i, _ in kept}
    assert [i for i, _ in kept] == [x for x in ids if x in kept_set], "filter output out of order"
    removed_ids = {i for i, _ in removed_w}
    assert removed_ids == {ids[x] for x in remove}, "exclusion writer disagrees with .remove"
    assert remove == sorted(remove)
    # Every dups entry is within file 0 (one stage-1 task), no index.
    for pairs in dups:
        for f1, d1, f2, d2 in pairs:
            assert f1 == 0 and f2 == 0 and d1 < d2, (f1, d1, f2, d2)
    # Cluster roots from datatrove's own outputs: in each cluster id, the one member not removed.
    members = defaultdict(list)
    for idx, ci in clusters.items():
        members[ci].append(idx)
    remove_set = set(remove)
    root_of = {}
    for ci, m in members.items():
        roots = [x for x in m if x not in remove_set]
        assert len(roots) == 1, (ci, m)
        for x in m:
            root_of[x] = roots[0]
    # The filter's metadata agrees with the .clusters/.sizes files.
    meta = {i: m for i, m in kept + removed_w}
    for idx, rid in enumerate(ids):
        m = meta[rid]
        assert m["minhash_cluster_id"] == clusters.get(idx, -1)
        assert m["minhash_cluster_size"] == sizes.get(idx, 1)
    return {
        "sigs": sigs,
        "bucket_records": bucket_records,
        "dups": dups,
        "remove": remove,
        "clusters": clusters,
        "sizes": sizes,
        "root_of": root_of,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", default=DEFAULT_OUT_DIR)
    ap.add_argument("--limit", type=int, default=0, help="shrink the corpus (testing only)")
    ap.add_argument("--keep-tmp", default=None, help="work in this directory and keep it")
    args = ap.parse_args()
    if args.limit and os.path.abspath(args.out_dir) == os.path.abspath(DEFAULT_OUT_DIR):
        ap.error("--limit needs --out-dir elsewhere than the committed fixtures")

    from datatrove.pipeline.dedup import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import PUNCTUATION, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    import spacy

    t_start = time.perf_counter()
    cfg_x = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    cfg_s = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    assert cfg_x == MinhashConfig(), "the default MinhashConfig is the 64-bit xxhash one"
    assert sorted(set(map(ord, PUNCTUATION))) == sorted(SPEC_PUNCT_CPS) and len(PUNCTUATION) == len(SPEC_PUNCT_CPS)

    corpus = build_corpus(args.limit)
    n_docs = len(corpus)
    texts = [t for _, t in corpus]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    origins = Counter(r["origin"] for r, _ in corpus)
    print(f"corpus: {n_docs} docs, {n_bytes / 1e6:.2f} MB, {dict(origins)}", flush=True)

    workdir = args.keep_tmp or tempfile.mkdtemp(prefix="grist-minhash-")
    if args.keep_tmp:
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir, exist_ok=True)
    try:
        input_dir = os.path.join(workdir, "input")
        os.makedirs(input_dir)
        with open(os.path.join(input_dir, "corpus.jsonl"), "w", encoding="utf-8", newline="\n") as f:
            for rec, text in corpus:
                # ensure_ascii: the reader iterates lines; no raw U+2028/\r etc. can split a record.
                f.write(json.dumps({"id": rec["id"], "text": text}, ensure_ascii=True) + "\n")

        # ---- datatrove pipelines -------------------------------------------------------------
        d_x, t_sig_x, t_all_x = run_pipeline(workdir, input_dir, cfg_x, "xxhash")
        d_s, t_sig_s, t_all_s = run_pipeline(workdir, input_dir, cfg_s, "sha1")
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
        print(f"pipeline xxhash: stage 1 {t_sig_x:.1f}s, all stages {t_all_x:.1f}s; "
              f"sha1: stage 1 {t_sig_s:.1f}s, all {t_all_s:.1f}s", flush=True)
        run_x = analyse_run(d_x, cfg_x, corpus, n_docs)
        run_s = analyse_run(d_s, cfg_s, corpus, n_docs)

        # ---- datatrove's own per-document calls, timed ----------------------------------------
        sig_x = MinhashDedupSignature(output_folder=os.path.join(workdir, "unused_x"), config=cfg_x)
        sig_s = MinhashDedupSignature(output_folder=os.path.join(workdir, "unused_s"), config=cfg_s)
        tok = load_word_tokenizer("eng")
        assert sig_x.word_tokenizer is tok and type(tok).__name__ == "SpaCyTokenizer" and tok.language == "en"
        A, B = sig_x.parameters
        a_list, b_list = A.reshape(-1).tolist(), B.reshape(-1).tolist()
        assert (a_list, b_list) == spec_parameters(cfg_x.seed, sig_x.num_hashes)
        assert [x.tolist() for x in sig_s.parameters] == [x.tolist() for x in sig_x.parameters]

        from datatrove.utils.text import ngrams

        phase = Counter()
        per_doc = []
        t0 = time.perf_counter()
        for text in texts:
            # The body of get_shingles / get_signature split into phases for timing; the results are
            # asserted equal to the unsplit calls below.
            p0 = time.perf_counter()
            simp = simplify_text(text, cfg_x.norm_config)
            p1 = time.perf_counter()
            words = tok.word_tokenize(simp)
            p2 = time.perf_counter()
            sh = np.fromiter([sig_x._hash_func(" ".join(g)) for g in ngrams(words, cfg_x.n_grams)], dtype=np.uint64)
            sh = sh.reshape((-1, 1))
            p3 = time.perf_counter()
            sig = [v for band in sig_x.get_signature(sh) for v in band] if sh.size else None
            p4 = time.perf_counter()
            phase["simplify"] += p1 - p0
            phase["tokenize"] += p2 - p1
            phase["shingle_hash"] += p3 - p2
            phase["permute_min"] += p4 - p3
            per_doc.append((simp, words, sh, sig))
        t_loop = time.perf_counter() - t0

        # One clean timing of the unsplit datatrove calls (what stage 1 does per document).
        t0 = time.perf_counter()
        for text in texts:
            sh = sig_x.get_shingles(text)
            if sh.size:
                sig_x.get_signature(sh)
        t_direct = time.perf_counter() - t0

        for i, (text, (simp, words, sh, sig)) in enumerate(zip(texts, per_doc)):
            sh2 = sig_x.get_shingles(text)
            assert np.array_equal(sh2, sh)
            assert sig == run_x["sigs"][i], f"pipeline signature differs from get_signature for doc {i}"
            sh_s = sig_s.get_shingles(text)
            sig_sha1 = [v for band in sig_s.get_signature(sh_s) for v in band] if sh_s.size else None
            assert sig_sha1 == run_s["sigs"][i]

        # ---- independent re-derivation from MINHASH.md ------------------------------------------
        nlp = spacy.blank("en")
        nlp.max_length = 10**9
        spec_sigs_x, spec_sigs_s = [], []
        n_int_checked = 0
        diff_split = 0
        for i, (text, (simp, words, sh, sig)) in enumerate(zip(texts, per_doc)):
            s2 = spec_simplify(text)
            assert s2 == simp, f"simplify differs on doc {i}"
            w2 = [t.text.strip() for t in nlp(s2) if t.text.strip()]
            assert w2 == words, f"tokens differ on doc {i}"
            if words != s2.split(" ") and words != []:
                diff_split += 1
            grams = [" ".join(words[j:j + cfg_x.n_grams]) for j in range(len(words) - cfg_x.n_grams + 1)]
            hx = [spec_xxh64(g) for g in grams]
            assert hx == sh.reshape(-1).tolist()
            hs = [spec_sha1_64(g) for g in grams]
            if not grams:
                spec_sigs_x.append(None)
                spec_sigs_s.append(None)
                continue
            sx = spec_signature_np(hx, A, B)
            ss = spec_signature_np(hs, A, B)
            if i % 10 == 0 and len(hx) <= 4000:
                assert sx == spec_signature_int(hx, a_list, b_list), f"int arithmetic differs on doc {i}"
                n_int_checked += 1
            spec_sigs_x.append(sx)
            spec_sigs_s.append(ss)
        assert spec_sigs_x == run_x["sigs"] and spec_sigs_s == run_s["sigs"]
        for run, ssigs in ((run_x, spec_sigs_x), (run_s, spec_sigs_s)):
            pairs, records, roots, sizes = spec_dedup(ssigs, cfg_x.num_buckets, cfg_x.hashes_per_bucket)
            for bi in range(cfg_x.num_buckets):
                assert [tuple(r[:-1]) for r in run["bucket_records"][bi]] == [r[0] for r in records[bi]]
                assert [r[-1] for r in run["bucket_records"][bi]] == [r[1] for r in records[bi]]
                assert [(d1, d2) for _, d1, _, d2 in run["dups"][bi]] == pairs[bi], f"pairs differ, bucket {bi}"
            assert [run["root_of"].get(i) for i in range(n_docs)] == roots
            assert [run["sizes"].get(i) for i in range(n_docs)] == sizes
            assert sorted(run["remove"]) == [i for i in range(n_docs) if roots[i] is not None and roots[i] != i]
        print(f"spec check passed: simplify/tokens/shingles/signatures for all {n_docs} docs "
              f"(Python-int arithmetic on {n_int_checked}), sorted buckets, pairs, roots, removals; "
              f"{diff_split} docs where spaCy words != simplified.split(' ')", flush=True)

        examples = make_examples(sig_x, sig_s, tok)

        # ---- summaries -----------------------------------------------------------------------
        ids = [r["id"] for r, _ in corpus]

        def summary(run):
            roots = Counter(run["root_of"].values())
            hist = Counter(roots.values())
            return {
                "docs_with_signature": sum(s is not None for s in run["sigs"]),
                "docs_without_signature": sum(s is None for s in run["sigs"]),
                "pairs_per_bucket": [len(p) for p in run["dups"]],
                "docs_in_clusters": len(run["root_of"]),
                "clusters": len(roots),
                "removed": len(run["remove"]),
                "kept": n_docs - len(run["remove"]),
                "cluster_size_hist": {str(k): hist[k] for k in sorted(hist)},
                "clusters_whose_root_is_not_the_first_doc": sum(
                    1 for r in roots if min(i for i, rr in run["root_of"].items() if rr == r) != r
                ),
            }

        sum_x, sum_s = summary(run_x), summary(run_s)

        # The edge documents do what their notes say (xxhash config).
        e = {rec["id"]: i for i, (rec, _) in enumerate(corpus) if rec["origin"] == "edge"}
        rx = run_x["root_of"]
        for k in ("edge/00", "edge/01", "edge/02"):
            assert run_x["sigs"][e[k]] is None and e[k] not in rx
        assert per_doc[e["edge/03"]][2].shape[0] == 1
        for dup, root in (("edge/04", "edge/03"), ("edge/06", "edge/05"), ("edge/08", "edge/07"),
                          ("edge/09", "edge/07"), ("edge/11", "edge/10"), ("edge/12", "edge/13"),
                          ("edge/14", "edge/13")):
            assert rx.get(e[dup]) == e[root], (dup, root)
        assert rx.get(e["edge/13"]) == e["edge/13"]

        # Diagnostics for the report (also stored): synthetic recall by edit rate, Clough categories.
        idx_of = {rid: i for i, rid in enumerate(ids)}
        syn = defaultdict(lambda: [0, 0])
        for i, (rec, _) in enumerate(corpus):
            if rec["origin"] == "synthetic":
                src = idx_of.get(rec["source_id"])
                same = src is not None and run_x["root_of"].get(i) is not None and \
                    run_x["root_of"].get(i) == run_x["root_of"].get(src)
                syn[str(rec["edit_rate"])][0] += 1
                syn[str(rec["edit_rate"])][1] += int(same)
        orig_of_task = {rec["task"]: i for i, (rec, _) in enumerate(corpus)
                        if rec["origin"] == "clough" and rec["category"] == "orig"}
        clough = defaultdict(lambda: [0, 0])
        for i, (rec, _) in enumerate(corpus):
            if rec["origin"] == "clough" and rec["category"] != "orig":
                o = orig_of_task.get(rec["task"])
                same = o is not None and run_x["root_of"].get(i) is not None and \
                    run_x["root_of"].get(i) == run_x["root_of"].get(o)
                clough[rec["category"]][0] += 1
                clough[rec["category"]][1] += int(same)
        mixed = Counter()
        by_root = defaultdict(list)
        for i, r in run_x["root_of"].items():
            by_root[r].append(i)
        for r, m in by_root.items():
            mixed["+".join(sorted({corpus[x][0]["origin"] if corpus[x][0]["origin"] != "web_en"
                                   else corpus[x][0]["source"] for x in m}))] += 1
        sum_x["synthetic_same_cluster_as_source_by_rate"] = {k: {"copies": v[0], "with_source": v[1]}
                                                              for k, v in sorted(syn.items(), key=lambda kv: float(kv[0]))}
        sum_x["clough_same_cluster_as_orig_by_category"] = {k: {"answers": v[0], "with_orig": v[1]}
                                                            for k, v in sorted(clough.items())}
        sum_x["clusters_by_sources"] = dict(sorted(mixed.items()))

        all_sig_bytes_s = b"".join(sig_bytes(s) for s in run_s["sigs"] if s is not None)

        header = {
            "config": {
                "n_grams": cfg_x.n_grams,
                "num_buckets": cfg_x.num_buckets,
                "hashes_per_bucket": cfg_x.hashes_per_bucket,
                "seed": cfg_x.seed,
                "hash_config": {"precision": cfg_x.hash_config.precision, "hash_fc": cfg_x.hash_config.hash_fc},
                "norm_config": dict(vars(cfg_x.norm_config)),
                "language": "eng",
                "word_tokenizer": "SpaCyTokenizer('en') = spacy.blank('en') + sentencizer",
                "default_config_identical": True,
                "stage_tasks": {"signature": 1, "buckets": cfg_x.num_buckets, "cluster": 1, "filter": 1},
                "cluster_options": {"save_cluster_id": True, "save_cluster_size": True},
            },
            "mersenne_prime": MERSENNE_PRIME,
            "a": a_list,
            "b": b_list,
            "numpy": np.__version__,
            "numpy_algorithm": "np.random.RandomState(1) (MT19937, init_genrand(1)); randint(low, high, dtype=uint64, "
                               "size=(1,112)): masked rejection, v = next64() & mask, reject v > high-1-low; "
                               "next64 = (next32 << 32) | next32; a drawn first (low=1), then b (low=0)",
            "datatrove": ver("datatrove"),
            "versions": {
                p: ver(p) for p in ("datatrove", "numpy", "xxhash", "spacy", "regex", "orjson")
            } | {"python": platform.python_version(), "unicodedata": unicodedata.unidata_version},
            "corpus": {"docs": n_docs, "bytes": n_bytes, "by_origin": dict(origins),
                       "synthetic_seed": SYNTH_SEED, "edit_rates": list(EDIT_RATES)},
            "summary": sum_x,
            # .dups content of each bucket, in file order, as [doc_idx1, doc_idx2] (file ids are all 0).
            "dups": [[[d1, d2] for _, d1, _, d2 in p] for p in run_x["dups"]],
            "sha1": {
                "hash_config": {"precision": 64, "hash_fc": "sha1"},
                "summary": sum_s,
                "signatures_sha256": hashlib.sha256(all_sig_bytes_s).hexdigest(),
                "signatures_sha256_note": "sha256 of the concatenated little-endian u64 signatures of all docs "
                                          "that have one, in corpus order",
                "removed_idx": run_s["remove"],
                "root_idx": {str(k): v for k, v in sorted(run_s["root_of"].items())},
            },
            "examples": examples,
        }
        if args.limit:
            header["limit"] = args.limit

        os.makedirs(args.out_dir, exist_ok=True)
        # Corpus fixture.
        cpath = os.path.join(args.out_dir, "minhash_corpus.jsonl.gz")
        raw, gz, out = open_gz_text(cpath + ".tmp")
        for i, (rec, text) in enumerate(corpus):
            row = {"idx": i} | rec
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.close()
        gz.close()
        raw.close()
        os.replace(cpath + ".tmp", cpath)
        # Results fixture.
        remove_set = set(run_x["remove"])
        rpath = os.path.join(args.out_dir, "minhash_datatrove.jsonl.gz")
        raw, gz, out = open_gz_text(rpath + ".tmp")
        out.write(json.dumps(header, ensure_ascii=False) + "\n")
        for i, (rec, (simp, words, sh, sig)) in enumerate(zip((r for r, _ in corpus), per_doc)):
            root = run_x["root_of"].get(i)
            row = {
                "idx": i,
                "id": rec["id"],
                "removed": i in remove_set,
                "cluster": ids[root] if root is not None else None,
                "cluster_size": run_x["sizes"].get(i),
                "signature_sha256": hashlib.sha256(sig_bytes(sig)).hexdigest() if sig is not None else None,
                "n_shingles": int(sh.shape[0]),
                "n_words": len(words),
                "simplified_sha256": hashlib.sha256(simp.encode("utf-8")).hexdigest(),
                "words_sha256": hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest(),
            }
            assert row["removed"] == (root is not None and root != i)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.close()
        gz.close()
        raw.close()
        os.replace(rpath + ".tmp", rpath)

        print(json.dumps(sum_x, indent=1), flush=True)
        print(json.dumps({"sha1": sum_s}, indent=1), flush=True)
        print(
            "timing (one core): datatrove stage 1 via executor "
            f"{t_sig_x:.1f}s = {n_docs / t_sig_x:.0f} docs/s, {n_bytes / 1e6 / t_sig_x:.3f} MB/s; "
            f"get_shingles+get_signature loop {t_direct:.1f}s = {n_docs / t_direct:.0f} docs/s, "
            f"{n_bytes / 1e6 / t_direct:.3f} MB/s; phases of the split loop ({t_loop:.1f}s): "
            + ", ".join(f"{k} {v:.1f}s ({100 * v / t_loop:.0f}%)" for k, v in phase.items()),
            flush=True,
        )
        print(f"fixtures: {cpath} ({os.path.getsize(cpath)} B), {rpath} ({os.path.getsize(rpath)} B); "
              f"total {time.perf_counter() - t_start:.0f}s", flush=True)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
