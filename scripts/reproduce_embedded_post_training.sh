#!/usr/bin/env bash
# Post-training pruners on the embedded model (MiniLM-L6, SST-2, offline attacks): the dense
# row, then magnitude / Wanda / SparseGPT / AKR at 30/50/70/87.5% x four offline attacks, then
# the tables (results/tables/embedded_post_training_embedded.{md,csv,tex}, the compact
# results/tables/summary_embedded_post_training.{md,csv}) and the leaderboard.
# Runs on a CPU; resumable (finished jobs are skipped). Arguments go to every sweep.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
sweep() { python -m benchmark.run -m "experiment=$1" "${@:2}" "${ARGS[@]}" || status=1; }
ARGS=("$@")
sweep embedded_post_training pruner=none sparsity=0.0
sweep embedded_post_training
results_dir=$(printf "%s\n" "$@" | sed -n "s/^paths.results_dir=//p" | tail -1)
python -m benchmark.aggregate --table embedded_post_training --variant embedded \
  --summary embedded_post_training \
  ${results_dir:+--results-dir "$results_dir"} || status=1
exit "$status"
