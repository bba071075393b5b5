#!/usr/bin/env bash
# Training-based pruners on the embedded model under REDUCED budgets (MiniLM-L6, SST-2,
# four offline attacks): RobustT with and without its adversarial loss, SEVEN,
# randomized masks, IMP and LTH at 30/50%, then the summary beside the post-training pruners
# (results/tables/summary_embedded_post_training+embedded_training_reduced.{md,csv}).
# Runs on a CPU; resumable (finished jobs are skipped). Arguments go to the sweep.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
python -m benchmark.run -m experiment=embedded_training_reduced "$@" || status=1
results_dir=$(printf "%s\n" "$@" | sed -n "s/^paths.results_dir=//p" | tail -1)
python -m benchmark.aggregate --summary embedded_post_training \
  --summary embedded_training_reduced ${results_dir:+--results-dir "$results_dir"} || status=1
exit "$status"
