#!/usr/bin/env bash
# Smoke: the tiny model on the tiny task (seconds on a CPU): the dense row and magnitude
# pruning at two sparsities, then the smoke table. E.g. add paths.results_dir=/tmp/r.
# Resumable: rerun after an interruption; finished jobs are skipped (their records exist).
# A failed job does not stop the other sweeps or the aggregation; the exit status is non-zero.
# Arguments go to every sweep, e.g. `hydra/launcher=joblib hydra.launcher.n_jobs=2` or
# `hydra/launcher=slurm` (docs/scale_out.md).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
V=()
AGG=()
sweep() { python -m benchmark.run -m "experiment=$1" "${@:2}" "${V[@]}" "${ARGS[@]}" || status=1; }
ARGS=("$@")
sweep smoke pruner=none sparsity=0.0
sweep smoke pruner=magnitude,magnitude_global sparsity=0.3,0.5
results_dir=$(printf "%s\n" "$@" | sed -n "s/^paths.results_dir=//p" | tail -1)
python -m benchmark.aggregate --table smoke ${results_dir:+--results-dir "$results_dir"} || status=1
exit "$status"
