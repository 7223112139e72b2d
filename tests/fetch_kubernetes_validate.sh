#!/usr/bin/env bash
# Installs kubernetes-validate 1.37.0 (the Kubernetes OpenAPI schemas of releases up to 1.37, as
# JSON Schema, with a validator) from PyPI into its own venv, and prints the path of its
# `kubernetes-validate` command. The tests validate `grist plan --emit k8s` against it.
#
#   tests/fetch_kubernetes_validate.sh      # -> ${GRIST_K8S_VENV:-~/.cache/grist/k8s-venv}
#
# The wheel (with the schemas) is pinned by sha256; its small dependencies (jsonschema, PyYAML,
# ...) come from PyPI at their current versions. Idempotent. Needs python3 with pip and venv.
set -euo pipefail
venv="${GRIST_K8S_VENV:-$HOME/.cache/grist/k8s-venv}"
exe="$venv/bin/kubernetes-validate"
WHEEL=kubernetes_validate-1.37.0-py3-none-any.whl
WHEEL_SHA256=85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9
if [[ -x "$exe" ]] && "$exe" --version 2>/dev/null | grep -q '1.37.0'; then
    echo "$exe"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp" "kubernetes-validate==1.37.0" >&2
echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum --check --quiet >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$tmp/$WHEEL" >&2
"$exe" --version >&2
echo "$exe"
