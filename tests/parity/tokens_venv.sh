#!/usr/bin/env bash
# Build (or reuse) the two venvs of the tokenizer / packed-format parity goldens:
#
#   ~/.cache/grist/tokens-venv    tokenizers (== the Rust crate's version), transformers, tiktoken,
#                                 numpy; runs tests/parity/tokenizer_goldens.py. No torch:
#                                 PreTrainedTokenizerFast works without it.
#   ~/.cache/grist/megatron-venv  torch (PyPI's default wheel, ~5 GB with its CUDA libraries; the
#                                 CPU is enough) + megatron-core + numpy; runs
#                                 tests/parity/megatron_goldens.py.
#
# Idempotent: an existing venv is reused and pip only installs what is missing or at another
# version. Prints what it did and how long each step took. Needs python3.11 and PyPI.
#
#   tests/parity/tokens_venv.sh              # both venvs
#   tests/parity/tokens_venv.sh tokens       # only the tokens venv
#   tests/parity/tokens_venv.sh megatron     # only the megatron venv
#
# Env: GRIST_TOKENS_VENV (default ~/.cache/grist/tokens-venv), GRIST_MEGATRON_VENV (default
# ~/.cache/grist/megatron-venv), PYTHON (default python3.11).
set -euo pipefail

tokens_venv="${GRIST_TOKENS_VENV:-$HOME/.cache/grist/tokens-venv}"
megatron_venv="${GRIST_MEGATRON_VENV:-$HOME/.cache/grist/megatron-venv}"
py="${PYTHON:-python3.11}"

# Must equal the `tokenizers` crate in Cargo.toml / Cargo.lock: the Python wheel wraps that crate,
# so the goldens then test grist's use of the crate, not a difference between crate versions.
TOKENIZERS_VERSION=0.23.2
# Pinned to what the goldens were made with (the newest on PyPI when this was written).
TRANSFORMERS_VERSION=5.23.0
TIKTOKEN_VERSION=0.14.0
NUMPY_VERSION=2.4.6
TORCH_VERSION=2.15.0
MEGATRON_CORE_VERSION=0.16.1

what=" ${*:-tokens megatron} "
for w in $what; do
    [[ "$w" == tokens || "$w" == megatron ]] || { echo "usage: $0 [tokens] [megatron]" >&2; exit 2; }
done

make_venv() {  # $1 = venv dir
    if [[ -x "$1/bin/python" ]]; then
        echo "venv $1: exists ($("$1/bin/python" --version 2>&1)), reusing"
    else
        mkdir -p "$(dirname "$1")"
        "$py" -m venv "$1"
        echo "venv $1: created with $("$1/bin/python" --version 2>&1)"
    fi
}

pip_install() {  # $1 = venv dir, rest = requirements
    local venv="$1"
    shift
    local t0=$SECONDS
    nice -n 19 "$venv/bin/python" -m pip --disable-pip-version-check -q install "$@"
    echo "pip install $* -> $((SECONDS - t0)) s"
}

if [[ "$what" == *" tokens "* ]]; then
    make_venv "$tokens_venv"
    pip_install "$tokens_venv" "tokenizers==${TOKENIZERS_VERSION}" "transformers==${TRANSFORMERS_VERSION}" \
        "tiktoken==${TIKTOKEN_VERSION}" "numpy==${NUMPY_VERSION}"
    "$tokens_venv/bin/python" - <<PYCHECK
import importlib.metadata as m, platform
assert m.version("tokenizers") == "${TOKENIZERS_VERSION}", m.version("tokenizers")
import tokenizers, tiktoken, numpy
from transformers import PreTrainedTokenizerFast  # must import without torch
try:
    m.version("torch")
    print("note: torch is installed in the tokens venv (not needed)")
except m.PackageNotFoundError:
    pass
print("tokens venv: python", platform.python_version(), " ".join(
    f"{d}=={m.version(d)}" for d in ("tokenizers", "transformers", "tiktoken", "numpy")))
PYCHECK
fi

if [[ "$what" == *" megatron "* ]]; then
    make_venv "$megatron_venv"
    pip_install "$megatron_venv" "torch==${TORCH_VERSION}" "numpy==${NUMPY_VERSION}"
    pip_install "$megatron_venv" "megatron-core==${MEGATRON_CORE_VERSION}"
    # CUDA_VISIBLE_DEVICES="" proves the import needs no GPU.
    CUDA_VISIBLE_DEVICES="" "$megatron_venv/bin/python" - <<PYCHECK
import importlib.metadata as m, platform, warnings
# megatron.core's __init__ imports its optimizer code, which warns that TE / Apex are missing.
warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
assert m.version("megatron-core") == "${MEGATRON_CORE_VERSION}", m.version("megatron-core")
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
import torch
print("megatron venv: python", platform.python_version(), " ".join(
    f"{d}=={m.version(d)}" for d in ("megatron-core", "torch", "numpy")),
    "cuda available:", torch.cuda.is_available())
PYCHECK
fi
