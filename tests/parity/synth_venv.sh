#!/usr/bin/env bash
# Build (or reuse) the venv of the `grist synth` parity scripts:
#
#   ~/.cache/grist/synth-venv  rouge-score (Google's ROUGE, what Self-Instruct's
#                              bootstrap_instructions.py filters near-duplicates with: rougeL,
#                              no stemmer, keep an instruction only if its max score < 0.7) and
#                              the official `openai` client (talks to `grist serve`).
#
# Runs:
#   tests/parity/rouge_goldens.py        -> tests/fixtures/synth/rouge_pairs.jsonl
#   tests/parity/serve_openai_check.py   (needs a built grist binary)
#
# No torch here: the transformers side of the generation benchmark (tests/bench/synth_speed.py)
# runs in the megatron venv (tests/parity/train_venv.sh).
#
# Idempotent: an existing venv is reused and pip only installs what is missing or at another
# version. Prints what it did, how long each step took, and the versions in the venv.
#
#   tests/parity/synth_venv.sh
#
# Env: GRIST_SYNTH_VENV (default ~/.cache/grist/synth-venv), PYTHON (default python3.11).
set -euo pipefail

synth_venv="${GRIST_SYNTH_VENV:-$HOME/.cache/grist/synth-venv}"
py="${PYTHON:-python3.11}"

# Pinned to what the fixture was made with (the newest on PyPI when this was written).
# rouge-score's own dependencies (absl-py, nltk, numpy, six) are left to pip: the rougeL path with
# use_stemmer=False only uses `re`, `six.ensure_str` and plain Python arithmetic.
ROUGE_SCORE_VERSION=0.1.2
OPENAI_VERSION=3.54.0

if [[ -x "$synth_venv/bin/python" ]]; then
    echo "venv $synth_venv: exists ($("$synth_venv/bin/python" --version 2>&1)), reusing"
else
    mkdir -p "$(dirname "$synth_venv")"
    "$py" -m venv "$synth_venv"
    echo "venv $synth_venv: created with $("$synth_venv/bin/python" --version 2>&1)"
fi

t0=$SECONDS
nice -n 19 "$synth_venv/bin/python" -m pip --disable-pip-version-check -q install \
    "rouge-score==${ROUGE_SCORE_VERSION}" "openai==${OPENAI_VERSION}"
echo "pip install rouge-score==${ROUGE_SCORE_VERSION} openai==${OPENAI_VERSION} -> $((SECONDS - t0)) s"

"$synth_venv/bin/python" - <<PYCHECK
import importlib.metadata as m, platform
for dist, want in (("rouge-score", "${ROUGE_SCORE_VERSION}"), ("openai", "${OPENAI_VERSION}")):
    assert m.version(dist) == want, (dist, m.version(dist), want)
from rouge_score import rouge_scorer
import openai
s = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False).score("a b c d", "a c d e")["rougeL"].fmeasure
assert s == 0.75, s
def have(d):
    try:
        m.version(d)
        return True
    except m.PackageNotFoundError:
        return False
print("synth venv: python", platform.python_version(), " ".join(
    f"{d}=={m.version(d)}" for d in
    ("rouge-score", "openai", "nltk", "absl-py", "numpy", "six", "httpx", "httpx2", "pydantic") if have(d)))
PYCHECK
