"""Accuracy on the attacked sample and accuracy under attack against sparsity, per method.

One PNG per (dataset, attack) with two panels: Clean% (accuracy on the attacked sample,
``attack_clean_acc``; the whole split's ``clean_acc`` where a record lacks it) and Aua%.
x = target sparsity; a point is the mean over seeds, its error bar the 95% interval of the
cell (``cells.cell_stats``: Wilson for one seed, cluster bootstrap over examples for
several). A dense row (sparsity 0 only) is a dashed horizontal reference line with its interval
shaded. y is fixed to [0, 100] so figures compare at a glance. Legends, x tick labels and
titles use the table's display names (``TableSpec.label`` / ``TableSpec.record_label``, the
functions the tables use): a method reads as in the table's ``Method`` column ("Weight
Average"), a dense reference line as "<method> (<sparsity-0 label>)" ("Fine-tune (Dense)"),
the ticks as the table's ``Sparsity`` labels ("≤30%", "87.5%"), a variant's substituted
attack as the table's column ("TextFooler" for ``textfooler_offline``; the caption of the
table says it is the offline variant). Without a spec the defaults of ``tables.DEFAULT_LABELS``
apply and methods keep their record names. Written with the non-interactive Agg backend, so
it works without a display.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reporting.cells import cell_stats
from benchmark.reporting.records import dedupe

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
        spec: the table spec, for display names of methods, sparsities, datasets and attacks
            (optional).

    Returns:
        The written files, sorted; empty when there is nothing to plot.
    """
    plt = _pyplot()
    records = _prepare(records)
    if records is None:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, attack), group in records.groupby(["dataset", "attack"], sort=True):
        fig = sparsity_figure(group, title, spec)
        path = out_dir / f"{prefix}_{file_slug(dataset)}_{file_slug(attack)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    log.info("plots: %d file(s) under %s", len(written), out_dir)
    return sorted(written)


def _pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _prepare(records: pd.DataFrame) -> pd.DataFrame | None:
    """Records with ``attack_clean_acc`` filled in, one per job; ``None``: nothing to plot."""
    need = {"method", "dataset", "attack", "sparsity_target", "aua"}
    if records.empty or not need <= set(records.columns):
        return None
    if not ({"attack_clean_acc", "clean_acc"} & set(records.columns)):
        return None
    records = records.copy()
    if "attack_clean_acc" not in records:
        records["attack_clean_acc"] = records["clean_acc"]
    elif "clean_acc" in records:
        records["attack_clean_acc"] = records["attack_clean_acc"].fillna(records["clean_acc"])
    return dedupe(records)


def file_slug(text: str) -> str:
    """A file-name-safe form of a label (``transfer (deepwordbug)`` -> ``transfer_deepwordbug``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_")


def display_names(spec: Any = None):
    """``(key, record value) -> display label`` as in the tables (see the module docstring)."""
    from benchmark.reporting.tables import TableSpec

    spec = spec if spec is not None else TableSpec(name="", title="")
    return spec.record_label


def sparsity_figure(group: pd.DataFrame, title: str = "", spec: Any = None):
    """The two-panel figure of the records of one (dataset, attack), as
    :func:`plot_sparsity_curves` writes it (open: the caller saves and closes it). Methods are
    drawn in the order of the spec's rows (else alphabetically)."""
    plt = _pyplot()
    group = _prepare(group)
    if group is None:
        raise ValueError("no records to plot (see plot_sparsity_curves for the columns)")
    label = display_names(spec)
    order = list(dict.fromkeys(r.get("method") for r in spec.rows)) if spec is not None else []
    dataset, attack = group["dataset"].iloc[0], group["attack"].iloc[0]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8), sharex=True)
    for ax, (col, ylabel) in zip(axes, PANELS, strict=True):
        _panel(ax, group, col, ylabel, label, order)
    handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle(f"{title} {label('dataset', dataset)} / {label('attack', attack)}".strip(),
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    return fig


def _points(group: pd.DataFrame, col: str) -> pd.DataFrame:
    """Mean and 95% interval (percent) per (method, sparsity)."""
    rows = []
    for (method, sparsity), recs in group.dropna(subset=[col]).groupby(
        ["method", "sparsity_target"], sort=True
    ):
        st = cell_stats(recs, col)
        rows.append({"method": method, "sparsity": float(sparsity), "mean": 100 * st["mean"],
                     "low": 100 * st["ci_low"], "high": 100 * st["ci_high"]})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", "sparsity", "mean", "low", "high"])


def _panel(ax, group: pd.DataFrame, col: str, ylabel: str, label, order: list) -> None:
    """One panel: mean over seeds per (method, sparsity), 95% intervals as error bars."""
    pts = _points(group, col)
    dense = label("sparsity", 0.0)
    dense = "dense" if dense == "0%" else dense  # no spec label for sparsity 0
    methods = sorted(pts["method"].unique(), key=lambda m: (m not in order,
                     order.index(m) if m in order else 0, str(m)))  # fmt: skip
    for method in methods:
        rows = pts[pts["method"] == method]
        rows = rows.sort_values("sparsity")
        name = label("method", method)
        if (rows["sparsity"] == 0).all():  # a dense row: a reference line
            r = rows.iloc[0]
            ax.axhline(r["mean"], ls="--", lw=1, color="gray", label=f"{name} ({dense})")
            if np.isfinite([r["low"], r["high"]]).all():
                ax.axhspan(r["low"], r["high"], color="gray", alpha=0.12, lw=0)
            continue
        err = np.vstack([
            (rows["mean"] - rows["low"]).fillna(0).clip(lower=0),
            (rows["high"] - rows["mean"]).fillna(0).clip(lower=0),
        ])  # fmt: skip
        ax.errorbar(rows["sparsity"] * 100, rows["mean"], yerr=err, marker="o", ms=4,
                    capsize=2, label=name)  # fmt: skip
    ticks = sorted(s for s in pts["sparsity"].unique() if s > 0)
    if ticks:  # the table's sparsity labels at the sparsities shown
        ax.set_xticks([100 * s for s in ticks], [label("sparsity", s) for s in ticks])
    ax.set_ylim(0, 100)
    ax.set_xlabel("target sparsity")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
