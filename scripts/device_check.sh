#!/usr/bin/env bash
# The prepared GPU check (scripts/device_check.py): preflight under a minute, everything
# within 8 minutes, report in --out DIR (device_report.md / device_report.json).
#   bash scripts/device_check.sh --out DIR          # GPU machine
#   bash scripts/device_check.sh --smoke --out DIR  # CPU, tiny sizes, under 5 minutes
# Needs only python with torch and transformers (no hydra, omegaconf, textattack, network).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
export PYTHONUNBUFFERED=1
# hard stop a little after the script's own 450 s budget (parts are time-limited inside)
exec timeout --signal=INT --kill-after=20 480 "$PY" scripts/device_check.py "$@"
