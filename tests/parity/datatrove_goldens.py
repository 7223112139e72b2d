#!/usr/bin/env python3
"""Golden decisions of datatrove 0.10.1's quality filters and fastText lid.176 on real web text.

Run through tests/parity/make_goldens.sh (it builds the pinned venv). Direct use:

    python tests/parity/datatrove_goldens.py [--limit N] [--out PATH] [--versions PATH]

Every document is run through each filter separately, on a fresh `Document`, by calling the
filter's own `filter(doc)` and decoding the result with datatrove's own
`datatrove.pipeline.filters.base_filter.get_filter_result` (what `BaseFilter.run` does).
Language ID runs datatrove's own `FT176LID.predict` and `LanguageFilter.filter`, with the model
swapped for lid.176.ftz loaded by `fasttext-predict` (see `_NumpyScoresModel`).
No document text is written, only decisions, reasons and hashes.
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
import sys
import time
import traceback
from importlib import metadata as importlib_metadata

import numpy as np

DATA = os.environ.get("GRIST_PARITY_DATA", "/work/shared/data")
WEB_EN = os.path.join(DATA, "web_en")
LID_MODEL = os.path.join(DATA, "fasttext_lid176", "lid.176.ftz")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "parity", "datatrove_filters.jsonl.gz")
DEFAULT_VERSIONS = os.path.join(REPO, "tests", "fixtures", "parity", "VERSIONS.txt")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def iter_jsonl_gz(path: str):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                yield i, json.loads(line)


def iter_documents():
    """Yields (source, file name, record index, field, text-or-None) in a fixed order."""
    specs = [
        ("wceb2026", os.path.join(WEB_EN, "wceb2026_pages", "pages_first800.jsonl.gz"), ["raw_text", "trafilatura_text"]),
        ("c4", os.path.join(WEB_EN, "c4_sample", "c4_sample_docs000-799.jsonl.gz"), ["text"]),
    ]
    for p in sorted(glob.glob(os.path.join(WEB_EN, "dolma_fixtures", "multiple_files__cc_en_head-*.jsonl.gz"))):
        specs.append(("dolma_cc", p, ["text"]))
    docs_path = os.path.join(WEB_EN, "dolma_fixtures", "provided__documents__000.json.gz")
    # Only if it is JSON Lines with a `text` field.
    try:
        first = next(iter_jsonl_gz(docs_path))[1]
        if isinstance(first, dict) and "text" in first:
            specs.append(("dolma_docs", docs_path, ["text"]))
        else:
            print(f"note: {docs_path} has no text field; skipped", file=sys.stderr)
    except Exception as e:  # noqa: BLE001
        print(f"note: {docs_path} is not JSON lines ({e}); skipped", file=sys.stderr)

    for source, path, fields in specs:
        for rec, obj in iter_jsonl_gz(path):
            for field in fields:
                yield source, os.path.basename(path), rec, field, obj.get(field)


class _NumpyScoresModel:
    """Wraps fasttext-predict's `_FastText` so datatrove's `FastTextLID.predict` can run unchanged.

    datatrove 0.10.1 does `score.item()` on each score, which assumes the numpy array returned by
    `fasttext-numpy2-wheel`; fasttext-predict returns a tuple of Python floats. np.asarray gives
    float64 values equal to those floats, so `.item()` hands back exactly fastText's number.
    """

    def __init__(self, model):
        self._m = model
        self.calls = []

    def predict(self, text, k=1, threshold=0.0, **kw):
        self.calls.append((text, k, threshold))
        labels, probs = self._m.predict(text, k=k, threshold=threshold, **kw)
        return labels, np.asarray(probs, dtype=np.float64)


def build():
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.filters.base_filter import get_filter_result
    from datatrove.utils.lid import FT176LID
    from datatrove.utils.text import split_into_words
    from fasttext.FastText import _FastText

    # Order matters only for speed: split_into_words is lru_cached (5 entries) on the text, so the
    # three spaCy-word filters share one tokenisation when they run back to back.
    filters = [
        ("gopher_repetition", GopherRepetitionFilter(), False),
        ("gopher_quality", GopherQualityFilter(), False),
        ("fineweb_quality", FineWebQualityFilter(), False),
        ("c4_quality", C4QualityFilter(), True),
        ("c4_quality_fineweb", C4QualityFilter(filter_no_terminal_punct=False), True),
    ]
    model = _NumpyScoresModel(_FastText(LID_MODEL))
    lid = FT176LID()  # languages=None, k=-1: all 176 labels, as LanguageFilter uses it
    lid._model = model
    # PipelineStep.__new__ insists on the *distribution* `fasttext-numpy2-wheel` for LanguageFilter
    # (datatrove/utils/_import_utils.py: check_required_dependencies). We use fasttext-predict's
    # module instead, so skip that check while constructing; the filter code itself is unchanged.
    import datatrove.pipeline.base as dt_base

    orig_check = dt_base.check_required_dependencies
    dt_base.check_required_dependencies = lambda *a, **k: None
    try:
        langfilter = LanguageFilter()  # 0.10.1 defaults: languages=None, language_threshold=0.65, ft176
        langfilter_en = LanguageFilter(languages=["en"])  # FineWeb's English setting
    finally:
        dt_base.check_required_dependencies = orig_check
    langfilter.model._model = model
    langfilter_en.model._model = model
    return Document, filters, get_filter_result, lid, langfilter, langfilter_en, split_into_words


def run_filter(flt, Document, get_filter_result, text, doc_id, record_text):
    doc = Document(text=text, id=doc_id, metadata={})
    try:
        res = flt.filter(doc)
    except Exception as e:  # noqa: BLE001 - datatrove would crash the pipeline; record it
        return {"keep": None, "reason": None, "error": f"{type(e).__name__}: {e}"}
    keep, reason = get_filter_result(res)
    out = {"keep": bool(keep), "reason": reason}
    if record_text:
        # C4QualityFilter rewrites doc.text only when it keeps the doc; on a drop it is untouched.
        out["text_sha256"] = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
        out["text_len"] = len(doc.text)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="stop after N documents (0 = all)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--versions", default=DEFAULT_VERSIONS)
    args = ap.parse_args()

    Document, filters, get_filter_result, lid, langfilter, langfilter_en, split_into_words = build()

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    tmp = args.out + ".tmp"
    counts: dict = {}
    t0 = time.time()
    n = n_bytes = 0
    raw = open(tmp, "wb")
    # mtime=0 and no file name in the header: identical inputs give identical bytes.
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0)
    out = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
    for source, fname, rec, field, text in iter_documents():
        if args.limit and n >= args.limit:
            break
        row = {"source": source, "record": rec, "file": fname, "field": field}
        if not text:
            # datatrove's readers drop documents whose text is empty/None before any filter runs.
            row["bytes"] = 0
            row["skipped"] = "null" if text is None else "empty"
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts.setdefault("skipped", {}).setdefault(row["skipped"], 0)
            counts["skipped"][row["skipped"]] += 1
            continue
        n += 1
        b = len(text.encode("utf-8"))
        n_bytes += b
        row["bytes"] = b
        row["chars"] = len(text)
        doc_id = f"{source}/{fname}/{rec}/{field}"
        try:
            row["spacy_words"] = len(split_into_words(text))  # datatrove's word list (spaCy blank "en")
        except Exception as e:  # noqa: BLE001
            row["spacy_words"] = None
            row["spacy_words_error"] = f"{type(e).__name__}: {e}"
        for name, flt, rec_text in filters:
            r = run_filter(flt, Document, get_filter_result, text, doc_id, rec_text)
            row[name] = r
            key = "keep" if r["keep"] else (r["reason"] or r.get("error") or "drop_no_reason")
            c = counts.setdefault(name, {})
            c[key] = c.get(key, 0) + 1

        # Language ID exactly as datatrove's FT176LID.predict / LanguageFilter.filter.
        (label, score), pairs = lid.predict(Document(text=text, id=doc_id, metadata={}))
        top = sorted(pairs.items(), key=lambda kv: kv[1], reverse=True)[:5]
        ldoc = Document(text=text, id=doc_id, metadata={})
        keep_default = bool(langfilter.filter(ldoc))
        assert ldoc.metadata["language"] == label and ldoc.metadata["language_score"] == score
        keep_en = bool(langfilter_en.filter(Document(text=text, id=doc_id, metadata={})))
        row["langid"] = {
            "label": label,
            "score": score,
            "top5": [[k, v] for k, v in top],
            "en_score": pairs.get("en", 0.0),
            "keep_default": keep_default,  # LanguageFilter(): top score > 0.65
            "keep_en": keep_en,  # LanguageFilter(languages=["en"]): en score > 0.65
        }
        lc = counts.setdefault("langid", {})
        lc[label] = lc.get(label, 0) + 1
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        if n % 50 == 0:
            dt = time.time() - t0
            print(f"{n} docs, {n_bytes / 1e6:.2f} MB, {dt:.0f}s, {n_bytes / 1e6 / max(dt, 1e-9):.3f} MB/s", flush=True)
    out.close()
    raw.close()
    os.replace(tmp, args.out)
    wall = time.time() - t0
    summary = {"docs": n, "bytes": n_bytes, "wall_s": round(wall, 1), "counts": counts}
    print(json.dumps(summary, indent=1, sort_keys=True), flush=True)

    def ver(p):
        try:
            return importlib_metadata.version(p)
        except importlib_metadata.PackageNotFoundError:
            return "not installed"

    if args.versions:
        with open(args.versions, "w") as f:
            f.write(
                "# Versions that produced datatrove_filters.jsonl.gz (tests/parity/make_goldens.sh)\n"
                f"datatrove=={ver('datatrove')}\n"
                f"spacy=={ver('spacy')}\n"
                f"fasttext-predict=={ver('fasttext-predict')}\n"
                f"fasttext-numpy2-wheel=={ver('fasttext-numpy2-wheel')}\n"
                f"numpy=={ver('numpy')}\n"
                f"python=={platform.python_version()}\n"
                f"lid.176.ftz sha256={sha256_file(LID_MODEL)}\n"
                f"documents={n} skipped={sum(counts.get('skipped', {}).values())} text_bytes={n_bytes}\n"
                f"limit={args.limit or 'none'}\n"
                "# full environment (pip freeze equivalent)\n"
            )
            dists = sorted(
                {(d.metadata["Name"].lower(), d.version) for d in importlib_metadata.distributions()}
            )
            for name, v in dists:
                f.write(f"#   {name}=={v}\n")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
