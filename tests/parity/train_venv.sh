#!/usr/bin/env bash
# Add what the trainer parity goldens (tests/parity/train_goldens.py -> tests/fixtures/train/) need
# to the megatron venv that tests/parity/tokens_venv.sh builds:
#
#   ~/.cache/grist/megatron-venv  + transformers (LlamaForCausalLM, its RoPE variants and masks),
#                                 safetensors (the fixture format), gguf (reference GGUF reader /
#                                 writer for the export side), accelerate (from_pretrained in
#                                 tests/parity/train_export_check.py).
#
# torch and numpy come from tokens_venv.sh (`tokens_venv.sh megatron`), which this runs first when
# the venv has no torch yet. The CPU is enough: the goldens are computed in float64 on the CPU.
#
# Idempotent: an existing venv is reused and pip only installs what is missing or at another
# version. Prints what it did, how long each step took, and the versions in the venv.
#
#   tests/parity/train_venv.sh
#
# Env: GRIST_MEGATRON_VENV (default ~/.cache/grist/megatron-venv), PYTHON (default python3.11, only
# used when tokens_venv.sh has to create the venv).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
megatron_venv="${GRIST_MEGATRON_VENV:-$HOME/.cache/grist/megatron-venv}"

# Same transformers as the tokens venv (tokens_venv.sh). safetensors / gguf: pinned to what the
# goldens were made with (the newest on PyPI when this was written).
TRANSFORMERS_VERSION=5.23.0
SAFETENSORS_VERSION=0.8.0
GGUF_VERSION=0.19.0
# accelerate: what from_pretrained uses to build the model without allocating random weights
# first (tests/parity/train_export_check.py loads `grist export` output with it).
ACCELERATE_VERSION=1.15.0

if [[ ! -x "$megatron_venv/bin/python" ]] || ! "$megatron_venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "venv $megatron_venv: no torch yet, building it with tokens_venv.sh megatron"
    GRIST_MEGATRON_VENV="$megatron_venv" bash "$here/tokens_venv.sh" megatron
else
    echo "venv $megatron_venv: exists ($("$megatron_venv/bin/python" --version 2>&1)), reusing"
fi

t0=$SECONDS
nice -n 19 "$megatron_venv/bin/python" -m pip --disable-pip-version-check -q install \
    "transformers==${TRANSFORMERS_VERSION}" "safetensors==${SAFETENSORS_VERSION}" "gguf==${GGUF_VERSION}" \
    "accelerate==${ACCELERATE_VERSION}"
echo "pip install transformers==${TRANSFORMERS_VERSION} safetensors==${SAFETENSORS_VERSION}" \
    "gguf==${GGUF_VERSION} accelerate==${ACCELERATE_VERSION} -> $((SECONDS - t0)) s"

# CUDA_VISIBLE_DEVICES="" proves nothing here needs a GPU.
CUDA_VISIBLE_DEVICES="" "$megatron_venv/bin/python" - <<PYCHECK
import importlib.metadata as m, platform
for dist, want in (("transformers", "${TRANSFORMERS_VERSION}"), ("safetensors", "${SAFETENSORS_VERSION}"),
                   ("gguf", "${GGUF_VERSION}"), ("accelerate", "${ACCELERATE_VERSION}")):
    assert m.version(dist) == want, (dist, m.version(dist), want)
import torch, numpy, safetensors.torch, gguf
from transformers import LlamaConfig, LlamaForCausalLM
print("train venv: python", platform.python_version(), " ".join(
    f"{d}=={m.version(d)}" for d in ("torch", "numpy", "transformers", "safetensors", "gguf", "accelerate")),
    "cuda available:", torch.cuda.is_available())
PYCHECK
