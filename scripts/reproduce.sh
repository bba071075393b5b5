#!/usr/bin/env bash
# Run the sweeps behind a table (or an experiment preset), then rebuild it:
#   scripts/reproduce.sh akr_table1 [ARGS]          # ARGS go to every sweep
#   VARIANT=embedded scripts/reproduce.sh akr_table1  # the embedded model, offline attacks
#   scripts/reproduce.sh embedded_training_reduced   # a preset: its sweep and its summary
#   scripts/reproduce.sh akr_table1 --plan [ARGS]    # jobs, records, missing resources, cost
# Resumable (finished jobs are skipped). See benchmark/reporting/reproduce.py.
set -uo pipefail
cd "$(dirname "$0")/.."
exec python -m benchmark.reporting.reproduce "$@"
