#!/usr/bin/env python3
"""Benchmark: the FineWeb recipe end to end, datatrove 0.10.1 vs grist, one core each.

What it runs (on the 800 pages of ../shared/data/web_en/wceb2026_warc, 8 WARC files)
  1. datatrove 0.10.1, FineWeb's own pipeline (datatrove's examples/fineweb.py), one task and
     one worker (LocalPipelineExecutor), in a child process pinned to one core (taskset):
       WarcReader -> URLFilter -> Trafilatura(favour_precision=True) -> LanguageFilter(["en"],
       0.65) -> GopherRepetitionFilter -> GopherQualityFilter ->
       C4QualityFilter(filter_no_terminal_punct=False) -> FineWebQualityFilter -> JsonlWriter
     then MinHash dedup: MinhashDedupSignature (1 task) -> MinhashDedupBuckets (14 tasks, one per
     bucket, as datatrove requires; run one after the other by the one worker) ->
     MinhashDedupCluster (1 task) -> JsonlReader -> MinhashDedupFilter -> PIIFormatter ->
     JsonlWriter. Every filter has an exclusion_writer (as FineWeb's has), so every dropped
     document is on disk with its reason. MinhashConfig() (5-grams, 14 buckets x 8 hashes,
     seed 1, xxhash 64: datatrove 0.10.1's defaults and grist's `minhash_dedup` defaults;
     asserted). FineWeb itself used sha1: `--minhash-hash sha1` runs both sides with sha1.
     Differences from FineWeb's file, none of which changes a decision: the inputs are local,
     FineWeb's TokensCounter (GPT-2 token counts, needs a tokenizer download) is left out, and
     one JsonlWriter after Trafilatura dumps the extracted texts (id, url, text) for part 4.
     Offline: lid.176.ftz from ../shared/data/fasttext_lid176 (FineWeb used lid.176.bin; grist's
     bundled filters/models/lid.176.ftz is the same file, checked) loaded with fasttext-predict,
     as tests/parity/datatrove_goldens.py does; tldextract uses its bundled Public Suffix List
     snapshot (TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="", TLDEXTRACT_CACHE="", as
     tests/parity/url_filter_goldens.py does); URLFilter's block lists come from the wheel.
     The extractor runs with datatrove's per-document timeout (--extract-timeout, default 1 s,
     FineWeb's): the only machine-dependent step of either pipeline; timeouts are reported.
  2. grist: `grist run` of a copy of pipelines/fineweb-warc.yaml (own workdir under --work,
     absolute WARC path; otherwise the file as committed), --workers 1, pinned to the same core.
  3. Reports: wall time of each whole process (the issue's goal: grist >= 20x faster), the time
     of each datatrove step and grist stage, documents kept by each, the overlap of the kept ids
     (WARC-Record-ID on both sides), per-stage drop counts side by side, and the cross table of
     each page's fate on the two sides.
  4. Separates extraction from filtering: grist runs `read_jsonl -> url_filter -> langid -> the
     four filters -> minhash_dedup -> pii -> write_jsonl` on datatrove's own extracted texts
     (the dump of step 1), and each document's fate (kept, or the stage and reason that dropped
     it) is compared with datatrove's fate for the same document in step 1. Goal: >= 99.5%
     agreement. The kept texts are compared too (C4's line removal and PII replacement rewrite
     them).

Reason names. grist's reasons are datatrove's `filter_reason`s for URLFilter, the Gopher, C4 and
FineWeb filters (dup_line_frac, top_2_gram, duplicated_5_n_grams, gopher_short_doc,
too_few_sentences, line_punct_ratio, ...). datatrove's LanguageFilter gives no reason; it is
derived from the dropped document's metadata as grist names it: `wrong_language` when its best
label is not `en`, else `low_language_score`. MinhashDedupFilter gives none: `near_duplicate`.
The Trafilatura step gives none (drops are counted in its stats: dropped = nothing extracted,
timeout, clean_error); its drops are the read documents that passed URLFilter and are missing
from the dump. A response record WarcReader does not emit (datatrove's `process_record`: libmagic
says the payload is not HTML, or it cannot be decoded) is dropped at `read`.

Usage (from the repository root, with a grist release build):
  python3 -m venv ~/.cache/grist/fineweb-venv
  P=~/.cache/grist/fineweb-venv/bin/python
  $P -m pip install "datatrove[processing]==0.10.1" spacy==3.8.18 orjson==3.13.0 warcio==1.8.1 \\
      python-magic==0.4.27 faust-cchardet==2.1.19 lxml_html_clean==0.4.7 pyarrow==26.0.1
  $P -m pip uninstall -y fasttext-numpy2-wheel     # as tests/parity/make_goldens.sh does:
  $P -m pip install --force-reinstall --no-deps fasttext-predict==0.9.2.4
  GRIST=~/.cache/grist-release/release/grist $P tests/bench/fineweb_recipe.py \\
      [--cpu 0] [--grist-repeat 3] [--datatrove-repeat 1] [--minhash-hash xxhash|sha1] \\
      [--extract-timeout 1] [--work tests/bench/work/fineweb_recipe] [--json out.json] \\
      [--reuse-datatrove]
  datatrove[processing]==0.10.1 pins trafilatura<1.12, so this runs trafilatura 1.11.0 (what
  FineWeb's pipeline installs today); python-magic needs libmagic1 (apt). --reuse-datatrove keeps
  the datatrove outputs of an earlier run in --work (and its timing) and only reruns grist and the
  comparison. One datatrove run takes ~1.5 minutes on one core (2026-12-06), a grist run ~15 s.
The grist binary: --grist, else $GRIST, else $CARGO_TARGET_DIR/release/grist, else
target/release/grist. The URL block lists: `bash tests/fetch_url_lists.sh`.

Deterministic: fixed inputs, one task per pipeline, datatrove's and grist's fixed seeds; the
timings and the extraction timeouts (if any page is near 1 s) are the only things that vary.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("GRIST_SHARED_DATA", REPO.parent / "shared" / "data"))
WARCS = DATA / "web_en" / "wceb2026_warc"
LID = DATA / "fasttext_lid176" / "lid.176.ftz"
PIPELINE = REPO / "pipelines" / "fineweb-warc.yaml"

# Common stage names, in pipeline order, and where each side's drops come from.
STAGES = ["read", "url", "extract", "lang", "gopher_rep", "gopher_qual", "c4", "fineweb_qual",
          "dedup", "kept"]
# grist stage id (pipelines/fineweb-warc.yaml and the part-4 pipeline) -> common name
GRIST_STAGE = {"warc": "read", "docs": "read", "urls": "url", "extract": "extract",
               "lang": "lang", "rep": "gopher_rep", "qual": "gopher_qual", "c4_lines": "c4",
               "fw": "fineweb_qual", "dedup": "dedup"}
# datatrove exclusion-writer folder -> common name (FineWeb's folder names)
DT_REMOVED = {"1_url": "url", "2_non_english": "lang", "3_gopher_rep": "gopher_rep",
              "4_gopher_qual": "gopher_qual", "5_c4": "c4", "6_fineweb_qual": "fineweb_qual",
              "7_minhash": "dedup"}

CHILD_ENV = {
    # tldextract: the PSL snapshot bundled in its wheel, no fetch, no cache (as grist's url_filter)
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    "TLDEXTRACT_CACHE": "",
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONHASHSEED": "0",
}


# ============================================================================ datatrove (child)
class _LID176:
    """fasttext-predict's `_FastText` on a local lid.176.ftz, shaped as datatrove's FT176LID expects.

    datatrove 0.10.1 does `score.item()` on each score (the numpy array fasttext-numpy2-wheel
    returns); fasttext-predict returns Python floats, so they are wrapped in a float64 array (the
    same numbers). The model loads lazily and a deepcopy (LocalPipelineExecutor deep-copies the
    pipeline before each task) gives an unloaded copy, as datatrove's own lazy `model` property.
    """

    def __init__(self, path):
        self.path = str(path)
        self._m = None

    def __deepcopy__(self, memo):
        return _LID176(self.path)

    def predict(self, text, k=1, threshold=0.0, **kw):
        import numpy as np
        from fasttext.FastText import _FastText

        if self._m is None:
            self._m = _FastText(self.path)
        labels, probs = self._m.predict(text, k=k, threshold=threshold, **kw)
        return labels, np.asarray(probs, dtype=np.float64)


def _dump_adapter(self, document):
    return {"id": document.id, "url": document.metadata.get("url"), "text": document.text}


def _patch_fasttext_dependency_check():
    """datatrove insists on the *distribution* fasttext-numpy2-wheel for LanguageFilter (checked in
    PipelineStep.__new__, so also on every deepcopy); we run fasttext-predict's module instead (see
    tests/parity/make_goldens.sh). Drop only that requirement; every other check still runs."""
    import datatrove.pipeline.base as dt_base

    orig = dt_base.check_required_dependencies

    def check(step_name, required):
        required = [d for d in required if d != ("fasttext", "fasttext-numpy2-wheel")]
        if required:
            orig(step_name, required)

    dt_base.check_required_dependencies = check


def datatrove_child(args):
    """Runs FineWeb's datatrove pipeline into args.work/datatrove; writes timing.json there."""
    t_start = time.perf_counter()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.typeshelper import Languages

    _patch_fasttext_dependency_check()
    t_imported = time.perf_counter()
    base = Path(args.work) / "datatrove"
    out = {k: str(base / k) for k in ("output", "extracted", "signatures", "buckets", "remove",
                                      "final", "logs")}
    removed = lambda name: JsonlWriter(str(base / "removed" / name))  # noqa: E731

    config = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc=args.minhash_hash))
    if args.minhash_hash == "xxhash":
        assert config == MinhashConfig(), "xxhash 64 is datatrove's default MinhashConfig"
    assert (config.n_grams, config.num_buckets, config.hashes_per_bucket, config.seed) == (5, 14, 8, 1)

    lang = LanguageFilter(languages=["en"], language_threshold=0.65,
                          exclusion_writer=removed("2_non_english"))
    lang.model._model = _LID176(args.lid)
    main = [
        WarcReader(str(args.warcs), glob_pattern="*.warc.gz", default_metadata={"dump": "wceb2026"}),
        URLFilter(exclusion_writer=removed("1_url")),
        Trafilatura(favour_precision=True, timeout=args.extract_timeout),
        # Not in FineWeb's file: the extracted texts for part 4 (a pass-through writer).
        JsonlWriter(out["extracted"], output_filename="${rank}.jsonl", compression=None,
                    adapter=_dump_adapter),
        lang,
        GopherRepetitionFilter(exclusion_writer=removed("3_gopher_rep")),
        GopherQualityFilter(exclusion_writer=removed("4_gopher_qual")),
        C4QualityFilter(filter_no_terminal_punct=False, exclusion_writer=removed("5_c4")),
        FineWebQualityFilter(exclusion_writer=removed("6_fineweb_qual")),
        JsonlWriter(out["output"]),
    ]
    steps = [
        ("main", main, 1),
        ("minhash_signatures", [JsonlReader(out["output"]),
                                MinhashDedupSignature(output_folder=out["signatures"], config=config,
                                                      language=Languages.english)], 1),
        ("minhash_buckets", [MinhashDedupBuckets(input_folder=out["signatures"],
                                                 output_folder=out["buckets"], config=config)],
         config.num_buckets),
        ("minhash_clusters", [MinhashDedupCluster(input_folder=out["buckets"],
                                                  output_folder=out["remove"], config=config)], 1),
        ("minhash_filter_pii", [JsonlReader(out["output"]),
                                MinhashDedupFilter(input_folder=out["remove"],
                                                   exclusion_writer=removed("7_minhash")),
                                PIIFormatter(),
                                JsonlWriter(out["final"])], 1),
    ]
    timing = {"python_start_to_imports": t_imported - t_start, "executors": {}}
    for name, pipeline, tasks in steps:
        t0 = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                              logging_dir=os.path.join(out["logs"], name)).run()
        timing["executors"][name] = time.perf_counter() - t0
    timing["in_process_total"] = time.perf_counter() - t_start
    (base / "timing.json").write_text(json.dumps(timing, indent=1))


def warm_datatrove_assets():
    """Untars URLFilter's block lists into the HF assets cache once (datatrove does this on first
    use, under a lock; a later run reuses them), so the timed run is a steady-state one."""
    from datatrove.io import safely_create_file
    from datatrove.utils._import_utils import ASSETS_PATH
    from huggingface_hub import cached_assets_path
    import tarfile

    d = cached_assets_path(library_name="datatrove", namespace="filters", subfolder="url_filter")

    def do_extract():
        with tarfile.open(os.path.join(ASSETS_PATH, "url_filterblacklistsv0_3_0.tar.gz"), "r:gz") as t:
            t.extractall(d)

    safely_create_file(os.path.join(d, "url_filterblacklistsv0_3_0.tar.gz"), do_extract)


def run_datatrove(args):
    base = Path(args.work) / "datatrove"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    env = dict(os.environ, **CHILD_ENV)
    cmd = ["taskset", "-c", str(args.cpu), sys.executable, os.path.abspath(__file__),
           "--_datatrove-child", "--work", str(args.work), "--warcs", str(args.warcs),
           "--lid", str(args.lid), "--minhash-hash", args.minhash_hash,
           "--extract-timeout", str(args.extract_timeout)]
    t0 = time.perf_counter()
    with open(base / "log.txt", "w") as log:
        r = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"datatrove run failed ({r.returncode}); see {base / 'log.txt'}")
    timing = json.loads((base / "timing.json").read_text())
    timing["process_wall"] = wall
    (base / "timing.json").write_text(json.dumps(timing, indent=1))
    return timing


# ============================================================================ grist
def grist_binary(arg):
    for c in (arg, os.environ.get("GRIST"),
              os.environ.get("CARGO_TARGET_DIR") and f"{os.environ['CARGO_TARGET_DIR']}/release/grist",
              str(REPO / "target/release/grist")):
        if c and Path(c).is_file():
            return Path(c)
    sys.exit("no grist binary: cargo build --release, or set GRIST / --grist")


def e2e_pipeline(work: Path, hash_fc: str) -> str:
    """pipelines/fineweb-warc.yaml with its own workdir and an absolute WARC path."""
    text = PIPELINE.read_text()
    subs = [("runs/fineweb-warc", str(work / "grist-e2e")),
            ("../shared/data/web_en/wceb2026_warc", str(WARCS))]
    if hash_fc != "xxhash":
        subs.append(("{id: dedup, type: minhash_dedup}", f"{{id: dedup, type: minhash_dedup, hash: {hash_fc}}}"))
    for a, b in subs:
        assert a in text, f"{PIPELINE} no longer has {a!r}; update fineweb_recipe.py"
        text = text.replace(a, b)
    return text


def filters_pipeline(work: Path, hash_fc: str) -> str:
    """Part 4: the filters of pipelines/fineweb-warc.yaml on datatrove's extracted texts."""
    d = work / "grist-filters"
    dedup = "{id: dedup, type: minhash_dedup}" if hash_fc == "xxhash" else \
        f"{{id: dedup, type: minhash_dedup, hash: {hash_fc}}}"
    return f"""name: fineweb-filters
workdir: {d}
stages:
  - {{id: docs, type: read_jsonl, path: {work / 'datatrove' / 'extracted'}}}
  - {{id: urls, type: url_filter}}
  - {{id: lang, type: langid, languages: [en], min_score: 0.65}}
  - {{id: rep, type: gopher_repetition}}
  - {{id: qual, type: gopher_quality}}
  - {{id: c4_lines, type: c4_quality, filter_no_terminal_punct: false}}
  - {{id: fw, type: fineweb_quality}}
  - {dedup}
  - {{id: pii, type: pii}}
  - {{id: out, type: write_jsonl, path: {d}/out, rejects: {d}/rejects}}
"""


def run_grist(grist, work: Path, name: str, yaml_text: str, cpu: int, repeat: int):
    """Runs the pipeline `repeat` times from scratch; returns (best wall, stats of that run)."""
    yml = work / f"{name}.yaml"
    yml.write_text(yaml_text)
    run_dir = work / name
    best = None
    for _ in range(repeat):
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        r = subprocess.run(["taskset", "-c", str(cpu), str(grist), "-q", "run", str(yml),
                            "--workers", "1", "--no-progress"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"grist run {yml} failed:\n{r.stdout[-3000:]}")
        stats = {p.stem: json.loads(p.read_text()) for p in (run_dir / "stats").glob("*.json")}
        if best is None or wall < best[0]:
            best = (wall, stats)
    return best


# ============================================================================ reading outcomes
def read_jsonl_any(path):
    op = gzip.open if str(path).endswith(".gz") else open
    with op(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def response_records():
    """[(WARC-Record-ID, url, emitted-by-datatrove's-WarcReader)] in WARC order, and the MIME
    types of the payloads WarcReader leaves out (libmagic's, as WarcReader judged them when the
    record has no WARC-Identified-Payload-Type)."""
    import magic
    from datatrove.pipeline.readers.warc import process_record
    from warcio.archiveiterator import ArchiveIterator

    out, not_emitted = [], Counter()
    for path in sorted(glob.glob(str(WARCS / "*.warc.gz"))):
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f):
                if rec.rec_type != "response":
                    continue
                rid = rec.rec_headers["WARC-Record-ID"]
                url = rec.rec_headers.get("WARC-Target-URI")
                emitted = process_record(rec) is not None
                if not emitted:
                    ptype = rec.rec_headers.get("WARC-Identified-Payload-Type")
                    # process_record consumed the stream; read the payload again for its type
                    not_emitted[ptype or "libmagic: " + magic.from_buffer(_payload(path, rid), mime=True)] += 1
                out.append((rid, url, emitted))
    return out, not_emitted


def _payload(path, rid):
    from warcio.archiveiterator import ArchiveIterator

    with open(path, "rb") as f:
        for rec in ArchiveIterator(f):
            if rec.rec_headers.get("WARC-Record-ID") == rid:
                return rec.content_stream().read()
    return b""


def datatrove_outcomes(work: Path, records):
    """{id: (stage, reason)} for every response record, and the kept texts."""
    base = work / "datatrove"
    fate = {}
    for folder, stage in DT_REMOVED.items():
        for p in sorted(glob.glob(str(base / "removed" / folder / "*.jsonl*"))):
            for d in read_jsonl_any(p):
                md = d.get("metadata", {})
                if stage == "lang":
                    reason = "wrong_language" if md.get("language") != "en" else "low_language_score"
                elif stage == "dedup":
                    reason = "near_duplicate"
                else:
                    reason = md.get("filter_reason")
                assert d["id"] not in fate, d["id"]
                fate[d["id"]] = (stage, reason)
    kept_text = {}
    for p in sorted(glob.glob(str(base / "final" / "*.jsonl*"))):
        for d in read_jsonl_any(p):
            assert d["id"] not in fate, d["id"]
            fate[d["id"]] = ("kept", None)
            kept_text[d["id"]] = d["text"]
    extracted = {}
    for p in sorted(glob.glob(str(base / "extracted" / "*.jsonl"))):
        for d in read_jsonl_any(p):
            extracted[d["id"]] = d
    for rid, _, emitted in records:
        if rid in fate:
            continue
        if not emitted:
            fate[rid] = ("read", "not_html_or_undecodable")
        elif rid not in extracted:
            fate[rid] = ("extract", "no_text_or_timeout")
        else:
            sys.exit(f"datatrove: {rid} was extracted but is neither kept nor removed")
    return fate, kept_text, extracted


def grist_outcomes(run_dir: Path, out_glob: str):
    """{id: (stage, reason)} from grist's rejects and output, the kept texts, and the texts as
    the stages after extraction received them (from the rejects of those stages)."""
    import pyarrow.parquet as pq

    fate, kept_text, rejected_text = {}, {}, {}
    for stage_dir in sorted((run_dir / "rejects").iterdir()) if (run_dir / "rejects").is_dir() else []:
        stage = GRIST_STAGE.get(stage_dir.name, stage_dir.name)
        for p in sorted(stage_dir.iterdir()):
            rows = pq.read_table(p, columns=["id", "reason", "text"]).to_pylist() \
                if p.suffix == ".parquet" else list(read_jsonl_any(p))
            for d in rows:
                assert d["id"] not in fate, d["id"]
                fate[d["id"]] = (stage, d["reason"])
                if stage not in ("read", "url", "extract"):
                    rejected_text[d["id"]] = d.get("text")
    for p in sorted(glob.glob(str(run_dir / out_glob))):
        rows = pq.read_table(p, columns=["id", "text"]).to_pylist() if p.endswith(".parquet") \
            else list(read_jsonl_any(p))
        for d in rows:
            assert d["id"] not in fate, d["id"]
            fate[d["id"]] = ("kept", None)
            kept_text[d["id"]] = d["text"]
    return fate, kept_text, rejected_text


# ============================================================================ report
def dt_step_table(work: Path):
    """[(executor, step name, seconds, stats)] from datatrove's merged stats.json files."""
    rows = []
    for ex in ("main", "minhash_signatures", "minhash_buckets", "minhash_clusters", "minhash_filter_pii"):
        p = work / "datatrove" / "logs" / ex / "stats.json"
        for step in json.loads(p.read_text()):
            t = step.get("time_stats", {})
            secs = t.get("total", 0.0) if isinstance(t, dict) else 0.0
            rows.append((ex, step["name"], secs, step.get("stats", {})))
    return rows


def main():
    global WARCS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grist")
    ap.add_argument("--work", default=str(REPO / "tests/bench/work/fineweb_recipe"))
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--grist-repeat", type=int, default=3, help="grist runs (best wall kept)")
    ap.add_argument("--datatrove-repeat", type=int, default=1, help="datatrove runs (best kept)")
    ap.add_argument("--minhash-hash", choices=["xxhash", "sha1"], default="xxhash")
    ap.add_argument("--extract-timeout", type=float, default=1.0,
                    help="datatrove Trafilatura timeout per document, seconds (FineWeb: 1)")
    ap.add_argument("--reuse-datatrove", action="store_true",
                    help="keep the datatrove outputs and timing already in --work")
    ap.add_argument("--json", help="write all numbers here")
    ap.add_argument("--warcs", default=str(WARCS), help="WARC folder (default: the 8 wceb2026 files)")
    ap.add_argument("--lid", default=str(LID), help=argparse.SUPPRESS)
    ap.add_argument("--_datatrove-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._datatrove_child:
        return datatrove_child(args)

    WARCS = Path(args.warcs).resolve()  # --warcs: a smaller set of WARCs for a dry run
    work = Path(args.work).resolve()
    args.work = str(work)
    work.mkdir(parents=True, exist_ok=True)
    grist = grist_binary(args.grist)
    assert Path(args.lid).read_bytes() == (REPO / "filters/models/lid.176.ftz").read_bytes(), \
        "grist's bundled lid.176.ftz differs from the one given to datatrove"
    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("datatrove", "trafilatura", "spacy", "fasttext-predict",
                                           "tldextract", "xxhash", "lxml", "warcio", "python-magic")}
    import magic

    versions["libmagic"] = magic.version()
    grist_version = subprocess.run([str(grist), "--version"], capture_output=True, text=True).stdout.strip()
    for p in sorted(WARCS.glob("*.warc.gz")):  # page cache warm for both sides
        p.read_bytes()
    warm_datatrove_assets()

    # ---- 1. datatrove
    if args.reuse_datatrove:
        dt_timing = json.loads((work / "datatrove" / "timing.json").read_text())
    else:
        dt_timing = None
        for i in range(args.datatrove_repeat):
            print(f"datatrove run {i + 1}/{args.datatrove_repeat} (one core)...", file=sys.stderr)
            t = run_datatrove(args)
            if dt_timing is None or t["process_wall"] < dt_timing["process_wall"]:
                dt_timing = t
            # the outputs of the last run stay; they are identical between runs unless a page
            # times out in one run and not the other (reported below)
    dt_wall = dt_timing["process_wall"]

    # ---- 2. grist, end to end
    print(f"grist end to end x{args.grist_repeat} (one core)...", file=sys.stderr)
    g_wall, g_stats = run_grist(grist, work, "grist-e2e", e2e_pipeline(work, args.minhash_hash),
                                args.cpu, args.grist_repeat)

    # ---- 4. grist filters on datatrove's extracted text
    print("grist filters on datatrove's extracted texts...", file=sys.stderr)
    f_wall, f_stats = run_grist(grist, work, "grist-filters", filters_pipeline(work, args.minhash_hash),
                                args.cpu, 1)

    # ---- outcomes
    records, not_emitted = response_records()
    ids = [r[0] for r in records]
    assert len(set(ids)) == len(ids)
    dt_fate, dt_kept_text, dt_extracted = datatrove_outcomes(work, records)
    g_fate, g_kept_text, g_rej_text = grist_outcomes(work / "grist-e2e", "out/*.parquet")
    missing = [i for i in ids if i not in g_fate]
    assert not missing, f"grist: {len(missing)} records with no fate, e.g. {missing[:3]}"
    f_fate, f_kept_text, _ = grist_outcomes(work / "grist-filters", "out/*.jsonl")

    res = {"versions": versions, "grist_version": grist_version, "cpu": args.cpu,
           "minhash_hash": args.minhash_hash, "extract_timeout": args.extract_timeout,
           "pages": len(ids)}

    # ---- 3. report: speed
    dt_steps = dt_step_table(work)
    main_stats = {name: s for ex, name, _, s in dt_steps if ex == "main"}
    traf = next((s for n, s in main_stats.items() if "Trafilatura" in n), {})
    res["datatrove"] = {"wall_s": dt_wall, "timing": dt_timing,
                        "steps": [(ex, n, round(t, 3)) for ex, n, t, _ in dt_steps],
                        "trafilatura_stats": traf}
    g_stage_s = {k: v.get("seconds", 0.0) for k, v in g_stats.items()}
    res["grist"] = {"wall_s": g_wall, "stage_seconds": g_stage_s}
    res["speedup_wall"] = dt_wall / g_wall
    # The same work split in two: extraction, and everything after it. datatrove: its steps' own
    # times (stats); the dump writer after Trafilatura (not FineWeb's) is left out. grist: the
    # html_extract stage's time, and the part-4 run (the same stages on datatrove's texts).
    dt_extract = sum(t for ex, n, t, _ in dt_steps if "Trafilatura" in n)
    after, skip_writer, dt_after = False, False, 0.0
    for ex, n, t, _ in dt_steps:
        if ex == "main" and "Trafilatura" in n:
            after = skip_writer = True
            continue
        if after and skip_writer and "WRITER" in n:
            skip_writer = False  # the dump writer
            continue
        if after:
            dt_after += t
    f_stage_s = sum(v.get("seconds", 0.0) for v in f_stats.values())
    g_ex = g_stage_s.get("extract", 0.0)
    res["split"] = {"datatrove_extract_s": dt_extract, "grist_extract_s": g_ex,
                    "datatrove_after_extract_s": dt_after, "grist_after_extract_stage_s": f_stage_s,
                    "grist_after_extract_wall_s": f_wall}
    print("\n## Speed (one core each)\n")
    print("| | datatrove s | grist s | datatrove ÷ grist |\n|---|---|---|---|")
    print(f"| whole pipeline, process wall time ({len(ids)} pages; grist best of "
          f"{args.grist_repeat}) | {dt_wall:.1f} | {g_wall:.2f} | {dt_wall / g_wall:.1f}× |")
    print(f"| extraction: Trafilatura step / html_extract stage | {dt_extract:.1f} | {g_ex:.2f} | "
          f"{dt_extract / g_ex:.1f}× |")
    print(f"| after extraction, the same {len(dt_extracted)} texts: steps' time, LanguageFilter "
          f"to PII and writer / part-4 stages | {dt_after:.1f} | {f_stage_s:.2f} | "
          f"{dt_after / f_stage_s:.1f}× |")
    print(f"| the same, grist part-4 process wall time | | {f_wall:.2f} | {dt_after / f_wall:.1f}× |")
    print(f"\ndatatrove: interpreter start + imports {dt_timing['python_start_to_imports']:.1f} s; "
          + ", ".join(f"{k} {v:.1f} s" for k, v in dt_timing["executors"].items()))
    print("\ndatatrove step times (its stats, summed over tasks):")
    for ex, n, t, _ in dt_steps:
        print(f"  {ex:20s} {n:28s} {t:8.2f} s")
    print("grist stage times (its stats):")
    for k, v in sorted(g_stats.items(), key=lambda kv: -kv[1].get("seconds", 0)):
        print(f"  {k:10s} {v.get('type', ''):18s} {v.get('seconds', 0):8.2f} s")
    print(f"datatrove Trafilatura stats: {json.dumps(traf)}")

    # ---- 3. report: per-stage drops and kept overlap
    def counts(fate, only=None):
        c = Counter(fate[i][0] for i in (only if only is not None else ids))
        return {s: c.get(s, 0) for s in STAGES}

    dt_c, g_c = counts(dt_fate), counts(g_fate)
    res["e2e_counts"] = {"datatrove": dt_c, "grist": g_c}
    dt_kept = {i for i in ids if dt_fate[i][0] == "kept"}
    g_kept = {i for i in ids if g_fate[i][0] == "kept"}
    both = dt_kept & g_kept
    res["kept"] = {"datatrove": len(dt_kept), "grist": len(g_kept), "both": len(both),
                   "only_datatrove": len(dt_kept - g_kept), "only_grist": len(g_kept - dt_kept),
                   "jaccard": len(both) / max(1, len(dt_kept | g_kept))}
    res["not_read_by_datatrove"] = dict(not_emitted)
    if not_emitted:
        print(f"\nresponse records datatrove's WarcReader leaves out (payload type): {dict(not_emitted)}")
    print(f"\n## End to end on {len(ids)} pages: drops per stage\n")
    print("| stage | datatrove | grist |\n|---|---|---|")
    for s in STAGES:
        print(f"| {s} | {dt_c[s]} | {g_c[s]} |")
    k = res["kept"]
    print(f"\nkept: datatrove {k['datatrove']}, grist {k['grist']}, both {k['both']} "
          f"(only datatrove {k['only_datatrove']}, only grist {k['only_grist']}; "
          f"Jaccard {k['jaccard']:.3f})")
    reasons = {"datatrove": Counter(f"{s}:{r}" for s, r in dt_fate.values() if s != "kept"),
               "grist": Counter(f"{s}:{r}" for s, r in (g_fate[i] for i in ids) if s != "kept")}
    res["e2e_reasons"] = {k2: dict(sorted(v.items())) for k2, v in reasons.items()}
    print("\ndrop reasons:\n| stage:reason | datatrove | grist |\n|---|---|---|")
    for key in sorted(set(reasons["datatrove"]) | set(reasons["grist"]),
                      key=lambda x: (STAGES.index(x.split(":")[0]), x)):
        print(f"| {key} | {reasons['datatrove'].get(key, 0)} | {reasons['grist'].get(key, 0)} |")
    cross = Counter((dt_fate[i][0], g_fate[i][0]) for i in ids)
    res["e2e_cross"] = {f"{a}|{b}": n for (a, b), n in sorted(cross.items())}
    print("\nfate of each page (rows: datatrove, columns: grist):\n")
    cols = [s for s in STAGES if any(b == s for _, b in cross)]
    print("| datatrove \\ grist | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for a in STAGES:
        if any(x == a for x, _ in cross):
            print(f"| {a} | " + " | ".join(str(cross.get((a, b), "")) for b in cols) + " |")

    # Line structure of the extracted text, where both sides extracted a page and it was dropped
    # by a filter on the grist side (the text as the filter saw it; kept texts are left out as
    # C4's line removal has rewritten them).
    common = [i for i in g_rej_text if i in dt_extracted]
    if common:
        def lines(t):
            return len([ln for ln in (t or "").split("\n") if ln.strip()])
        g_lines = sorted(lines(g_rej_text[i]) for i in common)
        d_lines = sorted(lines(dt_extracted[i]["text"]) for i in common)
        one = sum(n <= 1 for n in g_lines)
        res["extracted_lines"] = {"documents": len(common), "grist_median": g_lines[len(common) // 2],
                                  "datatrove_median": d_lines[len(common) // 2],
                                  "grist_single_line": one,
                                  "datatrove_single_line": sum(n <= 1 for n in d_lines)}
        print(f"\nnon-empty lines per extracted text ({len(common)} pages extracted by both and "
              f"dropped by a grist filter): median grist {g_lines[len(common) // 2]}, datatrove "
              f"{d_lines[len(common) // 2]}; single-line texts: grist {one}, datatrove "
              f"{res['extracted_lines']['datatrove_single_line']}")

    # ---- 4. same text: per-document decisions
    ext_ids = list(dt_extracted)  # datatrove's extracted documents, in its order
    f_missing = [i for i in ext_ids if i not in f_fate]
    assert not f_missing, f"grist filters: {len(f_missing)} docs with no fate"
    same_stage = sum(dt_fate[i][0] == f_fate[i][0] for i in ext_ids)
    same = sum(dt_fate[i] == f_fate[i] for i in ext_ids)
    dis = [i for i in ext_ids if dt_fate[i] != f_fate[i]]
    kept_both = [i for i in ext_ids if dt_fate[i][0] == "kept" and f_fate[i][0] == "kept"]
    same_text = sum(dt_kept_text[i] == f_kept_text[i] for i in kept_both)
    res["same_text"] = {
        "documents": len(ext_ids), "agree": same, "agree_share": same / len(ext_ids),
        "agree_stage": same_stage, "agree_stage_share": same_stage / len(ext_ids),
        "counts": {"datatrove": counts(dt_fate, ext_ids), "grist": counts(f_fate, ext_ids)},
        "kept_both": len(kept_both), "kept_text_identical": same_text,
        "disagreements": [{"id": i, "url": dt_extracted[i]["url"], "datatrove": dt_fate[i],
                           "grist": f_fate[i]} for i in dis],
        "grist_seconds": f_wall,
        "grist_stage_seconds": {k2: v.get("seconds", 0.0) for k2, v in f_stats.items()},
    }
    st = res["same_text"]
    print(f"\n## Same text: grist's filters on datatrove's {len(ext_ids)} extracted documents\n")
    print(f"decision agreement (same stage and reason, or both kept): {same}/{len(ext_ids)} = "
          f"{100 * same / len(ext_ids):.2f}% (goal >= 99.5%); same stage: "
          f"{100 * same_stage / len(ext_ids):.2f}%")
    print(f"kept by both: {len(kept_both)}, identical final text: {same_text}")
    print("\n| stage | datatrove | grist |\n|---|---|---|")
    for s in STAGES[3:]:
        print(f"| {s} | {st['counts']['datatrove'][s]} | {st['counts']['grist'][s]} |")
    pair = Counter((f"{a[0]}:{a[1]}", f"{b[0]}:{b[1]}") for a, b in
                   ((dt_fate[i], f_fate[i]) for i in dis))
    if pair:
        print("\ndisagreements (datatrove -> grist: documents):")
        for (a, b), n in pair.most_common():
            print(f"  {a} -> {b}: {n}")
        for d in st["disagreements"][:15]:
            print(f"  {d['id']} {d['url']}: datatrove {d['datatrove']}, grist {d['grist']}")

    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=list))


if __name__ == "__main__":
    main()
