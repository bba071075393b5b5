#!/usr/bin/env bash
# One-command set-up of robust-prune-bench: a virtual environment with torch, the project and
# its pinned dependencies, and the offline attack resources. Safe to run again.
#
#   bash scripts/setup.sh            # then: source .venv/bin/activate
#
# Environment knobs:
#   PYTHON=python3.11     interpreter to build the venv from (default python3)
#   VENV=.venv            where the venv goes
#   TORCH_VERSION=2.13.0  torch to install when the interpreter has none
#   DATA_DIR=/path        local dataset mirror (default ../shared/data when it exists)
#   SKIP_APT=1            do not apt-get WordNet (PWWS then needs NLTK's downloader online) nor
#                         Chromium (the site's browser test is then skipped)
#   SKIP_TF=1             leave out the `tf` extra (TensorFlow for the stock attacks' USE)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
say() { printf '[setup] %s\n' "$*"; }

# 1. torch first. If the interpreter already has torch (e.g. a CUDA build on a GPU machine),
#    keep it: the venv sees it through --system-site-packages and it is pinned below.
existing=$("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
if [ ! -x "$VENV/bin/python" ]; then
  if [ -n "$existing" ]; then
    say "keeping the interpreter's torch $existing"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip setuptools wheel
if ! "$PY" -c 'import torch' 2>/dev/null; then
  say "installing torch==$TORCH_VERSION"
  "$PY" -m pip install -q "torch==$TORCH_VERSION"
fi
installed=$("$PY" -c 'import torch; print(torch.__version__)')
constraints="$VENV/torch-constraint.txt"
echo "torch==$installed" > "$constraints"
say "torch $installed pinned ($constraints): pip may not replace it"

# 2. the project and its pinned dependencies (textattack 0.3.11 needs transformers 4.57.x and
#    datasets 4.8.x; an unpinned resolve never finishes).
#    The `tf` extra: TensorFlow and tensorflow-hub for TextAttack's Universal Sentence Encoder
#    (the stock attacks and their rehearsal, docs/rehearsal.md).
extras="dev"; [ -z "${SKIP_TF:-}" ] && extras="dev,tf"
"$PY" -m pip install -q -c "$constraints" -e ".[$extras]"

# 3. WordNet for PWWS from Debian (offline source of NLTK's wordnet corpus).
if [ -z "${SKIP_APT:-}" ] && [ ! -f /usr/share/wordnet/data.noun ] && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
  say "installing Debian wordnet-base wordnet-sense-index"
  if ! $SUDO apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null 2>&1 || true
    $SUDO apt-get install -y -q wordnet-base wordnet-sense-index >/dev/null 2>&1 \
      || say "WARNING: could not install WordNet; PWWS needs 'python -m nltk.downloader wordnet' online"
  fi
fi

# 3b. Debian's Chromium for the static site's browser test (tests/test_site.py), driven by
#     Playwright (a dev dependency) through its executable path: Playwright's own browser
#     download is not used.
if [ -z "${SKIP_APT:-}" ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo -n"
  say "installing Debian chromium (the site's browser test)"
  if ! $SUDO apt-get install -y -q chromium >/dev/null 2>&1; then
    $SUDO apt-get update -q >/dev/null 2>&1 || true
    $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
      || say "WARNING: could not install chromium; the site's browser test will be skipped"
  fi
fi

# 4. offline resources into .resources/nltk_data (stopwords, WordNet, POS tagger, TextAttack marker).
"$PY" -m benchmark.attacks.resources prepare

# 5. machine-local config: the dataset mirror (git-ignored conf/local/default.yaml).
data_dir=${DATA_DIR:-}
if [ -z "$data_dir" ] && [ -d ../shared/data ]; then data_dir=$(cd ../shared/data && pwd); fi
if [ -n "$data_dir" ]; then
  mkdir -p conf/local
  printf '# @package _global_\n# Written by scripts/setup.sh: machine-local settings.\npaths:\n  data_dir: %s\n' \
    "$data_dir" > conf/local/default.yaml
  say "datasets from the local mirror $data_dir (conf/local/default.yaml)"
else
  say "no local dataset mirror: datasets come from the Hugging Face Hub"
fi
say "done. Activate with: source $VENV/bin/activate"
