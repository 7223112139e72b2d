#!/usr/bin/env python3
"""What megatron-core's own `IndexedDataset` reads from Megatron indexed datasets (PREFIX.idx +
PREFIX.bin, schemas/packed-format.md), recorded as JSON for the Rust tests.

Runs in the megatron venv (tests/parity/tokens_venv.sh builds it: torch + megatron-core). From the
repo root:

    ~/.cache/grist/megatron-venv/bin/python tests/parity/megatron_goldens.py \\
        --out GOLDEN.json [--self-check] [--build-reference DIR] PREFIX [PREFIX ...]

For each PREFIX it opens `IndexedDataset(PREFIX)` (mmap=True and the other defaults) and records,
under the prefix's path (relative to the repo root when inside it, else absolute):

    dtype             numpy name of the token dtype ("uint16", "int32", ...)
    len               len(ds): the number of sequences
    sequence_lengths  list(ds.sequence_lengths)
    document_indices  list(ds.document_indices)
    sequence_sha256   per sequence, sha256 of ds[i].astype("<u4").tobytes() (ids as little-endian u32)
    get               [{"idx", "offset", "length", "ids"}]: ds.get(idx, offset, length) on the first,
                      middle and last sequence (offset = length // 3, at most 5 ids)
    bin_bytes, idx_bytes, bin_sha256, idx_sha256
                      the files; bin_bytes must equal sum(sequence_lengths) * itemsize

The golden also holds the megatron-core version. JSON with sorted keys, indent 1.

--self-check also parses every .idx with a small pure-numpy reader written from the byte layout
in schemas/packed-format.md (no megatron code) and asserts that it agrees with megatron-core on
every field and every token, and that the file is exactly as long as the layout says.

--build-reference DIR writes two small datasets with megatron-core's own `IndexedDatasetBuilder`
(DIR/megatron_ref_uint16 and DIR/megatron_ref_int32: a few documents of several sequences each,
an empty sequence, ids at the dtype's limits) and adds them to the prefixes. That is how the
script tests itself:

    ~/.cache/grist/megatron-venv/bin/python tests/parity/megatron_goldens.py --self-check \\
        --build-reference /tmp/mref --out /tmp/mref/golden.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
import warnings
from importlib import metadata as importlib_metadata

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------------------------------------
# The spec reader: schemas/packed-format.md, "Megatron indexed dataset (MMIDIDX version 1)".
# Nothing here comes from megatron-core.

SPEC_MAGIC = b"MMIDIDX\x00\x00"
SPEC_DTYPES = {1: "<u1", 2: "<i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f8", 7: "<f4", 8: "<u2"}
SPEC_NAMES = {1: "uint8", 2: "int8", 3: "int16", 4: "int32", 5: "int64", 6: "float64", 7: "float32", 8: "uint16"}


def spec_read(prefix):
    """Parses PREFIX.idx / PREFIX.bin by the documented byte layout. Returns a dict."""
    with open(prefix + ".idx", "rb") as f:
        idx = f.read()
    assert len(idx) >= 34, f"{prefix}.idx: {len(idx)} bytes, shorter than the 34-byte header"
    assert idx[0:9] == SPEC_MAGIC, f"{prefix}.idx: magic {idx[0:9]!r}"
    (version,) = struct.unpack_from("<Q", idx, 9)
    assert version == 1, f"{prefix}.idx: version {version}"
    code = idx[17]
    assert code in SPEC_DTYPES, f"{prefix}.idx: dtype code {code}"
    (s,) = struct.unpack_from("<Q", idx, 18)
    (d,) = struct.unpack_from("<Q", idx, 26)
    want = 34 + 12 * s + 8 * d
    assert len(idx) == want, f"{prefix}.idx: {len(idx)} bytes, the layout says 34 + 12*{s} + 8*{d} = {want}"
    lengths = np.frombuffer(idx, dtype="<i4", count=s, offset=34)
    pointers = np.frombuffer(idx, dtype="<i8", count=s, offset=34 + 4 * s)
    doc_idx = np.frombuffer(idx, dtype="<i8", count=d, offset=34 + 12 * s)
    dt = np.dtype(SPEC_DTYPES[code])
    assert (lengths >= 0).all(), f"{prefix}.idx: negative sequence length"
    # "one sequence after another, no header, no padding between sequences"
    expect_ptr = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) * dt.itemsize if s else np.zeros(0, np.int64)
    assert np.array_equal(pointers, expect_ptr), f"{prefix}.idx: sequence_pointers are not the running byte offsets"
    # "0, then for each document the index of the sequence after its last one"
    assert d >= 1 and doc_idx[0] == 0 and doc_idx[-1] == s, f"{prefix}.idx: document_indices {doc_idx[:3]}..{doc_idx[-3:]}"
    assert (np.diff(doc_idx) >= 0).all(), f"{prefix}.idx: document_indices decrease"
    bin_ = np.fromfile(prefix + ".bin", dtype=dt)
    assert os.path.getsize(prefix + ".bin") == int(lengths.sum()) * dt.itemsize, f"{prefix}.bin: size"
    seqs = [bin_[p // dt.itemsize : p // dt.itemsize + n] for p, n in zip(pointers.tolist(), lengths.tolist())]
    return {
        "dtype": SPEC_NAMES[code],
        "dtype_code": code,
        "sequence_count": s,
        "document_count": d,
        "sequence_lengths": lengths,
        "sequence_pointers": pointers,
        "document_indices": doc_idx,
        "sequences": seqs,
    }


# ---------------------------------------------------------------------------------------------
# megatron-core


def import_megatron():
    # megatron.core's package __init__ imports its optimizer / FSDP code, which warns that
    # Transformer Engine and Apex are missing. Neither is needed to read datasets.
    warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    return IndexedDataset, IndexedDatasetBuilder


def u32_sha256(a):
    a = np.asarray(a)
    assert a.size == 0 or (a.min() >= 0 and a.max() <= 0xFFFFFFFF), "ids outside uint32"
    return hashlib.sha256(a.astype("<u4").tobytes()).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def display_path(prefix):
    a = os.path.abspath(prefix)
    rel = os.path.relpath(a, REPO)
    return a if rel.startswith("..") else rel


def record(IndexedDataset, prefix):
    ds = IndexedDataset(prefix)  # mmap=True, multimodal=False: the defaults
    n = len(ds)
    lengths = np.asarray(ds.sequence_lengths)
    doc_idx = np.asarray(ds.document_indices)
    dtype = np.dtype(ds.index.dtype)
    seq_sha = []
    for i in range(n):
        x = ds[i]
        assert x.dtype == dtype and x.shape == (int(lengths[i]),), (i, x.dtype, x.shape)
        seq_sha.append(u32_sha256(x))
    gets = []
    for i in sorted({0, n // 2, n - 1} if n else set()):
        ln = int(lengths[i])
        off = ln // 3
        cnt = min(5, ln - off)
        got = ds.get(i, off, cnt)
        assert np.array_equal(got, ds[i][off : off + cnt]), (i, off, cnt)
        gets.append({"idx": i, "offset": off, "length": cnt, "ids": [int(v) for v in got]})
    bin_bytes = os.path.getsize(prefix + ".bin")
    want = int(lengths.astype(np.int64).sum()) * dtype.itemsize
    assert bin_bytes == want, f"{prefix}.bin: {bin_bytes} bytes, sum(lengths) * itemsize = {want}"
    rec = {
        "dtype": dtype.name,
        "len": n,
        "documents": int(len(doc_idx) - 1),
        "tokens": int(lengths.astype(np.int64).sum()),
        "sequence_lengths": [int(v) for v in lengths],
        "document_indices": [int(v) for v in doc_idx],
        "sequence_sha256": seq_sha,
        "get": gets,
        "bin_bytes": bin_bytes,
        "idx_bytes": os.path.getsize(prefix + ".idx"),
        "bin_sha256": sha256_file(prefix + ".bin"),
        "idx_sha256": sha256_file(prefix + ".idx"),
    }
    return ds, rec


def self_check(ds, prefix):
    sp = spec_read(prefix)
    assert sp["dtype"] == np.dtype(ds.index.dtype).name, (sp["dtype"], ds.index.dtype)
    assert sp["sequence_count"] == len(ds) == ds.index.sequence_count
    assert sp["document_count"] == ds.index.document_count == len(ds.document_indices)
    assert np.array_equal(sp["sequence_lengths"], ds.sequence_lengths)
    assert np.array_equal(sp["sequence_pointers"], ds.index.sequence_pointers)
    assert np.array_equal(sp["document_indices"], ds.document_indices)
    for i, x in enumerate(sp["sequences"]):
        assert np.array_equal(x, ds[i]), f"{prefix}: sequence {i} differs"
    return sp


def build_reference(IndexedDatasetBuilder, out_dir):
    """Two small datasets written by megatron-core itself. Deterministic."""
    import torch

    os.makedirs(out_dir, exist_ok=True)
    prefixes = []
    for name, dtype, top in (("uint16", np.uint16, 65535), ("int32", np.int32, 2**31 - 1)):
        prefix = os.path.join(out_dir, f"megatron_ref_{name}")
        b = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
        rng = np.random.default_rng(0)
        # Document 0: three sequences via add_item + end_document, one of them empty.
        for seq in ([1, 2, 3, 4], [], [top, 0, top - 1]):
            b.add_item(torch.tensor(seq, dtype=torch.int64))
        b.end_document()
        # Documents 1-3: add_document with several sequences each.
        for n_seq in (1, 4, 2):
            lens = [int(v) for v in rng.integers(1, 40, size=n_seq)]
            ids = rng.integers(0, top, size=sum(lens), endpoint=True)
            b.add_document(torch.tensor(ids, dtype=torch.int64), lens)
        # Document 4: no sequences at all (document_indices repeats a value).
        b.end_document()
        # Document 5: one long sequence.
        b.add_item(torch.tensor(rng.integers(0, top, size=1000, endpoint=True), dtype=torch.int64))
        b.end_document()
        b.finalize(prefix + ".idx")
        prefixes.append(prefix)
        print(f"built {prefix}.idx/.bin with megatron-core's IndexedDatasetBuilder (dtype {name})", flush=True)
    return prefixes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="golden JSON to write")
    ap.add_argument("--self-check", action="store_true", help="also parse every dataset by the spec and compare")
    ap.add_argument("--build-reference", metavar="DIR", default="", help="write megatron-built test datasets to DIR and include them")
    ap.add_argument("prefixes", nargs="*", metavar="PREFIX")
    args = ap.parse_args()

    IndexedDataset, IndexedDatasetBuilder = import_megatron()
    prefixes = list(args.prefixes)
    if args.build_reference:
        prefixes += build_reference(IndexedDatasetBuilder, args.build_reference)
    if not prefixes:
        ap.error("no PREFIX given (and no --build-reference)")

    golden = {"megatron_core": importlib_metadata.version("megatron-core"), "datasets": {}}
    for prefix in prefixes:
        for suf in (".idx", ".bin"):
            if not os.path.exists(prefix + suf):
                raise SystemExit(f"{prefix}{suf} does not exist (give the prefix, without .idx/.bin)")
        ds, rec = record(IndexedDataset, prefix)
        key = display_path(prefix)
        if key in golden["datasets"]:
            raise SystemExit(f"prefix given twice: {key}")
        golden["datasets"][key] = rec
        msg = (
            f"{key}: {rec['dtype']}, {rec['len']} sequences, {rec['documents']} documents, {rec['tokens']} tokens, "
            f".bin {rec['bin_bytes']} bytes"
        )
        if args.self_check:
            self_check(ds, prefix)
            msg += "; spec reader agrees with megatron-core"
        print(msg, flush=True)
        del ds

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        json.dump(golden, f, sort_keys=True, indent=1)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} (megatron-core {golden['megatron_core']}, {len(golden['datasets'])} datasets)", flush=True)


if __name__ == "__main__":
    main()
