"""The leaderboard: one row per configuration, every metric's mean, std and 95% interval over
seeds (``results/leaderboard.{csv,md}``, written by every ``python -m benchmark.aggregate``).

Rows are configurations (:func:`benchmark.reporting.records.config_identity`), shown by model,
dense recipe, dataset, pruner, training budget, sparsity and attack; ``differs`` names what
separates rows that share those. A job stored twice counts once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.reporting.cells import PROPORTIONS, cell_stats, format_cell, is_degenerate
from benchmark.reporting.provenance import TIMING, TIMING_NOTE, threat_hashes, timing_dependent
from benchmark.reporting.records import KEYS, dedupe, identity_differences, load_records

log = logging.getLogger(__name__)


METRICS = [
    "dense_acc", "sparsity_actual", "clean_acc", "attack_clean_acc", "aua", "asr",
    "avg_queries", "prune_seconds",
]  # fmt: skip


def _rows_by_configuration(ok: pd.DataFrame, keys: list[str]):
    """(display key values, differs text, records) per configuration, sorted by keys."""
    ok = ok.copy()
    if "_identity" not in ok:
        ok["_identity"] = [json.dumps({k: r.get(k) for k in KEYS}, default=str)
                           for r in ok.to_dict("records")]  # fmt: skip
    for vals, group in ok.groupby(keys, dropna=False, sort=True):
        idents = sorted(group["_identity"].unique())
        differs = identity_differences(idents) if len(idents) > 1 else {idents[0]: ""}
        for ident in idents:
            yield vals, differs[ident], group[group["_identity"] == ident]


def leaderboard(df: pd.DataFrame, n_boot: int = 10_000, with_runs: bool = False) -> pd.DataFrame:
    """One row per configuration: mean, std, n (seeds) and 95% interval of each metric.

    Rows are configurations (``config_identity``), shown by (model, dense recipe, dataset,
    pruner, training budget, sparsity, attack); ``differs`` names what separates rows that
    share those. Duplicated jobs count once (:func:`dedupe`). ``with_runs`` adds ``run_ids``:
    the run ids of the records behind each row, sorted (the static site links them).
    """
    ok = dedupe(df[df["status"] == "ok"]) if "status" in df else df.iloc[0:0]
    if ok.empty:
        return pd.DataFrame(columns=[*KEYS, "n"])
    ok = ok.copy()
    if "model_label" in ok:
        ok["model"] = ok["model_label"].fillna(ok["model"])
    metrics = [m for m in METRICS if m in ok.columns]
    rows = []
    for vals, differs, recs in _rows_by_configuration(ok, KEYS):
        row = dict(zip(KEYS, vals, strict=True))
        row["differs"] = differs
        row["n"] = int(recs["_run"].nunique()) if "_run" in recs else len(recs)
        notes = set()
        clean_ci = (float("nan"), float("nan"))
        for m in metrics:
            st = cell_stats(recs, m, n_boot=n_boot)
            row[f"{m}_mean"], row[f"{m}_std"] = st["mean"], st["std"]
            if m in PROPORTIONS:
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = st["ci_low"], st["ci_high"]
                row[f"{m}_seed_ci_low"] = st["seed_ci_low"]
                row[f"{m}_seed_ci_high"] = st["seed_ci_high"]
                if st["ci"]:
                    notes.add(st["ci"])
            if m == "clean_acc":
                clean_ci = (st["ci_low"], st["ci_high"])
        for extra in ("majority_rate", "pred_majority_share", "constant_clf_aua"):
            if extra in recs and recs[extra].notna().any():
                row[extra] = float(recs[extra].dropna().mean())
        row["degenerate"] = is_degenerate(recs, clean_ci)
        row["threat_model"] = ",".join(threat_hashes(recs))
        row["timing_dependent"] = timing_dependent(recs)
        row["ci_method"] = "+".join(sorted(notes))
        logs = recs["_log"].notna().sum() if "_log" in recs else 0
        row["attack_logs"] = f"{logs}/{len(recs)}"
        if with_runs:
            row["run_ids"] = sorted(recs["run_id"].astype(str))
        rows.append(row)
    table = pd.DataFrame(rows)
    if not (table["differs"] != "").any():
        table = table.drop(columns="differs")
    return table.reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown leaderboard: percentages as ``mean [low, high]`` (±std over seeds when n > 1)."""
    if table.empty:
        return "_no successful records_\n"
    lead = [c for c in [*KEYS, "differs", "n"] if c in table]
    out = table[lead].copy()
    for m in METRICS:
        if f"{m}_mean" not in table:
            continue
        pct = m not in ("avg_queries", "prune_seconds")
        scale, fmt = (
            (100.0, "{:.1f}") if pct else (1.0, "{:.1f}" if m == "avg_queries" else "{:.2f}")
        )
        lows = table.get(f"{m}_ci_low", pd.Series(np.nan, index=table.index))
        highs = table.get(f"{m}_ci_high", pd.Series(np.nan, index=table.index))
        out[m + (" %" if pct else "")] = [
            format_cell(mu, sd, lo, hi, scale, fmt)
            for mu, sd, lo, hi in zip(
                table[f"{m}_mean"], table[f"{m}_std"], lows, highs, strict=True
            )
        ]
    out["degenerate"] = ["**yes**" if d else "" for d in table["degenerate"]]
    if "threat_model" in table:
        out["threat model"] = table["threat_model"]
    if "timing_dependent" in table:
        out[TIMING] = ["yes" if t else "" for t in table["timing_dependent"]]
    out["interval"] = table["ci_method"]
    out["logs"] = table["attack_logs"]
    note = (
        "Cells: mean over seeds (±sample std when n > 1) [95% interval]. `n` = seeds of one "
        "configuration (a job stored twice counts once). Interval: `wilson` = Wilson score "
        "interval from the record's counts (one seed); `bootstrap` = cluster bootstrap over "
        "examples of the attack logs (10,000 resamples, seed 0; all seeds of an example drawn "
        "together), conditional on these fine-tunes (the CSV's `<metric>_seed_ci_low/high` is "
        "the t-interval over seeds); `wilson-mean` = mean of the per-seed Wilson bounds (attack "
        "logs missing, or clean accuracy when the attack logs do not hold the whole split). "
        "`degenerate` = clean accuracy within its interval of the majority-class rate, or >= "
        "95% of the predictions in one class. `logs` = records with an attack log. "
        "`threat model` = the hash of the attack's threat model (a row is one threat model). "
        f"{TIMING_NOTE} See docs/statistics.md."
    )
    return note + "\n\n" + out.to_markdown(index=False) + "\n"


def write_leaderboard(results_dir: Path) -> pd.DataFrame:
    """Write ``leaderboard.csv`` and ``leaderboard.md`` under ``results_dir``; return the
    table with its ``run_ids`` column (:func:`leaderboard`), which the files leave out."""
    df = load_records(results_dir)
    failed = int((df["status"] != "ok").sum()) if not df.empty else 0
    if failed:
        log.warning("%d record(s) did not finish (status != ok); not in the leaderboard", failed)
    table = leaderboard(df, with_runs=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    table.drop(columns="run_ids", errors="ignore").to_csv(
        results_dir / "leaderboard.csv", index=False
    )
    (results_dir / "leaderboard.md").write_text(to_markdown(table), encoding="utf-8")
    log.info("leaderboard: %d rows from %d records -> %s", len(table), len(df), results_dir)
    return table
