#!/usr/bin/env python3
"""Single-core speed of datatrove 0.10.1's quality filters and of Python fastText lid.176.

The reference point for grist's own filters: same documents as the parity goldens
(tests/parity/datatrove_goldens.py), one process, one core.

How to run (uses the venv that tests/parity/make_goldens.sh builds; run that once first):

    V=${GRIST_PARITY_VENV:-$HOME/.cache/grist/parity-venv}
    taskset -c 0 nice -n 19 $V/bin/python tests/bench/datatrove_filters_speed.py > /tmp/dt_speed.json
    # quick check:  ... datatrove_filters_speed.py --limit 50
    # options: --limit N (documents), --sources wceb2026,c4,dolma_cc,dolma_docs, --skip-all4

Run it on an otherwise idle machine (timings under `nice` on a busy machine are not comparable).
Progress goes to stderr; the JSON result goes to stdout. MB = 10^6 bytes of UTF-8 input text.

What is timed:
- `filters.<name>`: that filter's `filter(doc)` alone over every document (fresh Document each
  time). datatrove caches `split_into_words`/`split_into_sentences` per text (functools.lru_cache,
  5 entries, in datatrove/utils/text.py:split_into_parts); the cache is cleared before every
  document so each filter pays for its own spaCy tokenisation, as it would alone in a pipeline.
- `all4_independent`: GopherRepetition, GopherQuality, C4Quality(filter_no_terminal_punct=False),
  FineWebQuality all run on every document (the goldens' semantics: no early exit, each on the
  original text). The lru cache is cleared per document but shared between the four filters, as
  happens in a real datatrove pipeline.
- `all4_pipeline`: the same four in FineWeb order as a cascade, as datatrove's pipeline runs them:
  a document stops at the first drop and later filters see C4's rewritten text.
- `fasttext_*`: fasttext-predict `predict(text.replace("\\n", " "), k=-1)` exactly as datatrove's
  FT176LID.predict calls it (all 176 labels), plus k=1 for reference. Model load time excluded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from importlib import metadata as importlib_metadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "parity"))

from datatrove_goldens import LID_MODEL, iter_documents  # noqa: E402


def rate(n_docs, n_bytes, secs, extra=None):
    d = {
        "seconds": round(secs, 4),
        "docs_per_s": round(n_docs / secs, 2) if secs else None,
        "mb_per_s": round(n_bytes / 1e6 / secs, 4) if secs else None,
    }
    if extra:
        d.update(extra)
    return d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--sources", default="wceb2026,c4,dolma_cc,dolma_docs")
    ap.add_argument("--skip-all4", action="store_true")
    args = ap.parse_args()

    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter
    from datatrove.pipeline.filters.base_filter import get_filter_result
    from datatrove.utils.text import split_into_parts, split_into_words
    from fasttext.FastText import _FastText

    sources = set(args.sources.split(","))
    texts = []
    for source, _f, _r, _field, text in iter_documents():
        if source in sources and text:
            texts.append(text)
            if args.limit and len(texts) >= args.limit:
                break
    n_docs = len(texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731
    log(f"{n_docs} docs, {n_bytes / 1e6:.2f} MB")

    split_into_words("Warm up the spaCy blank English tokenizer. Second sentence.")  # load spaCy outside timing
    clear = split_into_parts.cache_clear

    configs = [
        ("gopher_repetition", lambda: GopherRepetitionFilter()),
        ("gopher_quality", lambda: GopherQualityFilter()),
        ("c4_quality", lambda: C4QualityFilter()),
        ("c4_quality_fineweb", lambda: C4QualityFilter(filter_no_terminal_punct=False)),
        ("fineweb_quality", lambda: FineWebQualityFilter()),
    ]
    result = {"docs": n_docs, "bytes": n_bytes, "filters": {}}
    for name, make in configs:
        flt = make()
        kept = 0
        secs = 0.0
        for t in texts:
            clear()
            doc = Document(text=t, id="x", metadata={})
            t0 = time.perf_counter()
            keep, _ = get_filter_result(flt.filter(doc))
            secs += time.perf_counter() - t0
            kept += bool(keep)
        result["filters"][name] = rate(n_docs, n_bytes, secs, {"kept": kept})
        log(name, result["filters"][name])

    if not args.skip_all4:
        four = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(filter_no_terminal_punct=False), FineWebQualityFilter()]
        secs = 0.0
        kept_all = 0
        for t in texts:
            clear()
            t0 = time.perf_counter()
            ok = True
            for flt in four:
                keep, _ = get_filter_result(flt.filter(Document(text=t, id="x", metadata={})))
                ok &= bool(keep)
            secs += time.perf_counter() - t0
            kept_all += ok
        result["all4_independent"] = rate(n_docs, n_bytes, secs, {"kept_by_all": kept_all})
        log("all4_independent", result["all4_independent"])

        secs = 0.0
        kept = 0
        for t in texts:
            clear()
            doc = Document(text=t, id="x", metadata={})
            t0 = time.perf_counter()
            ok = True
            for flt in four:
                keep, _ = get_filter_result(flt.filter(doc))
                if not keep:
                    ok = False
                    break
            secs += time.perf_counter() - t0
            kept += ok
        result["all4_pipeline"] = rate(n_docs, n_bytes, secs, {"kept": kept})
        log("all4_pipeline", result["all4_pipeline"])

    model = _FastText(LID_MODEL)
    for name, k in (("fasttext_k_all", -1), ("fasttext_k1", 1)):
        t0 = time.perf_counter()
        for t in texts:
            model.predict(t.replace("\n", " "), k=k)
        result[name] = rate(n_docs, n_bytes, time.perf_counter() - t0)
        log(name, result[name])

    def ver(p):
        try:
            return importlib_metadata.version(p)
        except importlib_metadata.PackageNotFoundError:
            return None

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        pass
    result["env"] = {
        "datatrove": ver("datatrove"),
        "spacy": ver("spacy"),
        "fasttext-predict": ver("fasttext-predict"),
        "python": platform.python_version(),
        "cpu": cpu,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "limit": args.limit or None,
        "sources": sorted(sources),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
