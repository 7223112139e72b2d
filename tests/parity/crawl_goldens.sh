#!/usr/bin/env bash
# Regenerate the crawl-stage parity fixtures: tests/fixtures/parity/{pii.jsonl.gz,url_filter.jsonl.gz,
# VERSIONS_crawl.txt}, i.e. what datatrove 0.10.1's PIIFormatter() and URLFilter() (integrated lists)
# do to the web text / URLs in ../shared/data (or $GRIST_PARITY_DATA) and to generated edge cases.
# Needs python3 and PyPI, nothing else: the URL block lists ship inside the datatrove wheel, and
# tldextract is forced onto its bundled Public Suffix List snapshot (url_filter_goldens.py).
# Takes ~30 s on one core. Kept out of make_goldens.sh so that stays as fast as it is.
#
#   tests/parity/crawl_goldens.sh
#
# Env: GRIST_PARITY_VENV (default ~/.cache/grist/parity-venv, shared with make_goldens.sh),
# GRIST_PARITY_DATA (default /work/shared/data), HF_ASSETS_CACHE (where datatrove untars its lists;
# default here ~/.cache/grist/hf-assets), PYTHON (default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${GRIST_PARITY_VENV:-$HOME/.cache/grist/parity-venv}"
py="${PYTHON:-python3}"

DATATROVE_VERSION=0.10.1
# URLFilter's own requirements (datatrove declares them but does not pin them). tldextract's version
# fixes the Public Suffix List snapshot the goldens use; idna decodes punycode labels for it.
TLDEXTRACT_VERSION=5.4.0
IDNA_VERSION=3.21
PYAHOCORASICK_VERSION=2.3.1
FASTENERS_VERSION=0.20
# Reads WARC-Target-URI from the WARC samples.
WARCIO_VERSION=1.8.1

if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# Plain datatrove, not datatrove[processing]: neither stage needs the extras, and re-resolving
# [processing] would bring back fasttext-numpy2-wheel, which make_goldens.sh removes on purpose.
nice -n 19 "${pip[@]}" install "datatrove==${DATATROVE_VERSION}" "tldextract==${TLDEXTRACT_VERSION}" \
    "idna==${IDNA_VERSION}" "pyahocorasick==${PYAHOCORASICK_VERSION}" "fasteners==${FASTENERS_VERSION}" \
    "warcio==${WARCIO_VERSION}"

"$venv/bin/python" - <<PYCHECK
import importlib.metadata as m
for name, want in [("datatrove", "${DATATROVE_VERSION}"), ("tldextract", "${TLDEXTRACT_VERSION}"),
                   ("idna", "${IDNA_VERSION}"), ("pyahocorasick", "${PYAHOCORASICK_VERSION}"),
                   ("fasteners", "${FASTENERS_VERSION}"), ("warcio", "${WARCIO_VERSION}")]:
    assert m.version(name) == want, (name, m.version(name), want)
PYCHECK

export HF_ASSETS_CACHE="${HF_ASSETS_CACHE:-$HOME/.cache/grist/hf-assets}"
nice -n 19 "$venv/bin/python" "$here/pii_goldens.py"
nice -n 19 "$venv/bin/python" "$here/url_filter_goldens.py"
