"""Clean accuracy and accuracy under attack against sparsity, one line per method.

One PNG per (dataset, attack): two panels (Clean%, Aua%), x = target sparsity, mean over
seeds with ±std error bars. Dense rows (sparsity 0 only) appear as dashed horizontal lines.
Written with the non-interactive Agg backend, so it works on machines without a display.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

PANELS = (("clean_acc", "Clean%"), ("aua", "Aua%"))


def plot_sparsity_curves(
    records: pd.DataFrame, out_dir: Path, prefix: str, title: str = ""
) -> list[Path]:
    """Write one PNG per (dataset, attack) of ``records`` and return their paths.

    Args:
        records: ok records with columns method, dataset, attack, sparsity_target, seed,
            clean_acc, aua (``tables.spec_records``).
        out_dir: folder for the PNG files (created).
        prefix: file name prefix, e.g. the table name.
        title: figure title prefix.

    Returns:
        The written files, sorted; empty when there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    need = {"method", "dataset", "attack", "sparsity_target", "clean_acc", "aua"}
    if records.empty or not need <= set(records.columns):
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, attack), group in records.groupby(["dataset", "attack"], sort=True):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
        for ax, (col, label) in zip(axes, PANELS, strict=False):
            _panel(ax, group, col, label)
        axes[1].legend(fontsize=7, loc="best")
        fig.suptitle(f"{title} {dataset} / {attack}".strip(), fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{prefix}_{dataset}_{attack}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    log.info("plots: %d file(s) under %s", len(written), out_dir)
    return sorted(written)


def _panel(ax, group: pd.DataFrame, col: str, label: str) -> None:
    """One panel: mean over seeds ± std per (method, sparsity), in percent."""
    stats = (
        group.dropna(subset=[col])
        .groupby(["method", "sparsity_target"])[col]
        .agg(["mean", "std"])
        .reset_index()
    )
    for method, rows in stats.groupby("method", sort=True):
        rows = rows.sort_values("sparsity_target")
        if (rows["sparsity_target"] == 0).all():  # a dense row: a reference line
            ax.axhline(rows["mean"].iloc[0] * 100, ls="--", lw=1, color="gray", label=str(method))
            continue
        x = rows["sparsity_target"] * 100
        ax.errorbar(
            x, rows["mean"] * 100, yerr=rows["std"].fillna(0) * 100, marker="o", ms=4,
            capsize=2, label=str(method),
        )  # fmt: skip
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
