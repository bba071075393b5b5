"""``--table NAME``: one paper table (``conf/table/<name>.yaml``, built by
:mod:`benchmark.reporting.tables`) written to ``results/tables/<stem>.{md,csv,tex}``, with its
plots (:mod:`benchmark.reporting.plots`) under ``results/tables/plots/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from benchmark.reporting.mirror import log_table_to_wandb
from benchmark.reporting.plots import plot_sparsity_curves
from benchmark.reporting.tables import (
    build_tables,
    load_spec,
    render_latex,
    render_markdown,
    spec_records,
)

log = logging.getLogger(__name__)


def write_table(
    df: pd.DataFrame, name: str, results_dir: Path, variant: str | None = None,
    wandb_mode: str = "auto",
) -> pd.DataFrame:  # fmt: skip
    """Rebuild one paper table from the records ``df`` and write it under ``results/tables``.

    Writes ``<stem>.md`` (with links to the plots under ``plots/``), ``<stem>.csv`` (the same
    rows, with mean, std, interval bounds, n and the published value as separate numeric
    columns) and ``<stem>.tex``, where ``<stem>`` is the table name, suffixed with
    ``_<variant>`` for a variant. Returns the table.
    """
    spec = load_spec(name, variant)
    stem = f"{spec.name}_{variant}" if variant else spec.name
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    table, numbers = build_tables(df, spec)
    records = spec_records(df, spec)
    plots = plot_sparsity_curves(records, out / "plots", stem, spec.title.split(" — ")[0], spec)
    links = [str(p.relative_to(out)) for p in plots]
    (out / f"{stem}.md").write_text(render_markdown(table, spec, links), encoding="utf-8")
    numbers.to_csv(out / f"{stem}.csv", index=False)  # mean, std, ci_low, ci_high: own columns
    (out / f"{stem}.tex").write_text(render_latex(table, spec), encoding="utf-8")
    log.info("table %s: %d rows from %d records -> %s/%s.{md,csv,tex}", stem, len(table),
             len(records), out, stem)  # fmt: skip
    log_table_to_wandb(table, stem, records, wandb_mode)
    return table
