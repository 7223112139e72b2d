#!/usr/bin/env bash
# Prints the path of an NVRTC library (libnvrtc.so.13) that grist's CUDA kernels compile with,
# on a machine with no CUDA: the `nvidia-cuda-nvrtc` wheel from PyPI (CUDA 13's NVRTC), unpacked
# into ~/.cache/grist/nvrtc so a re-run is offline. `.ci/run` exports it as GRIST_NVRTC_LIB.
set -euo pipefail
cache="$HOME/.cache/grist/nvrtc"
lib=$(ls "$cache"/nvidia/cu13/lib/libnvrtc.so.13 2>/dev/null || true)
if [ -z "$lib" ]; then
  mkdir -p "$cache"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$cache" \
    "nvidia-cuda-nvrtc>=13,<14" >&2
  lib=$(ls "$cache"/nvidia/cu13/lib/libnvrtc.so.13)
fi
echo "$lib"
