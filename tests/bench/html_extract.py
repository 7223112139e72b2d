#!/usr/bin/env python3
"""Benchmark: HTML main-text extraction quality and speed on the web-content-extraction benchmark.

What it measures
  The 800 pages of ../shared/data/web_en/wceb2026_warc/*.warc.gz (real HTML in WARC response
  records) are run through Python trafilatura exactly as FineWeb's datatrove step calls it, and
  (optionally) any other extractor's output is read from JSON Lines. Every extraction is scored
  against the benchmark's ground truth (`gt_main_content` in
  ../shared/data/web_en/wceb2026_pages/pages_first800.jsonl.gz) with the metric of scrapinghub's
  article-extraction-benchmark (evaluate.py, reimplemented below: same tokeniser, shingles,
  normalisation and averaging), overall and per `page_type`, and printed side by side.

The reference extractor (datatrove 0.10.1, `datatrove/pipeline/extractors/trafilatura.py`)
  `Trafilatura(favour_precision=True, include_images=False, timeout=1, deduplicate=True)` calls
      trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=True)
  with no url and every other argument at trafilatura's default (output_format="txt",
  include_tables=True, include_images=False, include_links=False, include_formatting=False,
  with_metadata=False, fast=False i.e. fallbacks on). The HTML is the response payload decoded as
  strict UTF-8, as datatrove's WarcReader does. Two datatrove behaviours matter here:
  - `deduplicate=True` uses trafilatura's process-global LRU cache, so text blocks that were
    already seen more than twice *in earlier documents of the same worker* are dropped. This
    script keeps one process and the WARC order, as a datatrove worker does
    (`--reset-dedup-per-page` clears the cache before each page instead).
  - datatrove gives each document `timeout=1` second (in a sandbox process) and drops documents
    that time out or whose extraction is None/empty. This script does not kill slow pages; it
    reports how many took longer than 1 s of wall time.

Metric (scrapinghub/article-extraction-benchmark evaluate.py, commit 7d95432d)
  tokens = re.findall(r"\\w+", text) (case kept); shingles = all word 4-grams (a text with
  fewer than 4 tokens gives one shorter shingle; an empty text none); per page, with shingle
  multiplicities: tp = sum(min), fp = sum(pred excess), fn = sum(true excess), then (tp,fp,fn)
  are divided by their sum. precision = mean of per-page tp/(tp+fp) over pages whose extraction
  is non-empty (tp+fp > 0); recall = mean of per-page tp/(tp+fn) over pages with non-empty
  ground truth; F1 = 2PR/(P+R) of those two means (NOT the mean of per-page F1). Note that an
  empty extraction lowers recall but does not count in precision. `±` is the bootstrap std of
  the statistic over pages (--n-bootstrap resamples), as the upstream script prints.
  The table also shows `pgF1`, the mean of per-page F1 (empty extraction = 0), which is what the
  wceb benchmark's own README numbers average (with a different, bag-of-words overlap).

Pages are joined to the ground truth by the benchmark file id, not by URL: 30 URLs occur twice
  with identical HTML but different ground truth. The id is the metadata record's
  `wceb-file-id` (or the response's `WARC-Record-ID-Source`). The two pages without an absolute
  URL (WARC URIs https://wceb2026.invalid/0551 and https://wceb2026.invalid/0701/bigquery) are
  included this way.

Other extractors (--grist-jsonl PATH, repeatable)
  JSON Lines, one object per page: {"url": ..., "text": ...} and optionally "id" (the
  `wceb2026:NNNN` id, the bare NNNN file id, or the response record's WARC-Record-ID
  `<urn:uuid:...>`, which is the `id` grist's read_warc gives). Lines with "id" join on it;
  lines without join on
  "url" (the WARC-Target-URI), the n-th line for a URL matching the n-th page with that URL in
  WARC order. "text": null or a missing page counts as an empty extraction. Give
  --grist-seconds S (once per --grist-jsonl, same order) to show its pages/s, and
  --grist-name NAME to label its column (default: the file name).

Usage (from the repository root; needs only trafilatura, no warcio: the WARC parser is below)
  python3 -m venv ~/.cache/grist/extract-venv
  ~/.cache/grist/extract-venv/bin/pip install trafilatura==2.3.1 lxml_html_clean
  (lxml >= 5.2 split out lxml.html.clean, which trafilatura's justext fallback imports)
  ~/.cache/grist/extract-venv/bin/python tests/bench/html_extract.py \\
      [--save-jsonl /tmp/py_traf.jsonl] [--python-jsonl /tmp/py_traf.jsonl --python-seconds S] \\
      [--grist-jsonl out.jsonl --grist-seconds 3.2 --grist-name grist] [--cpu 0] [--limit N] \\
      [--json results.json]
  --python-jsonl reuses a saved run instead of running trafilatura again (then give
  --python-seconds to keep its speed in the table). Python trafilatura takes ~30 s of CPU for
  the 800 pages (271 MB of HTML) on one core. Speed: the process is pinned to one core (--cpu,
  default 0); pages/s = pages / summed per-page CPU time of the extract() calls (thread CPU
  time, so a busy machine skews it less, though runs on the shared 2-core machine still vary by
  ~25%); the wall-clock figure is printed too.

Output: the quality table (markdown), a speed table, the paired-bootstrap F1 difference of each
  other extractor vs Python trafilatura, and an agreement table that scores each other
  extractor against Python trafilatura's own text (a parity view: how close to FineWeb's output).
"""

import argparse
import gzip
import json
import os
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("GRIST_SHARED_DATA", REPO.parent / "shared" / "data")) / "web_en"
WARC_GLOB = "wceb2026_warc/wceb2026-*.warc.gz"
GT_PATH = "wceb2026_pages/pages_first800.jsonl.gz"


# --------------------------------------------------------------------------- WARC reading
def iter_warc_records(path):
    """Yield (headers: dict[str, str], block: bytes) for every record of a (gzipped) WARC file.

    A small hand parser: version line, header lines up to an empty line, Content-Length bytes of
    block, then the two CRLFs that end a record. gzip.open reads the member-per-record file as
    one stream.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                return
            if not line.strip():
                continue  # stray blank lines between records
            if not line.startswith(b"WARC/"):
                raise ValueError(f"{path}: expected a WARC version line, got {line[:60]!r}")
            headers = {}
            while True:
                line = f.readline()
                if not line or line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("utf-8", "replace").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            block = f.read(length)
            if len(block) != length:
                raise ValueError(f"{path}: truncated record")
            yield headers, block


def load_pages(limit=None):
    """Return the pages in WARC order: dicts with id, url, html (str), html_bytes."""
    pages = []
    by_record_id = {}
    for path in sorted(DATA.glob(WARC_GLOB)):
        for headers, block in iter_warc_records(path):
            rtype = headers.get("warc-type")
            if rtype == "response":
                head, _, body = block.partition(b"\r\n\r\n")  # HTTP status + headers, payload
                page = {
                    "url": headers.get("warc-target-uri", ""),
                    "id": headers.get("warc-record-id-source"),
                    "record_id": headers.get("warc-record-id"),
                    "html_bytes": body,
                }
                pages.append(page)
                by_record_id[headers.get("warc-record-id")] = page
            elif rtype == "metadata":
                fields = dict(
                    (k.strip(), v.strip())
                    for k, _, v in (ln.partition(":") for ln in block.decode().splitlines())
                    if k.strip()
                )
                page = by_record_id.get(headers.get("warc-refers-to"))
                if page is not None and "wceb-file-id" in fields:
                    page["id"] = "wceb2026:" + fields["wceb-file-id"]
    for p in pages:
        # datatrove's WarcReader: strict UTF-8 first (these pages are all UTF-8)
        p["html"] = p["html_bytes"].decode("utf-8", "replace")
    return pages[:limit] if limit else pages


def load_ground_truth():
    with gzip.open(DATA / GT_PATH, "rt", encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, f)}


# --------------------------------------------------------------------------- metric
# Reimplementation of scrapinghub/article-extraction-benchmark evaluate.py (MIT), commit 7d95432d.
_TOKEN_RE = re.compile(r"\w+", re.UNICODE | re.MULTILINE | re.IGNORECASE | re.DOTALL)


def _tokenize(text):
    return _TOKEN_RE.findall(text or "")


def _ngrams(text, n):
    tokens = _tokenize(text)
    result = []
    for i in range(0, max(1, len(tokens) - n + 1)):
        shingle = tuple(tokens[i : i + n])
        if shingle:
            result.append(shingle)
    return result


def string_shingle_matching(true, pred, ngram_n=4):
    """Normalised (tp, fp, fn) over word 4-gram shingles, with multiplicity."""
    true_shingles = Counter(_ngrams(true, ngram_n))
    pred_shingles = Counter(_ngrams(pred, ngram_n))
    tp = fp = fn = 0.0
    for key in set(true_shingles) | set(pred_shingles):
        t, p = true_shingles.get(key, 0), pred_shingles.get(key, 0)
        tp += min(t, p)
        fp += max(0, p - t)
        fn += max(0, t - p)
    s = tp + fp + fn
    return (tp / s, fp / s, fn / s) if s > 0 else (tp, fp, fn)


def precision_score(tp, fp, fn):
    if fp == fn == 0:
        return 1.0
    if tp == fp == 0:
        return 0.0
    return tp / (tp + fp)


def recall_score(tp, fp, fn):
    if fp == fn == 0:
        return 1.0
    if tp == fn == 0:
        return 0.0
    return tp / (tp + fn)


def metrics_from_tp_fp_fns(tp_fp_fns):
    ps = [precision_score(*x) for x in tp_fp_fns if x[0] + x[1] > 0]
    rs = [recall_score(*x) for x in tp_fp_fns if x[0] + x[2] > 0]
    precision = statistics.mean(ps) if ps else 0.0
    recall = statistics.mean(rs) if rs else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


def page_f1(x):
    tp, fp, fn = x
    if tp + fp == 0:
        return 0.0  # empty extraction
    p, r = precision_score(*x), recall_score(*x)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def bootstrap_std(tp_fp_fns, n_bootstrap, rng):
    if n_bootstrap < 2 or len(tp_fp_fns) < 2:
        return {}
    vals = defaultdict(list)
    n = len(tp_fp_fns)
    for _ in range(n_bootstrap):
        sample = [tp_fp_fns[rng.randrange(n)] for _ in range(n)]
        for k, v in metrics_from_tp_fp_fns(sample).items():
            vals[k].append(v)
    return {k + "_std": statistics.stdev(v) for k, v in vals.items()}


def paired_diff(a, b, n_bootstrap, rng):
    """Bootstrap mean/std of F1(a) - F1(b) on the same resampled pages (upstream's
    --bootstrap-differences)."""
    n = len(a)
    diffs = []
    for _ in range(n_bootstrap):
        idx = [rng.randrange(n) for _ in range(n)]
        diffs.append(
            metrics_from_tp_fp_fns([a[i] for i in idx])["f1"]
            - metrics_from_tp_fp_fns([b[i] for i in idx])["f1"]
        )
    return statistics.mean(diffs), statistics.stdev(diffs)


# --------------------------------------------------------------------------- extractors
def run_python_trafilatura(pages, cpu, reset_dedup):
    import trafilatura
    from trafilatura.deduplication import LRU_TEST

    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    texts, cpu_s, wall_s, slow = {}, 0.0, 0.0, []
    for i, p in enumerate(pages):
        if reset_dedup:
            LRU_TEST.clear()
        w0, c0 = time.perf_counter(), time.thread_time()
        out = trafilatura.extract(
            p["html"], favor_precision=True, include_comments=False, deduplicate=True
        )
        c1, w1 = time.thread_time(), time.perf_counter()
        cpu_s += c1 - c0
        wall_s += w1 - w0
        if w1 - w0 > 1.0:
            slow.append((p["id"], round(w1 - w0, 2)))
        texts[p["id"]] = out
        if (i + 1) % 100 == 0:
            print(f"  python trafilatura: {i + 1}/{len(pages)} pages, {cpu_s:.1f} s CPU",
                  file=sys.stderr)
    return texts, {"cpu_seconds": cpu_s, "wall_seconds": wall_s, "over_1s": slow,
                   "version": trafilatura.__version__}


def read_jsonl_outputs(path, pages):
    """Map page id -> text from a {"url","text"[,"id"]} JSON Lines file (see the docstring)."""
    url_queue = defaultdict(list)
    for p in pages:
        url_queue[p["url"]].append(p["id"])
    ids = {p["id"] for p in pages}
    by_record_id = {p["record_id"]: p["id"] for p in pages if p.get("record_id")}
    out, unmatched = {}, 0
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rec = json.loads(line)
            pid = rec.get("id")
            if pid is not None:
                pid = str(pid)
                pid = by_record_id.get(pid, pid)  # grist's `id` is the WARC-Record-ID
                if not pid.startswith("wceb2026:"):
                    pid = "wceb2026:" + pid
                if pid in ids:
                    # keep the URL queue in step so mixed files still work
                    q = url_queue.get(rec.get("url", ""), [])
                    if pid in q:
                        q.remove(pid)
            else:
                q = url_queue.get(rec.get("url", ""))
                pid = q.pop(0) if q else None
            if pid is None or pid not in ids:
                unmatched += 1
                continue
            out[pid] = rec.get("text")
    if unmatched:
        print(f"warning: {path}: {unmatched} lines matched no page", file=sys.stderr)
    return out


def write_jsonl(path, pages, texts):
    with open(path, "w", encoding="utf-8") as f:
        for p in pages:
            f.write(json.dumps({"id": p["id"], "url": p["url"], "text": texts.get(p["id"])},
                               ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- scoring / table
def score(pages, gt, texts, n_bootstrap, seed):
    per_page = []
    for p in pages:
        pred = texts.get(p["id"]) or ""
        x = string_shingle_matching(gt[p["id"]]["gt_main_content"], pred)
        per_page.append((gt[p["id"]]["page_type"], x, not pred.strip()))
    groups = defaultdict(list)
    for t, x, empty in per_page:
        groups[t].append((x, empty))
        groups["ALL"].append((x, empty))
    res = {}
    rng = random.Random(seed)
    for t, items in groups.items():
        xs = [x for x, _ in items]
        m = metrics_from_tp_fp_fns(xs)
        m["pgF1"] = statistics.mean(page_f1(x) for x in xs)
        m["n"] = len(xs)
        m["empty"] = sum(e for _, e in items)
        if t == "ALL":
            m.update(bootstrap_std(xs, n_bootstrap, rng))
        res[t] = m
    return res, [x for _, x, _ in per_page]


def print_table(names, results, speeds, order):
    cols = ["F1", "P", "R", "pgF1", "empty"]
    hdr = "| page type | n | " + " | ".join(f"{n} {c}" for n in names for c in cols) + " |"
    print(hdr)
    print("|" + "---|" * (2 + len(names) * len(cols)))
    for t in order:
        n = results[names[0]][t]["n"]
        cells = []
        for name in names:
            m = results[name][t]
            f1 = f"{m['f1']:.3f}"
            if t == "ALL" and "f1_std" in m:
                f1 += f" ±{m['f1_std']:.3f}"
            cells += [f1, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['pgF1']:.3f}",
                      str(m["empty"])]
        label = "**overall**" if t == "ALL" else t
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")
    print()
    print("| extractor | seconds (1 core) | pages/s |")
    print("|---|---|---|")
    for name in names:
        s = speeds.get(name)
        n = results[name]["ALL"]["n"]
        print(f"| {name} | {s:.2f} | {n / s:.1f} |" if s else f"| {name} | - | - |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, help="only the first N pages (WARC order)")
    ap.add_argument("--cpu", type=int, default=0, help="core to pin Python to (default 0)")
    ap.add_argument("--reset-dedup-per-page", action="store_true",
                    help="clear trafilatura's dedup LRU before each page (not what datatrove does)")
    ap.add_argument("--python-jsonl", help="reuse a saved Python trafilatura run (skip extract)")
    ap.add_argument("--python-seconds", type=float, help="CPU seconds of the reused run")
    ap.add_argument("--save-jsonl", help="write the Python trafilatura output here")
    ap.add_argument("--grist-jsonl", action="append", default=[],
                    help='other extractor output, JSON Lines {"url","text"[,"id"]}; repeatable')
    ap.add_argument("--grist-seconds", action="append", type=float, default=[],
                    help="single-core seconds of the matching --grist-jsonl (same order)")
    ap.add_argument("--grist-name", action="append", default=[],
                    help="column label of the matching --grist-jsonl (same order)")
    ap.add_argument("--with-stored-default", action="store_true",
                    help="also score the dataset's stored trafilatura_text (2.3.1 defaults, url)")
    ap.add_argument("--n-bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write all metrics (and speeds) to this JSON file")
    args = ap.parse_args()

    t0 = time.perf_counter()
    pages = load_pages(args.limit)
    gt = load_ground_truth()
    missing = [p for p in pages if p["id"] not in gt]
    if missing:
        sys.exit(f"{len(missing)} WARC pages have no ground truth, e.g. {missing[0]['url']}")
    print(f"{len(pages)} pages, {sum(len(p['html_bytes']) for p in pages) / 1e6:.1f} MB of HTML "
          f"(read in {time.perf_counter() - t0:.1f} s)", file=sys.stderr)

    outputs, speeds, info = {}, {}, {}
    name = "py-trafilatura"
    if args.python_jsonl:
        outputs[name] = read_jsonl_outputs(args.python_jsonl, pages)
        if args.python_seconds:
            speeds[name] = args.python_seconds
    else:
        texts, stats = run_python_trafilatura(pages, args.cpu, args.reset_dedup_per_page)
        outputs[name] = texts
        speeds[name] = stats["cpu_seconds"]
        info[name] = stats
        print(f"python trafilatura {stats['version']}: {stats['cpu_seconds']:.2f} s CPU, "
              f"{stats['wall_seconds']:.2f} s wall, {len(stats['over_1s'])} pages over 1 s wall "
              f"(datatrove's timeout): {stats['over_1s'][:10]}", file=sys.stderr)
        if args.save_jsonl:
            write_jsonl(args.save_jsonl, pages, texts)
    if args.with_stored_default:
        outputs["stored-default"] = {p["id"]: gt[p["id"]]["trafilatura_text"] for p in pages}
    for i, path in enumerate(args.grist_jsonl):
        gname = args.grist_name[i] if i < len(args.grist_name) else Path(path).stem
        outputs[gname] = read_jsonl_outputs(path, pages)
        if i < len(args.grist_seconds):
            speeds[gname] = args.grist_seconds[i]

    results, per_page = {}, {}
    for n, texts in outputs.items():
        results[n], per_page[n] = score(pages, gt, texts, args.n_bootstrap, args.seed)
    types = sorted({gt[p["id"]]["page_type"] for p in pages},
                   key=lambda t: -results[name][t]["n"])
    names = list(outputs)
    print(f"\nscrapinghub shingle metric vs gt_main_content, {len(pages)} pages "
          f"(F1 = harmonic mean of mean P and mean R; pgF1 = mean per-page F1; "
          f"empty = pages with no text)\n")
    print_table(names, results, speeds, ["ALL"] + types)
    diffs = {}
    if args.n_bootstrap >= 2:
        print()
        rng = random.Random(args.seed)
        for other in names[1:]:
            m, s = paired_diff(per_page[other], per_page[name], args.n_bootstrap, rng)
            diffs[other] = {"f1_diff": m, "f1_diff_std": s}
            print(f"F1({other}) - F1({name}) = {m:+.3f} ± {s:.3f} (paired bootstrap std)")
    agreement = {}
    if len(names) > 1:
        # parity view: each other extractor scored against Python trafilatura's text as the truth
        print(f"\nagreement with {name} (its text taken as the truth; same metric; exact = same "
              f"token sequence; both-empty pages count as exact)\n")
        print("| extractor | F1 | P | R | exact |")
        print("|---|---|---|---|---|")
        for other in names[1:]:
            xs, exact = [], 0
            for p in pages:
                ref, got = outputs[name].get(p["id"]) or "", outputs[other].get(p["id"]) or ""
                xs.append(string_shingle_matching(ref, got))
                exact += _tokenize(ref) == _tokenize(got)
            m = metrics_from_tp_fp_fns(xs)
            m["exact"] = exact / len(pages)
            agreement[other] = m
            print(f"| {other} | {m['f1']:.3f} | {m['precision']:.3f} | {m['recall']:.3f} "
                  f"| {100 * m['exact']:.1f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"results": results, "seconds": speeds, "python": info, "f1_diff_vs_python": diffs,
             "agreement_with_python": agreement},
            indent=1))


if __name__ == "__main__":
    main()
