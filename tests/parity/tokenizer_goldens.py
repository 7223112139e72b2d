#!/usr/bin/env python3
"""Goldens for grist's default "bpe" tokenizer: Hugging Face `tokenizers` trained in Python, and
the ids of every web_en document under grist's trained tokenizer.

Runs in the tokens venv (tests/parity/tokens_venv.sh builds it; tokenizers == the Rust crate's
0.23.2). From the repo root:

    ~/.cache/grist/tokens-venv/bin/python tests/parity/tokenizer_goldens.py
        [--out-dir DIR] [--versions PATH|''] [--grist PATH]

What it does, deterministically:

a. Trains the BPE tokenizer below (GPT-4 split regex + byte-level, the build grist uses for
   `tokenizer train`, default kind "bpe") on the `text` of every record of
   web_en/c4_sample/c4_sample_docs000-799.jsonl.gz, in file order (800 docs), with VOCAB_SIZE,
   MIN_FREQUENCY and SPECIALS. It trains twice and requires identical JSON, then writes
   DIR/tokenizer_c4_bpe_python.json (the golden).
b. Runs `grist tokenizer train` with the same settings into DIR/tokenizer_c4_bpe.json and checks
   that its model.vocab and model.merges equal Python's (prints the first difference; exit status
   1 at the end if they differ). The binary is --grist, else $GRIST, else
   $CARGO_TARGET_DIR/release/grist, else target/release/grist. Without a usable binary it keeps an
   existing DIR/tokenizer_c4_bpe.json, and when there is none it copies Python's file there as a
   STAND-IN (loud warning; never commit that).
c. Loads DIR/tokenizer_c4_bpe.json with `tokenizers.Tokenizer.from_file` and with
   `transformers.PreTrainedTokenizerFast(tokenizer_file=...)`, encodes every web_en document (the
   order and ids of datatrove_goldens.py's `iter_documents()`; empty texts are skipped, as there)
   with `encode_batch(texts, add_special_tokens=False)`, requires transformers'
   `tok(text, add_special_tokens=False)["input_ids"]` to agree on every document, and writes
   DIR/tokenizer_c4_bpe_ids.jsonl.gz, one line per document:
       {"id": "<source>/<file>/<record>/<field>", "tokens": n,
        "sha256": <hex sha256 of the ids as little-endian uint32>, "head": <first 16 ids>}
   It also checks decode(encode(text)) == text (skip_special_tokens=False) with both libraries
   and prints the failures.
d. Refreshes the "tokenizers" block at the end of DIR/../VERSIONS.txt (--versions).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# datatrove_goldens has no side effects on import (main() is guarded); it needs only numpy.
from datatrove_goldens import DATA, iter_documents, sha256_file  # noqa: E402

import numpy as np  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

REPO = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "parity")
C4 = os.path.join(DATA, "web_en", "c4_sample", "c4_sample_docs000-799.jsonl.gz")

VOCAB_SIZE = 2048
MIN_FREQUENCY = 2
SPECIALS = ["<|endoftext|>", "<|pad|>"]
PYTHON_NAME = "tokenizer_c4_bpe_python.json"
GRIST_NAME = "tokenizer_c4_bpe.json"
IDS_NAME = "tokenizer_c4_bpe_ids.jsonl.gz"
HEAD = 16

# GPT-4's (cl100k) pre-tokenisation regex, as grist uses it.
GPT4_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

VERSIONS_BEGIN = "# --- tokenizers BPE (tests/parity/tokenizer_goldens.py) ---"
VERSIONS_END = "# --- end tokenizers BPE ---"


def build_and_train(texts):
    """grist's default "bpe" tokenizer, trained on `texts` (one sequence per text)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(GPT4_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=MIN_FREQUENCY,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def c4_texts():
    texts = []
    with gzip.open(C4, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
    return texts


def write_atomic(path, data: bytes):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# b. grist


def find_grist(explicit):
    cands = []
    if explicit:
        cands.append(("--grist", explicit))
    elif os.environ.get("GRIST"):
        cands.append(("$GRIST", os.environ["GRIST"]))
    else:
        if os.environ.get("CARGO_TARGET_DIR"):
            cands.append(("$CARGO_TARGET_DIR", os.path.join(os.environ["CARGO_TARGET_DIR"], "release", "grist")))
        cands.append(("target/release", os.path.join(REPO, "target", "release", "grist")))
    for how, path in cands:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            print(f"grist: {path} ({how}) is not an executable file", flush=True)
            continue
        r = subprocess.run([path, "tokenizer", "train", "--help"], capture_output=True, text=True)
        if r.returncode != 0:
            print(
                f"grist: `{path} tokenizer train --help` failed (exit {r.returncode}): "
                f"{(r.stderr or r.stdout).strip()[:500]}",
                flush=True,
            )
            continue
        return path
    return None


def grist_version(path):
    try:
        r = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 else "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def norm_merges(merges):
    """tokenizers >= 0.20 saves merges as [a, b] pairs; older files use "a b" strings."""
    out = []
    for m in merges:
        if isinstance(m, str):
            a, sep, b = m.partition(" ")
            out.append((a, b))
        else:
            out.append(tuple(m))
    return out


def first_vocab_difference(a, b):
    """a, b: token -> id. Returns a message or None."""
    if a == b:
        return None
    ia = {i: t for t, i in a.items()}
    ib = {i: t for t, i in b.items()}
    for i in sorted(set(ia) | set(ib)):
        if ia.get(i) != ib.get(i):
            return f"vocab sizes {len(a)} (python) vs {len(b)} (grist); first id that differs: {i}: python {ia.get(i)!r} vs grist {ib.get(i)!r}"
    return f"vocab sizes {len(a)} (python) vs {len(b)} (grist); same id->token map but the dicts differ"


def first_merges_difference(a, b):
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"merges {len(a)} (python) vs {len(b)} (grist); first difference at merge {i}: python {x!r} vs grist {y!r}"
    return f"merges {len(a)} (python) vs {len(b)} (grist); one is a prefix of the other (first extra at {min(len(a), len(b))})"


def other_differences(py, gr, path=""):
    """Informational: where the two tokenizer JSONs differ outside model.vocab / model.merges."""
    out = []
    if isinstance(py, dict) and isinstance(gr, dict):
        for k in sorted(set(py) | set(gr)):
            p = f"{path}.{k}" if path else k
            if p in ("model.vocab", "model.merges"):
                continue
            if k not in py or k not in gr:
                out.append(f"{p}: python {py.get(k, '<absent>')!r} vs grist {gr.get(k, '<absent>')!r}")
            else:
                out += other_differences(py[k], gr[k], p)
    elif isinstance(py, list) and isinstance(gr, list) and len(py) == len(gr):
        for i, (x, y) in enumerate(zip(py, gr)):
            out += other_differences(x, y, f"{path}[{i}]")
    elif py != gr:
        out.append(f"{path}: python {json.dumps(py)[:200]} vs grist {json.dumps(gr)[:200]}")
    return out


def compare_with_python(py_path, gr_path):
    """Returns (ok, messages)."""
    with open(py_path, encoding="utf-8") as f:
        py = json.load(f)
    with open(gr_path, encoding="utf-8") as f:
        gr = json.load(f)
    msgs = []
    dv = first_vocab_difference(py["model"]["vocab"], gr["model"]["vocab"])
    dm = first_merges_difference(norm_merges(py["model"]["merges"]), norm_merges(gr["model"]["merges"]))
    for d in (dv, dm):
        if d:
            msgs.append("MISMATCH " + d)
    for d in other_differences(py, gr):
        msgs.append("note (outside vocab/merges): " + d)
    return dv is None and dm is None, msgs


# ---------------------------------------------------------------------------------------------
# c. ids


def ids_sha256(ids):
    return hashlib.sha256(np.asarray(ids, dtype="<u4").tobytes()).hexdigest()


def ver(p):
    try:
        return importlib_metadata.version(p)
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=FIXTURES, help="where the three fixture files go (default %(default)s)")
    ap.add_argument("--versions", default=None, help="VERSIONS.txt to refresh; '' to skip (default OUT_DIR/VERSIONS.txt)")
    ap.add_argument("--grist", default="", help="grist binary (default $GRIST, $CARGO_TARGET_DIR/release/grist, target/release/grist)")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out_dir)
    versions = os.path.join(out_dir, "VERSIONS.txt") if args.versions is None else args.versions
    os.makedirs(out_dir, exist_ok=True)
    py_path = os.path.join(out_dir, PYTHON_NAME)
    gr_path = os.path.join(out_dir, GRIST_NAME)
    ids_path = os.path.join(out_dir, IDS_NAME)
    failures = []

    # a. Python training (twice: the trainer must be deterministic for a golden to mean anything).
    c4 = c4_texts()
    c4_bytes = sum(len(t.encode("utf-8")) for t in c4)
    t0 = time.time()
    tok = build_and_train(c4)
    t_train = time.time() - t0
    py_json = tok.to_str(pretty=True)
    if build_and_train(c4).to_str(pretty=True) != py_json:
        raise SystemExit("tokenizers' BpeTrainer gave two different tokenizers on the same input")
    write_atomic(py_path, py_json.encode("utf-8"))
    py_model = json.loads(py_json)["model"]
    print(
        f"a. trained on {len(c4)} c4 docs ({c4_bytes} bytes) in {t_train:.1f} s (twice, identical): "
        f"vocab {tok.get_vocab_size()} merges {len(py_model['merges'])} -> {py_path} "
        f"(sha256 {sha256_file(py_path)})",
        flush=True,
    )

    # b. grist
    grist = find_grist(args.grist)
    grist_ver = "none"
    if grist:
        grist_ver = grist_version(grist)
        cmd = [
            grist, "tokenizer", "train", "--input", C4, "--output", gr_path,
            "--vocab-size", str(VOCAB_SIZE), "--min-frequency", str(MIN_FREQUENCY),
            "--special-tokens", ",".join(SPECIALS),
        ]  # fmt: skip
        print("b. running: " + shlex.join(cmd), flush=True)
        t0 = time.time()
        r = subprocess.run(cmd)
        if r.returncode != 0:
            raise SystemExit(f"grist tokenizer train failed with exit status {r.returncode}")
        print(f"b. grist ({grist_ver}) trained in {time.time() - t0:.1f} s", flush=True)
        shutil.rmtree(gr_path + ".work", ignore_errors=True)  # the run's state, not a fixture
        tokenizer_source = f"grist ({grist_ver})"
    elif os.path.exists(gr_path):
        same = sha256_file(gr_path) == sha256_file(py_path)
        print(
            f"b. no usable grist binary: using the existing {gr_path}"
            + (" (byte-identical to Python's file: a stand-in copy, or grist saves identically)" if same else ""),
            flush=True,
        )
        tokenizer_source = "existing file" + (" (byte-identical to Python's)" if same else "")
    else:
        shutil.copyfile(py_path, gr_path)
        bar = "!" * 100
        print(
            f"{bar}\n!! b. NO grist binary and no {GRIST_NAME}: copied PYTHON's tokenizer there as a STAND-IN.\n"
            f"!!    {IDS_NAME} below is then Python's, not grist's. For testing only: DO NOT COMMIT these files.\n{bar}",
            flush=True,
        )
        tokenizer_source = "STAND-IN copy of the Python tokenizer (not grist's output)"
    same_model, msgs = compare_with_python(py_path, gr_path)
    for m in msgs:
        print("b. " + m, flush=True)
    print(f"b. {GRIST_NAME} vs Python: model.vocab and model.merges {'EQUAL' if same_model else 'DIFFER'}", flush=True)
    if not same_model:
        failures.append("grist's vocab/merges differ from Python's")

    # c. ids of every web_en document under DIR/tokenizer_c4_bpe.json
    from transformers import PreTrainedTokenizerFast

    gtok = Tokenizer.from_file(gr_path)
    # grist encodes a special token's text inside a document as text (as tiktoken's
    # encode_ordinary), so a page holding "<|endoftext|>" cannot end a document early.
    gtok.encode_special_tokens = True
    hf = PreTrainedTokenizerFast(tokenizer_file=gr_path, split_special_tokens=True)
    docs, skipped = [], 0
    for source, fname, rec, field, text in iter_documents():
        if not text:  # datatrove_goldens.py / fasttext_goldens.py skip these too (one empty trafilatura_text)
            skipped += 1
            continue
        docs.append((f"{source}/{fname}/{rec}/{field}", text))
    texts = [t for _, t in docs]
    t0 = time.time()
    encs = gtok.encode_batch(texts, add_special_tokens=False)
    t_enc = time.time() - t0
    all_ids = [e.ids for e in encs]
    t0 = time.time()
    hf_mismatch = []
    for (doc_id, text), ids in zip(docs, all_ids):
        hf_ids = hf(text, add_special_tokens=False)["input_ids"]
        if hf_ids != ids:
            hf_mismatch.append(doc_id)
            if len(hf_mismatch) <= 5:
                k = next((i for i, (x, y) in enumerate(zip(ids, hf_ids)) if x != y), min(len(ids), len(hf_ids)))
                print(f"c. MISMATCH transformers vs tokenizers on {doc_id}: lengths {len(hf_ids)} vs {len(ids)}, first at {k}", flush=True)
    t_hf = time.time() - t0
    print(
        f"c. encoded {len(docs)} docs (skipped {skipped} empty) in {t_enc:.1f} s (encode_batch), "
        f"transformers per-doc {t_hf:.1f} s: {len(docs) - len(hf_mismatch)} identical, {len(hf_mismatch)} differ",
        flush=True,
    )
    if hf_mismatch:
        failures.append(f"transformers and tokenizers disagree on {len(hf_mismatch)} documents")

    # Round trips. skip_special_tokens=False: a text that contains "<|endoftext|>" is encoded to the
    # special id (added tokens are matched even with add_special_tokens=False) and must decode back.
    rt_fail, rt_exc, hf_rt_fail = [], [], []
    special_docs = 0
    special_ids = {gtok.token_to_id(s) for s in SPECIALS}
    decoded = gtok.decode_batch(all_ids, skip_special_tokens=False)
    for (doc_id, text), ids, dec in zip(docs, all_ids, decoded):
        special_docs += any(i in special_ids for i in ids)
        if dec != text:
            rt_fail.append(doc_id)
        try:
            if hf.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) != text:
                hf_rt_fail.append(doc_id)
        except Exception as e:  # noqa: BLE001
            rt_exc.append(f"{doc_id}: {type(e).__name__}: {e}")
    for what, xs in (("tokenizers decode", rt_fail), ("transformers decode", hf_rt_fail), ("decode exception", rt_exc)):
        for x in xs[:5]:
            print(f"c. round-trip failure ({what}): {x}", flush=True)
    print(
        f"c. round trip decode(encode(text)) == text: tokenizers {len(docs) - len(rt_fail)}/{len(docs)}, "
        f"transformers {len(docs) - len(hf_rt_fail) - len(rt_exc)}/{len(docs)}, exceptions {len(rt_exc)}; "
        f"docs containing a special token: {special_docs}",
        flush=True,
    )
    if rt_fail or hf_rt_fail or rt_exc:
        failures.append(f"round trip failed on {len(rt_fail)} (tokenizers) / {len(hf_rt_fail)} (transformers) docs, {len(rt_exc)} exceptions")

    raw = io.BytesIO()
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)
    out = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
    total = 0
    for (doc_id, _), ids in zip(docs, all_ids):
        total += len(ids)
        out.write(json.dumps({"id": doc_id, "tokens": len(ids), "sha256": ids_sha256(ids), "head": ids[:HEAD]}) + "\n")
    out.close()
    write_atomic(ids_path, raw.getvalue())
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    stats = f"documents={len(docs)} skipped_empty={skipped} tokens={total} text_bytes={text_bytes} bytes_per_token={text_bytes / total:.4f}"
    print(f"c. {ids_path}: {stats} sha256 {sha256_file(ids_path)}", flush=True)

    # d. VERSIONS.txt
    if versions:
        refresh_versions(
            versions,
            [
                f"tokenizers python=={platform.python_version()} tokenizers=={ver('tokenizers')} transformers=={ver('transformers')}"
                f" tiktoken=={ver('tiktoken')} numpy=={ver('numpy')} venv=~/.cache/grist/tokens-venv",
                f"tokenizers train bpe vocab_size={VOCAB_SIZE} min_frequency={MIN_FREQUENCY} special_tokens={','.join(SPECIALS)}"
                f" input={os.path.relpath(C4, DATA)} sha256={sha256_file(C4)} docs={len(c4)} text_bytes={c4_bytes}",
                f"tokenizers golden={PYTHON_NAME} sha256={sha256_file(py_path)} vocab={tok.get_vocab_size()}"
                f" merges={len(py_model['merges'])} (trained twice, identical)",
                f"tokenizers tokenizer={GRIST_NAME} sha256={sha256_file(gr_path)} from={tokenizer_source}"
                f" vocab_merges_equal_python={same_model}",
                f"tokenizers golden={IDS_NAME} {stats} transformers_identical={len(docs) - len(hf_mismatch)}"
                f" roundtrip_failures={len(rt_fail)}/{len(hf_rt_fail)}/{len(rt_exc)}",
            ],
        )
        print(f"d. refreshed the tokenizers block of {versions}", flush=True)

    if failures:
        print("FAILED: " + "; ".join(failures), flush=True)
        sys.exit(1)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
