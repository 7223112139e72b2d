#!/usr/bin/env python3
"""Benchmark: `grist tokenizer train` / `grist tokenizer encode` vs Hugging Face `tokenizers` and tiktoken.

Corpus: one JSON Lines file (field `text`) of every non-empty web_en document text of
../shared/data (wceb2026 raw and trafilatura text, C4 sample, dolma fixtures: the 2,429 documents of
the parity goldens), the non-empty lines of WikiText-2 (valid + test) and tinyshakespeare split on
blank lines; the whole list is repeated --scale times (default: enough for --target-mb, 100 MB).
--quick takes an evenly spaced subset of about 4 MB instead.

Training (same corpus file, same thread count, each a cold subprocess, wall time and peak RSS of the
child from os.wait4):
  peer   Python `tokenizers` 0.23.2, `Tokenizer.train_from_iterator` over the JSON Lines read lazily
         with json.loads (byte-level BPE, GPT-4 split regex, ByteLevel alphabet; see peer_train),
         threads through RAYON_NUM_THREADS;
  grist  `grist tokenizer train --input CORPUS --output grist-tokenizer.json --vocab-size V
         --min-frequency F --special-tokens '<|endoftext|>,<|pad|>' -j T` (its `.work/` removed
         before each run).
The two tokenizer.json files must have the same vocabulary and merges (reported).

Encoding (the tokenizer trained by the peer, the reference, unless --encode-with grist):
  grist     `grist tokenizer encode TOKENIZER --input CORPUS --output DIR -j T`: whole command
            (reading JSON Lines, encoding, writing DIR/tokens.idx/.bin);
  tokenizers `Tokenizer.encode_batch(texts, add_special_tokens=False)` on the texts in memory: only
            the call is timed (loading the texts and the tokenizer excluded);
  tiktoken  `tiktoken.Encoding` built from the same vocabulary (byte-level strings mapped back to
            bytes through GPT-2's bytes_to_unicode table, special tokens apart) and
            `encode_ordinary_batch(texts, num_threads=T)`: only the call is timed.
Ids: grist's dataset is read back with numpy (layout: schemas/packed-format.md) and every document
must be the tokenizers ids followed by the EOS id (`<|endoftext|>`); the documents where tiktoken's
ids differ from tokenizers' are counted and reported (HF BPE merges by pair rank, tiktoken by
merged-token rank: rare differences are possible and do not fail the run).

Peak RSS is the child's ru_maxrss (os.wait4); for the Python encoders it is the whole process: the
texts in memory, the results, and the flat id arrays kept for the check.
With fewer threads than cores every subprocess is pinned to cores 0..T-1 with taskset.
Exit status 1 when grist's ids or vocabulary/merges differ from the peer's (after printing).

Usage (from the repository root, after `cargo build --release`; the peers need a Python with
tokenizers==0.23.2, tiktoken and numpy: tests/parity/tokens_venv.sh makes ~/.cache/grist/tokens-venv):
  python3 tests/bench/tokenizer_speed.py [--threads 2] [--vocab-size 32000] [--json out.json]
  python3 tests/bench/tokenizer_speed.py --quick --peers-only      # no grist binary needed
The grist binary: --grist, else $GRIST, else $CARGO_TARGET_DIR/release/grist, else target/release/grist.
The driver itself needs only the standard library; prints a markdown table (RESULTS.md style).
"""

import argparse
import gzip
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("GRIST_PARITY_DATA", REPO.parent / "shared" / "data"))
GPT4_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIALS = ["<|endoftext|>", "<|pad|>"]
EOS = "<|endoftext|>"
MEGATRON_MAGIC = b"MMIDIDX\x00\x00"
# Megatron's dtype codes (schemas/packed-format.md).
DTYPE_CODES = {1: "<u1", 2: "<i1", 3: "<i2", 4: "<i4", 5: "<i8", 6: "<f8", 7: "<f4", 8: "<u2"}


# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------

def web_en_documents():
    """Every non-empty web_en text, in the order of tests/parity/datatrove_goldens.py."""
    sources = [
        ("web_en/wceb2026_pages/pages_first800.jsonl.gz", ["raw_text", "trafilatura_text"]),
        ("web_en/c4_sample/c4_sample_docs000-799.jsonl.gz", ["text"]),
    ]
    sources += [(str(p.relative_to(DATA)), ["text"])
                for p in sorted((DATA / "web_en/dolma_fixtures").glob("multiple_files__cc_en_head-*.jsonl.gz"))]
    sources.append(("web_en/dolma_fixtures/provided__documents__000.json.gz", ["text"]))
    for path, fields in sources:
        with gzip.open(DATA / path, "rt", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                d = json.loads(line)
                for field in fields:
                    if d.get(field):
                        yield d[field]


def base_documents():
    docs = list(web_en_documents())
    for name in ["valid.txt", "test.txt"]:
        for line in (DATA / "wikitext2" / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                docs.append(line.strip())
    for para in (DATA / "tinyshakespeare/input.txt").read_text(encoding="utf-8").split("\n\n"):
        if para.strip():
            docs.append(para.strip())
    return docs


def build_corpus(path, target_mb, scale):
    """Writes the corpus; returns its description."""
    docs = base_documents()
    base_bytes = sum(len(t.encode()) for t in docs)
    subset_step = 1
    if scale is None:
        if target_mb * 1e6 < base_bytes:
            subset_step = max(1, round(base_bytes / (target_mb * 1e6)))
            docs = docs[::subset_step]
            scale = 1
        else:
            scale = max(1, round(target_mb * 1e6 / base_bytes))
    lines = [json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in docs]
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(scale):
            f.writelines(lines)
    text_bytes = sum(len(t.encode()) for t in docs) * scale
    return {
        "path": str(path),
        "documents": len(docs) * scale,
        "distinct_documents": len(docs),
        "scale": scale,
        "subset_every": subset_step,
        "text_bytes": text_bytes,
        "text_mb": round(text_bytes / 1e6, 2),
        "file_mb": round(os.path.getsize(path) / 1e6, 2),
    }


# ---------------------------------------------------------------------------------------------
# Peers (run in a subprocess by the peers' Python: `tokenizer_speed.py _peer KIND ...`)
# ---------------------------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's table: byte -> the printable character byte-level BPE writes for it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def read_texts(corpus):
    with open(corpus, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def peer_train(corpus, output, vocab_size, min_frequency):
    start = time.perf_counter()
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size), min_frequency=int(min_frequency), special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )

    def texts():
        with open(corpus, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)["text"]

    t0 = time.perf_counter()
    tok.train_from_iterator(texts(), trainer=trainer)
    train_s = time.perf_counter() - t0
    tok.save(output)
    print(json.dumps({"train_call_s": train_s, "in_process_s": time.perf_counter() - start}))


def _save_ids(prefix, id_lists):
    import numpy as np

    lens = np.fromiter((len(x) for x in id_lists), dtype=np.int64, count=len(id_lists))
    flat = np.fromiter((i for x in id_lists for i in x), dtype=np.int64, count=int(lens.sum()))
    np.save(prefix + ".lens.npy", lens)
    np.save(prefix + ".ids.npy", flat)
    return int(lens.sum())


def peer_encode_hf(tokenizer_json, corpus, out_prefix, repeat):
    from tokenizers import Tokenizer

    texts = read_texts(corpus)
    tok = Tokenizer.from_file(tokenizer_json)
    best = float("inf")
    encs = None
    for _ in range(int(repeat)):
        encs = None
        t0 = time.perf_counter()
        encs = tok.encode_batch(texts, add_special_tokens=False)
        best = min(best, time.perf_counter() - t0)
    tokens = _save_ids(out_prefix, [e.ids for e in encs])
    print(json.dumps({"encode_s": best, "tokens": tokens}))


def tiktoken_encoding(tokenizer_json):
    import tiktoken

    spec = json.load(open(tokenizer_json, encoding="utf-8"))
    specials = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(byte_of[c] for c in token): i
             for token, i in spec["model"]["vocab"].items() if token not in specials}
    return tiktoken.Encoding(name="grist", pat_str=GPT4_SPLIT, mergeable_ranks=ranks, special_tokens=specials)


def peer_encode_tiktoken(tokenizer_json, corpus, out_prefix, repeat, threads):
    texts = read_texts(corpus)
    t0 = time.perf_counter()
    enc = tiktoken_encoding(tokenizer_json)
    build_s = time.perf_counter() - t0
    best = float("inf")
    out = None
    for _ in range(int(repeat)):
        out = None
        t0 = time.perf_counter()
        out = enc.encode_ordinary_batch(texts, num_threads=int(threads))
        best = min(best, time.perf_counter() - t0)
    tokens = _save_ids(out_prefix, out)
    print(json.dumps({"encode_s": best, "build_s": build_s, "tokens": tokens}))


def read_megatron(prefix):
    """Reads PREFIX.idx/.bin (schemas/packed-format.md), checking the layout; returns (lengths, tokens)."""
    import numpy as np

    idx = Path(prefix + ".idx").read_bytes()
    if idx[:9] != MEGATRON_MAGIC:
        raise ValueError(f"{prefix}.idx: bad magic {idx[:9]!r}")
    (version,) = struct.unpack_from("<Q", idx, 9)
    code = idx[17]
    s, d = struct.unpack_from("<QQ", idx, 18)
    if version != 1 or code not in DTYPE_CODES:
        raise ValueError(f"{prefix}.idx: version {version}, dtype code {code}")
    if len(idx) != 34 + 12 * s + 8 * d:
        raise ValueError(f"{prefix}.idx: {len(idx)} bytes, expected {34 + 12 * s + 8 * d} for S={s} D={d}")
    lengths = np.frombuffer(idx, "<i4", s, 34).astype(np.int64)
    pointers = np.frombuffer(idx, "<i8", s, 34 + 4 * s)
    doc_indices = np.frombuffer(idx, "<i8", d, 34 + 12 * s)
    dtype = np.dtype(DTYPE_CODES[code])
    tokens = np.fromfile(prefix + ".bin", dtype=dtype)
    expected_pointers = np.concatenate([[0], np.cumsum(lengths)[:-1]]) * dtype.itemsize if s else lengths
    problems = []
    if not np.array_equal(pointers, expected_pointers):
        problems.append("sequence_pointers are not the running byte offsets")
    if not np.array_equal(doc_indices, np.arange(s + 1)):
        problems.append("document_indices are not 0..S (one sequence per document)")
    if tokens.size != lengths.sum():
        problems.append(f".bin holds {tokens.size} tokens, the lengths sum to {lengths.sum()}")
    return {"lengths": lengths, "tokens": tokens.astype(np.int64), "dtype": dtype.name, "dtype_code": code,
            "problems": problems}


def write_megatron(prefix, lens, flat, vocab_size):
    """Writes a one-sequence-per-document dataset the way grist's encoder should (for the self-check)."""
    import numpy as np

    dtype, code = (np.dtype("<u2"), 8) if vocab_size < 65500 else (np.dtype("<i4"), 4)
    s = len(lens)
    pointers = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype("<i8") * dtype.itemsize
    with open(prefix + ".idx", "wb") as f:
        f.write(MEGATRON_MAGIC + struct.pack("<Q", 1) + bytes([code]) + struct.pack("<QQ", s, s + 1))
        f.write(np.asarray(lens, "<i4").tobytes() + pointers.tobytes() + np.arange(s + 1, dtype="<i8").tobytes())
    np.asarray(flat).astype(dtype).tofile(prefix + ".bin")


def differing_documents(lens_a, flat_a, lens_b, flat_b):
    """Number of documents whose id sequences differ, and the first such document."""
    import numpy as np

    if len(lens_a) != len(lens_b):
        return None, None
    if np.array_equal(lens_a, lens_b) and np.array_equal(flat_a, flat_b):
        return 0, None
    ends_a, ends_b = np.cumsum(lens_a), np.cumsum(lens_b)
    if np.array_equal(lens_a, lens_b):
        positions = np.nonzero(flat_a != flat_b)[0]
        docs = np.unique(np.searchsorted(ends_a, positions, side="right"))
        return int(docs.size), int(docs[0])
    count, first = 0, None
    for i in range(len(lens_a)):
        a = flat_a[ends_a[i] - lens_a[i]:ends_a[i]]
        b = flat_b[ends_b[i] - lens_b[i]:ends_b[i]]
        if not np.array_equal(a, b):
            count += 1
            first = i if first is None else first
    return count, first


def with_eos(lens, flat, eos):
    import numpy as np

    return lens + 1, np.insert(flat, np.cumsum(lens), eos)


def peer_verify(args_json):
    """Compares grist's dataset (or, for --self-check, Python-written ones) with the peers' ids."""
    import numpy as np

    a = json.loads(args_json)
    hf_lens, hf_ids = np.load(a["hf"] + ".lens.npy"), np.load(a["hf"] + ".ids.npy")
    tt_lens, tt_ids = np.load(a["tt"] + ".lens.npy"), np.load(a["tt"] + ".ids.npy")
    exp_lens, exp_ids = with_eos(hf_lens, hf_ids, a["eos"])
    out = {}
    n, first = differing_documents(hf_lens, hf_ids, tt_lens, tt_ids)
    out["tiktoken_vs_tokenizers"] = {"documents": int(len(hf_lens)), "differing": n, "first_differing": first}

    def check(prefix):
        ds = read_megatron(prefix)
        want_dtype = "uint16" if a["vocab_size"] < 65500 else "int32"
        problems = list(ds["problems"])
        if ds["dtype"] != want_dtype:
            problems.append(f"dtype {ds['dtype']}, expected {want_dtype} for a vocabulary of {a['vocab_size']}")
        if len(ds["lengths"]) != len(exp_lens):
            problems.append(f"{len(ds['lengths'])} sequences, expected {len(exp_lens)} documents")
            return {"problems": problems, "differing_from_tokenizers": None}
        eos_last = bool(np.all(ds["tokens"][np.cumsum(ds["lengths"]) - 1] == a["eos"])) if len(exp_lens) else True
        if not eos_last:
            problems.append("not every document ends with the EOS id")
        n, first = differing_documents(exp_lens, exp_ids, ds["lengths"], ds["tokens"])
        m, _ = differing_documents(*with_eos(tt_lens, tt_ids, a["eos"]), ds["lengths"], ds["tokens"])
        return {"problems": problems, "dtype": ds["dtype"], "documents": int(len(ds["lengths"])),
                "tokens_with_eos": int(ds["lengths"].sum()), "differing_from_tokenizers": n,
                "first_differing": first, "differing_from_tiktoken": m}

    if a.get("grist"):
        out["grist"] = check(a["grist"])
    if a.get("self_check"):
        # The reader and the comparison on datasets written here: one exact, one with a changed id.
        base = a["self_check"]
        write_megatron(base + "-exact", exp_lens, exp_ids, a["vocab_size"])
        exact = check(base + "-exact")
        changed = exp_ids.copy()
        k = len(exp_lens) // 2
        changed[int(np.cumsum(exp_lens)[k]) - 2] ^= 1 if exp_lens[k] > 1 else 0
        write_megatron(base + "-changed", exp_lens, changed, a["vocab_size"])
        broken = check(base + "-changed")
        expected_broken = 1 if exp_lens[k] > 1 else 0
        out["self_check"] = {
            "exact_dataset": exact,
            "one_changed_document": broken,
            "ok": exact["problems"] == [] and exact["differing_from_tokenizers"] == 0
            and broken["differing_from_tokenizers"] == expected_broken,
        }
    print(json.dumps(out))


PEERS = {"train": peer_train, "encode-hf": peer_encode_hf, "encode-tiktoken": peer_encode_tiktoken,
         "verify": peer_verify}


# ---------------------------------------------------------------------------------------------
# Driver (standard library only)
# ---------------------------------------------------------------------------------------------

class Failed(Exception):
    pass


def run_measured(cmd, work, name, env=None, threads=None, cores=None):
    """Runs cmd as a child; returns (wall seconds, peak RSS in MiB, stdout). Logs in work/logs."""
    if threads is not None and cores is not None and threads < cores and shutil.which("taskset"):
        cmd = ["taskset", "-c", f"0-{threads - 1}"] + cmd
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    out_path, err_path = logs / f"{name}.out", logs / f"{name}.err"
    full_env = dict(os.environ, **(env or {}))
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise Failed(f"{name} failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return wall, usage.ru_maxrss / 1024, out_path.read_text()


def peer_cmd(python, kind, *args):
    return [python, str(Path(__file__).resolve()), "_peer", kind, *map(str, args)]


def find_grist(explicit):
    if explicit:
        return Path(explicit)
    if os.environ.get("GRIST"):
        return Path(os.environ["GRIST"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "release/grist"
    return REPO / "target/release/grist"


def default_python():
    for venv in ["tokens-venv", "tokbench-venv"]:
        p = Path.home() / ".cache/grist" / venv / "bin/python"
        if p.exists():
            return str(p)
    return sys.executable


def load_bpe(path):
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    model = spec.get("model", {})
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    return spec, model.get("vocab", {}), merges


def compare_tokenizers(peer_path, grist_path):
    peer, peer_vocab, peer_merges = load_bpe(peer_path)
    mine, grist_vocab, grist_merges = load_bpe(grist_path)
    first_merge = next((i for i, (a, b) in enumerate(zip(peer_merges, grist_merges)) if a != b),
                       None if len(peer_merges) == len(grist_merges) else min(len(peer_merges), len(grist_merges)))
    vocab_diff = {k for k in set(peer_vocab) | set(grist_vocab) if peer_vocab.get(k) != grist_vocab.get(k)}
    parts = {}
    for key in ["normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens"]:
        parts[key] = peer.get(key) == mine.get(key)
    return {
        "vocab_size": {"tokenizers": len(peer_vocab), "grist": len(grist_vocab)},
        "merges": {"tokenizers": len(peer_merges), "grist": len(grist_merges)},
        "vocab_identical": not vocab_diff,
        "vocab_entries_differing": len(vocab_diff),
        "merges_identical": peer_merges == grist_merges,
        "first_differing_merge": first_merge,
        "other_sections_identical": parts,
    }


def eos_and_vocab(tokenizer_json):
    spec, vocab, _ = load_bpe(tokenizer_json)
    ids = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    ids.update({k: v for k, v in vocab.items() if k in SPECIALS})
    if EOS not in ids:
        raise Failed(f"{tokenizer_json} has no {EOS} token")
    size = max(list(vocab.values()) + list(ids.values())) + 1
    return ids[EOS], size


def mib(x):
    return f"{x:,.0f} MiB"


def ratio(peer, mine):
    return f"{peer / mine:.2f}×" if mine else "—"


def machine():
    mem = ""
    try:
        kb = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l for l in open("/proc/cpuinfo") if l.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} CPUs{mem}"


def markdown(r):
    c, t = r["corpus"], r["threads"]
    out = []
    out.append(f"## Tokenizer training and encoding vs Hugging Face tokenizers / tiktoken (`tokenizer_speed.py`), "
               f"{t} thread{'s' if t != 1 else ''} each, {r['date']}")
    out.append("")
    subset = f", every {c['subset_every']}th document" if c["subset_every"] > 1 else ""
    out.append(f"Machine: {r['machine']}. Corpus: {c['documents']:,} documents, {c['text_mb']} MB of text "
               f"({c['distinct_documents']:,} distinct{subset}, repeated {c['scale']}×; JSON Lines {c['file_mb']} MB): "
               f"web_en texts, WikiText-2 lines, tinyshakespeare paragraphs. Peers: tokenizers "
               f"{r['versions'].get('tokenizers', '?')}, tiktoken {r['versions'].get('tiktoken', '?')}. "
               f"Byte-level BPE, GPT-4 split regex, vocabulary {r['vocab_size']:,}, min frequency "
               f"{r['min_frequency']}. Peak RSS = the child's ru_maxrss. Ratios: > 1× means grist is faster / "
               f"uses less memory.")
    out.append("")
    tr = r["train"]
    out.append("| training | wall s | MB/s | peak RSS | grist speed × | grist memory × |")
    out.append("|---|---|---|---|---|---|")
    p = tr["tokenizers"]
    out.append(f"| tokenizers `train_from_iterator` (subprocess, JSON Lines read lazily; train call {p['train_call_s']:.1f} s) "
               f"| {p['wall_s']:.1f} | {c['text_mb'] / p['wall_s']:.2f} | {mib(p['peak_rss_mib'])} | 1× | 1× |")
    if "grist" in tr:
        g = tr["grist"]
        out.append(f"| grist `tokenizer train` (whole command) | {g['wall_s']:.1f} | {c['text_mb'] / g['wall_s']:.2f} | "
                   f"{mib(g['peak_rss_mib'])} | {ratio(p['wall_s'], g['wall_s'])} | {ratio(p['peak_rss_mib'], g['peak_rss_mib'])} |")
    out.append("")
    if "same" in tr:
        s = tr["same"]
        vocab_note = "" if s["vocab_identical"] else f", {s['vocab_entries_differing']} differ"
        out.append(f"- Same tokenizer: vocabulary {'identical' if s['vocab_identical'] else 'DIFFERENT'} "
                   f"({s['vocab_size']['tokenizers']:,} vs {s['vocab_size']['grist']:,} entries{vocab_note}), merges "
                   f"{'identical' if s['merges_identical'] else 'DIFFERENT from merge ' + str(s['first_differing_merge'])} "
                   f"({s['merges']['tokenizers']:,} vs {s['merges']['grist']:,}).")
        others = [k for k, same in s["other_sections_identical"].items() if not same]
        if others:
            out.append(f"- tokenizer.json sections that differ from the peer's: {', '.join(others)}.")
    out.append("")
    e = r["encode"]
    out.append(f"Encoding with the tokenizer trained by {'grist' if r['encode_with'] == 'grist' else 'tokenizers (the reference)'}; {e['tokens']:,} tokens "
               f"(+{c['documents']:,} EOS).")
    out.append("")
    out.append("| encoding | seconds | docs/s | MB/s | peak RSS | grist speed × | grist memory × |")
    out.append("|---|---|---|---|---|---|---|")
    g = e.get("grist")
    for key, label in [("tokenizers", "tokenizers `encode_batch` (encode call only; loading excluded)"),
                       ("tiktoken", "tiktoken `encode_ordinary_batch` (encode call only; loading excluded)")]:
        p = e[key]
        sp = ratio(p["seconds"], g["wall_s"]) if g else "—"
        mem = ratio(p["peak_rss_mib"], g["peak_rss_mib"]) if g else "—"
        out.append(f"| {label} | {p['seconds']:.2f} | {c['documents'] / p['seconds']:,.0f} | "
                   f"{c['text_mb'] / p['seconds']:.2f} | {mib(p['peak_rss_mib'])} (process: texts, results, ids kept) | {sp} | {mem} |")
    if g:
        out.append(f"| grist `tokenizer encode` (whole command: read JSON Lines, encode, write .idx/.bin) | "
                   f"{g['wall_s']:.2f} | {c['documents'] / g['wall_s']:,.0f} | {c['text_mb'] / g['wall_s']:.2f} | "
                   f"{mib(g['peak_rss_mib'])} | 1× | 1× |")
    out.append("")
    v = r["verify"]
    if "grist" in v:
        gv = v["grist"]
        out.append(f"- Ids: grist's dataset ({gv.get('dtype', '?')}, {gv.get('documents', '?')} documents) vs tokenizers + EOS: "
                   f"**{gv['differing_from_tokenizers']} documents differ**"
                   + (f" (first: document {gv['first_differing']})" if gv.get("first_differing") is not None else "")
                   + f"; vs tiktoken + EOS: {gv.get('differing_from_tiktoken')} differ."
                   + (f" Layout problems: {'; '.join(gv['problems'])}." if gv["problems"] else ""))
    tt = v["tiktoken_vs_tokenizers"]
    out.append(f"- tiktoken vs tokenizers: {tt['differing']} of {tt['documents']:,} documents differ"
               + (f" (first: document {tt['first_differing']})" if tt["first_differing"] is not None else "")
               + " (merge order by merged-token rank vs pair rank; reported, not a failure).")
    if "self_check" in v:
        sc = v["self_check"]
        out.append(f"- Self-check of the reader on Python-written datasets: {'ok' if sc['ok'] else 'FAILED'} "
                   f"(exact copy: {sc['exact_dataset']['differing_from_tokenizers']} differ; one id changed: "
                   f"{sc['one_changed_document']['differing_from_tokenizers']} differs).")
    return "\n".join(out)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_peer":
        PEERS[sys.argv[2]](*sys.argv[3:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ap.add_argument("--grist", help="the grist binary (default: $GRIST, $CARGO_TARGET_DIR/release/grist, target/release/grist)")
    ap.add_argument("--python", default=default_python(),
                    help="Python with tokenizers==0.23.2, tiktoken, numpy (default: ~/.cache/grist/tokens-venv, else tokbench-venv)")
    ap.add_argument("--threads", type=int, default=cores, help=f"threads for every tool (default: all {cores} cores)")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--target-mb", type=float, default=100.0, help="corpus size to aim for (default 100 MB)")
    ap.add_argument("--scale", type=int, help="repeat the document list exactly K times (overrides --target-mb)")
    ap.add_argument("--quick", action="store_true", help="a ~4 MB subset (overrides --target-mb)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N for every timing (default 1)")
    ap.add_argument("--encode-with", choices=["python", "grist"], default="python",
                    help="which trained tokenizer.json the encoders use (default: the peer's, the reference)")
    ap.add_argument("--peers-only", action="store_true",
                    help="run only the peers (no grist binary needed); self-checks the dataset reader instead")
    ap.add_argument("--workdir", help="keep the corpus and outputs here (default: a temporary directory, removed)")
    ap.add_argument("--json", help="also write the figures as JSON to this file ('-' for stdout)")
    args = ap.parse_args()

    grist = None
    if not args.peers_only:
        grist = find_grist(args.grist)
        if not (grist.is_file() and os.access(grist, os.X_OK)):
            sys.exit(f"error: no grist binary at {grist}; build it with `cargo build --release`, or pass "
                     f"--grist PATH / set GRIST, or run the peers alone with --peers-only")
    if args.encode_with == "grist" and args.peers_only:
        sys.exit("error: --encode-with grist needs grist")
    probe = subprocess.run([args.python, "-c", "import tokenizers, tiktoken, numpy, json; print(json.dumps("
                            "{'tokenizers': tokenizers.__version__, 'tiktoken': getattr(tiktoken, '__version__', '?'), "
                            "'numpy': numpy.__version__}))"], capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"error: {args.python} cannot import tokenizers, tiktoken and numpy (make the venv with "
                 f"tests/parity/tokens_venv.sh, or pass --python):\n{probe.stderr[-2000:]}")
    versions = json.loads(probe.stdout)
    if versions["tokenizers"] != "0.23.2":
        print(f"warning: tokenizers {versions['tokenizers']}, not the pinned 0.23.2", file=sys.stderr)
    if args.threads < 1:
        sys.exit("error: --threads must be at least 1")

    keep = args.workdir is not None
    work = Path(args.workdir).resolve() if keep else Path(tempfile.mkdtemp(prefix="grist-tokbench-"))
    work.mkdir(parents=True, exist_ok=True)
    T = args.threads
    peer_env = {"RAYON_NUM_THREADS": str(T), "TOKENIZERS_PARALLELISM": "true"}

    def log(msg):
        print(f"[tokenizer_speed] {msg}", file=sys.stderr, flush=True)

    try:
        corpus_path = work / "corpus.jsonl"
        log(f"building the corpus in {work}")
        corpus = build_corpus(corpus_path, 4.0 if args.quick else args.target_mb, None if args.quick else args.scale)
        log(f"corpus: {corpus['documents']:,} documents, {corpus['text_mb']} MB of text")
        result = {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "threads": T, "versions": versions,
                  "vocab_size": args.vocab_size, "min_frequency": args.min_frequency, "corpus": corpus,
                  "repeat": args.repeat, "encode_with": args.encode_with, "grist": str(grist) if grist else None}

        # Training.
        peer_tok, grist_tok = work / "tokenizers-tokenizer.json", work / "grist-tokenizer.json"
        best = None
        for i in range(args.repeat):
            log(f"training: tokenizers (run {i + 1}/{args.repeat})")
            wall, rss, out = run_measured(peer_cmd(args.python, "train", corpus_path, peer_tok, args.vocab_size,
                                                   args.min_frequency), work, "train-tokenizers", peer_env, T, cores)
            inner = json.loads(out.strip().splitlines()[-1])
            if best is None or wall < best["wall_s"]:
                best = {"wall_s": wall, "peak_rss_mib": rss, "train_call_s": inner["train_call_s"]}
        result["train"] = {"tokenizers": best}
        if grist:
            best = None
            for i in range(args.repeat):
                log(f"training: grist (run {i + 1}/{args.repeat})")
                shutil.rmtree(f"{grist_tok}.work", ignore_errors=True)
                grist_tok.unlink(missing_ok=True)
                wall, rss, _ = run_measured(
                    [str(grist), "tokenizer", "train", "--input", str(corpus_path), "--output", str(grist_tok),
                     "--vocab-size", str(args.vocab_size), "--min-frequency", str(args.min_frequency),
                     "--special-tokens", ",".join(SPECIALS), "-j", str(T)], work, "train-grist", None, T, cores)
                if best is None or wall < best["wall_s"]:
                    best = {"wall_s": wall, "peak_rss_mib": rss}
            result["train"]["grist"] = best
            result["train"]["same"] = compare_tokenizers(peer_tok, grist_tok)

        # Encoding.
        tokenizer = grist_tok if args.encode_with == "grist" else peer_tok
        eos, vocab_size = eos_and_vocab(tokenizer)
        result["encode"] = {"tokenizer": str(tokenizer), "eos_id": eos}
        log("encoding: tokenizers")
        _, rss, out = run_measured(peer_cmd(args.python, "encode-hf", tokenizer, corpus_path, work / "hf", args.repeat),
                                   work, "encode-tokenizers", peer_env, T, cores)
        inner = json.loads(out.strip().splitlines()[-1])
        result["encode"]["tokens"] = inner["tokens"]
        result["encode"]["tokenizers"] = {"seconds": inner["encode_s"], "peak_rss_mib": rss}
        log("encoding: tiktoken")
        _, rss, out = run_measured(peer_cmd(args.python, "encode-tiktoken", tokenizer, corpus_path, work / "tt",
                                            args.repeat, T), work, "encode-tiktoken", peer_env, T, cores)
        inner = json.loads(out.strip().splitlines()[-1])
        result["encode"]["tiktoken"] = {"seconds": inner["encode_s"], "build_s": inner["build_s"], "peak_rss_mib": rss}
        verify = {"hf": str(work / "hf"), "tt": str(work / "tt"), "eos": eos, "vocab_size": vocab_size}
        if grist:
            out_dir = work / "encoded"
            best = None
            for i in range(args.repeat):
                log(f"encoding: grist (run {i + 1}/{args.repeat})")
                shutil.rmtree(out_dir, ignore_errors=True)
                shutil.rmtree(f"{out_dir}.work", ignore_errors=True)
                wall, rss, _ = run_measured(
                    [str(grist), "tokenizer", "encode", str(tokenizer), "--input", str(corpus_path),
                     "--output", str(out_dir), "-j", str(T)], work, "encode-grist", None, T, cores)
                if best is None or wall < best["wall_s"]:
                    best = {"wall_s": wall, "peak_rss_mib": rss}
            result["encode"]["grist"] = best
            verify["grist"] = str(out_dir / "tokens")
        else:
            verify["self_check"] = str(work / "selfcheck")
        log("checking ids")
        _, _, out = run_measured(peer_cmd(args.python, "verify", json.dumps(verify)), work, "verify")
        result["verify"] = json.loads(out.strip().splitlines()[-1])
    except Failed as err:
        sys.exit(f"error: {err}\n(work directory, with the logs, kept: {work})")
    if not keep:
        shutil.rmtree(work, ignore_errors=True)

    print(markdown(result))
    if args.json:
        text = json.dumps(result, indent=1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    failed = False
    v = result["verify"]
    if "grist" in v and (v["grist"]["problems"] or v["grist"]["differing_from_tokenizers"] != 0):
        failed = True
    if "same" in result["train"] and not (result["train"]["same"]["vocab_identical"] and result["train"]["same"]["merges_identical"]):
        failed = True
    if "self_check" in v and not v["self_check"]["ok"]:
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
