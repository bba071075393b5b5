#!/usr/bin/env bash
# Build a local Hugging Face Hub in DIR for rehearsing the papers' path offline, and print the
# `export` lines a run on it needs:
#
#   eval "$(scripts/rehearse.sh /tmp/hub)"
#   python -m benchmark.run $RPB_REHEARSAL_ARGS model=roberta_base dataset=sst2 pruner=wanda
#
# Every Hub model of conf/model (small random weights, the real architecture class, config keys,
# tokenizer type), every Hub dataset of conf/dataset (a few dozen rows, the real splits,
# columns and label types) and stand-ins of the stock attacks' downloads (counter-fitted
# embeddings, a Universal Sentence Encoder SavedModel, TextBugger's homoglyph list), each
# marked as a stand-in in its own metadata. See docs/rehearsal.md. PYTHON picks the interpreter (default: the
# project's .venv when it exists, else python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$here/../.venv/bin/python" ]]; then PYTHON="$here/../.venv/bin/python"; else PYTHON=python3; fi
fi
exec "$PYTHON" "$here/rehearse.py" "$@"
