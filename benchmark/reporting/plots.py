"""Accuracy on the attacked sample and accuracy under attack against sparsity, per method.

One PNG per (dataset, attack) with two panels: Clean% (accuracy on the attacked sample,
``attack_clean_acc``; the whole split's ``clean_acc`` where a record lacks it) and Aua%.
x = target sparsity; a point is the mean over seeds, its error bar the 95% interval of the
cell (``aggregate.cell_stats``: Wilson for one seed, cluster bootstrap over examples for
several). A dense row (sparsity 0 only) is a dashed horizontal reference line with its interval
shaded. y is fixed to [0, 100] so figures compare at a glance; legends use the table's display
names. Written with the non-interactive Agg backend, so it works without a display.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

PANELS = (("attack_clean_acc", "Clean% (attacked sample)"), ("aua", "Aua%"))


def plot_sparsity_curves(
    records: pd.DataFrame, out_dir: Path, prefix: str, title: str = "", spec: Any = None
) -> list[Path]:
    """Write one PNG per (dataset, attack) of ``records`` and return their paths.

    Args:
        records: ok records with columns method, dataset, attack, sparsity_target, seed,
            aua and attack_clean_acc or clean_acc (``tables.spec_records``).
        out_dir: folder for the PNG files (created).
        prefix: file name prefix, e.g. the table name.
        title: figure title prefix.
        spec: the table spec, for display names of methods, datasets and attacks (optional).

    Returns:
        The written files, sorted; empty when there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from benchmark.reporting.aggregate import dedupe

    need = {"method", "dataset", "attack", "sparsity_target", "aua"}
    if records.empty or not need <= set(records.columns):
        return []
    if not ({"attack_clean_acc", "clean_acc"} & set(records.columns)):
        return []
    records = records.copy()
    if "attack_clean_acc" not in records:
        records["attack_clean_acc"] = records["clean_acc"]
    elif "clean_acc" in records:
        records["attack_clean_acc"] = records["attack_clean_acc"].fillna(records["clean_acc"])
    records = dedupe(records)

    def label(key: str, value: Any) -> str:
        return spec.label(key, value) if spec is not None else str(value)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, attack), group in records.groupby(["dataset", "attack"], sort=True):
        fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), sharex=True)
        for ax, (col, ylabel) in zip(axes, PANELS, strict=True):
            _panel(ax, group, col, ylabel, lambda m: label("method", m))
        handles, labels = axes[1].get_legend_handles_labels()
        if handles:
            axes[1].legend(handles, labels, fontsize=7, loc="best")
        fig.suptitle(f"{title} {label('dataset', dataset)} / {label('attack', attack)}".strip(),
                     fontsize=10)  # fmt: skip
        fig.tight_layout()
        path = out_dir / f"{prefix}_{dataset}_{attack}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    log.info("plots: %d file(s) under %s", len(written), out_dir)
    return sorted(written)


def _points(group: pd.DataFrame, col: str) -> pd.DataFrame:
    """Mean and 95% interval (percent) per (method, sparsity)."""
    from benchmark.reporting.aggregate import cell_stats

    rows = []
    for (method, sparsity), recs in group.dropna(subset=[col]).groupby(
        ["method", "sparsity_target"], sort=True
    ):
        st = cell_stats(recs, col)
        rows.append({"method": method, "sparsity": float(sparsity), "mean": 100 * st["mean"],
                     "low": 100 * st["ci_low"], "high": 100 * st["ci_high"]})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "sparsity", "mean", "low", "high"])


def _panel(ax, group: pd.DataFrame, col: str, ylabel: str, name) -> None:
    """One panel: mean over seeds per (method, sparsity), 95% intervals as error bars."""
    pts = _points(group, col)
    for method, rows in pts.groupby("method", sort=True):
        rows = rows.sort_values("sparsity")
        if (rows["sparsity"] == 0).all():  # a dense row: a reference line
            r = rows.iloc[0]
            ax.axhline(r["mean"], ls="--", lw=1, color="gray", label=f"{name(method)} (dense)")
            if np.isfinite([r["low"], r["high"]]).all():
                ax.axhspan(r["low"], r["high"], color="gray", alpha=0.12, lw=0)
            continue
        err = np.vstack([
            (rows["mean"] - rows["low"]).fillna(0).clip(lower=0),
            (rows["high"] - rows["mean"]).fillna(0).clip(lower=0),
        ])  # fmt: skip
        ax.errorbar(rows["sparsity"] * 100, rows["mean"], yerr=err, marker="o", ms=4,
                    capsize=2, label=name(method))  # fmt: skip
    ax.set_ylim(0, 100)
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
