#!/usr/bin/env bash
# RobustT (ACL 2022) Table 1: dense rows (fine-tune, FreeLB) and pruned rows (LTH, robust
# ticket) under BERT-Attack (RobustT's construction), TextFooler and TextBugger; then the table.
# Resumable: rerun after an interruption; finished jobs are skipped (their records exist).
# A failed job does not stop the other sweeps or the aggregation; the exit status is non-zero.
# Arguments go to every sweep, e.g. `hydra/launcher=joblib hydra.launcher.n_jobs=2` or
# `hydra/launcher=slurm` (docs/scale_out.md).
# VARIANT=embedded: the embedded model (minilm_l6) and offline attacks (textfooler_offline,textbugger_offline).
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
V=()
AGG=()
case "${VARIANT:-}" in
  "") ;;
  embedded) V=(model=minilm_l6 attack=textfooler_offline,textbugger_offline) AGG=(--variant embedded) ;;
  *) echo "unknown VARIANT=$VARIANT (valid: embedded)" >&2; exit 2 ;;
esac
sweep() { python -m benchmark.run -m "experiment=$1" "${@:2}" "${V[@]}" "${ARGS[@]}" || status=1; }
ARGS=("$@")
sweep robustt_dense
sweep robustt_table1
results_dir=$(printf "%s\n" "$@" | sed -n "s/^paths.results_dir=//p" | tail -1)
python -m benchmark.aggregate --table robustt_table1 "${AGG[@]}" ${results_dir:+--results-dir "$results_dir"} || status=1
exit "$status"
