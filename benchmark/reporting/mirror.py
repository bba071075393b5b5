"""The W&B mirror of the tables written: typed ``wandb.Table``s beside the CSVs, which stay the
source of truth (``--wandb auto|online|offline|off``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from benchmark.reporting.records import load_records

log = logging.getLogger(__name__)


def log_table_to_wandb(
    table: pd.DataFrame, name: str, records: pd.DataFrame, mode: str = "auto"
) -> bool:
    """Send a rebuilt table to W&B as a ``wandb.Table``; return whether it was logged.

    ``mode`` ``auto`` logs only when some of the table's jobs logged online (their
    ``logger.mode``), into the same project; ``online``/``offline`` force it; ``off`` never.
    The JSON records stay the source of truth: this is a mirror. Numbers are logged as
    numbers (:func:`benchmark.records.tracking.typed_frame`).
    """
    mode, project = _wandb_target(records, mode)
    if mode is None:
        return False
    from benchmark.records.tracking import log_tables

    return log_tables({name: table}, project=project, mode=mode, name=f"table-{name}")


def _wandb_target(records: pd.DataFrame, mode: str) -> tuple[str | None, str]:
    """(W&B mode or None for no logging, project) of ``--wandb mode`` for these records."""
    project = "robust-prune-bench"
    if mode == "auto":
        if records.empty or "logger_mode" not in records:
            return None, project
        online = records[records["logger_mode"] == "online"]
        if online.empty:
            return None, project
        projects = online["logger_project"].dropna()
        return "online", str(projects.iloc[0]) if len(projects) else project
    return (mode if mode in ("online", "offline") else None), project


def csv_stamps(results_dir: Path) -> dict[Path, int]:
    """mtime of every table CSV (leaderboard and ``tables/*.csv``), to tell what was written."""
    paths = [Path(results_dir) / "leaderboard.csv", *(Path(results_dir) / "tables").glob("*.csv")]
    return {p: p.stat().st_mtime_ns for p in paths if p.is_file()}


def mirror_tables_to_wandb(results_dir: Path, before: dict[Path, int], mode: str = "auto") -> bool:
    """Log every table CSV written since ``before`` (:func:`csv_stamps`): leaderboard, paper
    tables, summaries, comparisons, read back from disk, as typed ``wandb.Table``s
    ``tables/<stem>`` to one run of job type ``aggregate`` (``results/wandb/``). ``mode`` as in
    :func:`log_table_to_wandb`."""
    if mode == "off":
        return False
    written = sorted(p for p, t in csv_stamps(results_dir).items() if before.get(p) != t)
    if not written:
        return False
    records = load_records(results_dir) if mode == "auto" else pd.DataFrame()
    mode_, project = _wandb_target(records, mode)
    if mode_ is None:
        return False
    from benchmark.records.tracking import log_tables

    tables = {p.stem: pd.read_csv(p) for p in written}
    logged = log_tables(tables, project=project, mode=mode_, out_dir=Path(results_dir))
    if logged:
        log.info("W&B (%s): %d table(s) logged: %s", mode_, len(tables), ", ".join(tables))
    return logged
