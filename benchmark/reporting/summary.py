"""``--summary EXP``: a compact table of experiments together, pruner x sparsity rows and
``Aua [95% interval] / Suc`` per attack (``results/tables/summary_<exp>[+<exp>].{md,csv}``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.reporting.cells import cell_stats, format_cell, is_degenerate
from benchmark.reporting.provenance import TIMING, caption_notes, threat_hash, timing_dependent
from benchmark.reporting.records import dedupe, identity_differences, identity_without_attack

log = logging.getLogger(__name__)


# Row and column order of the summary tables (others follow, alphabetically).
SUMMARY_PRUNERS = ("none", "magnitude", "magnitude_global", "wanda", "sparsegpt", "akr", "imp",
                   "lth", "rticket_no_adv", "rticket", "rticket_no_mask_learning", "seven",
                   "randmask")  # fmt: skip
SUMMARY_ATTACKS = ("deepwordbug", "pwws", "textfooler_offline", "textbugger_offline", "textfooler",
                   "textbugger", "bertattack", "bertattack_robustt", "cascade")  # fmt: skip


def _rank(order: tuple[str, ...], name: str) -> tuple[int, str]:
    return (order.index(name) if name in order else len(order), name)


def summary_table(df: pd.DataFrame, exp_names: list[str], n_boot: int = 10_000) -> pd.DataFrame:
    """One row per configuration (pruner, training budget, sparsity, ...) of ``exp_names``.

    Columns: sparsity reached, clean accuracy on the whole split, pruning seconds (means over
    seeds, ``seeds`` says how many), ``degenerate``, then ``Aua [95% interval] / Suc`` per
    attack (``SUMMARY_ATTACKS`` order); an attack a row was not run with reads ``not run``.
    Rows are ordered by sparsity, then experiment (as given) and pruner (``SUMMARY_PRUNERS``
    order). Percentages have one decimal, except Aua when no attack sample exceeds 100
    examples (one example is then one point: no decimals). A job stored twice counts once; the
    ``budget`` column is dropped when every row has the same training budget, ``differs``
    when no two configurations share pruner, budget and sparsity.
    """
    ok = df[(df["status"] == "ok") & df["exp_name"].isin(exp_names)].copy()
    if ok.empty:
        return pd.DataFrame()
    ok = dedupe(ok)
    if "_identity" not in ok:
        ok["_identity"] = ""
    # a row is a configuration without its attack
    ok["_row"] = _split_by_dense_model(ok, [identity_without_attack(i) for i in ok["_identity"]])
    ok["_exp"] = ok["exp_name"].map({e: i for i, e in enumerate(exp_names)})
    ok["_pruner"] = ok["pruner"].map(lambda p: _rank(SUMMARY_PRUNERS, p))
    # attack=none records (prune and clean accuracy only) give a row, not a column
    attacks = sorted((a for a in ok["attack"].unique() if a != "none"),
                     key=lambda a: _rank(SUMMARY_ATTACKS, a))  # fmt: skip
    # one column per (attack, attacked sample size, threat model): runs on 100 and on 872
    # sentences are different configurations, and two threat models (e.g. the same recipe
    # without and with a per-example time limit) are different attacks: never one cell
    if "n_total" not in ok:
        ok["n_total"] = np.nan
    ok["_tm"] = [threat_hash(r) or "" for r in ok.to_dict("records")]  # "": no block stored
    columns = []
    for a in attacks:
        runs = ok[ok["attack"] == a]
        sizes = sorted(runs["n_total"].dropna().astype(int).unique(), reverse=True) or [None]
        for n in sizes:
            at_n = runs if n is None else runs[runs["n_total"] == n]
            hashes = sorted(at_n["_tm"].unique())
            for h in hashes:  # the hash joins the label only where the attack has several
                size = "" if len(sizes) <= 1 else f" (n={n})"
                tag = f" [{h}]" if h and len(hashes) > 1 else ""
                columns.append((a, n, h, f"{a}{size}{tag}"))
    coarse = ok["n_total"].max() <= 100
    rows = []
    keys = ["sparsity_target", "_exp", "_pruner", "pruner", "budget"]
    for (sparsity, _e, _p, pruner, budget), group in ok.groupby(keys, sort=True, dropna=False):
        row_ids = sorted(group["_row"].unique())
        differs = (
            identity_differences([i or "{}" for i in row_ids])
            if len(row_ids) > 1
            else {row_ids[0]: ""}
        )
        for rid in row_ids:
            sub = group[group["_row"] == rid]
            clean = cell_stats(sub, "clean_acc", n_boot=n_boot)
            row = {
                "pruner": pruner, "budget": budget, "differs": differs[rid],
                "sparsity": sparsity, "actual %": round(100 * sub["sparsity_actual"].mean(), 1),
                "clean %": format_cell(clean["mean"], None, clean["ci_low"], clean["ci_high"]),
                "prune s": round(float(sub["prune_seconds"].mean()), 1),
                "inference ms (pruned / dense)": _latency_cell(sub),
                "seeds": sub["_run"].nunique(),
                "degenerate": "yes" if is_degenerate(sub, (clean["ci_low"], clean["ci_high"]))
                else "",
            }  # fmt: skip
            for attack, n_att, tm, label in columns:
                runs = sub[(sub["attack"] == attack) & (sub["_tm"] == tm)]
                if n_att is not None:
                    runs = runs[runs["n_total"] == n_att]
                if runs.empty:
                    cell = "not run"
                else:
                    aua, suc = cell_stats(runs, "aua", n_boot), cell_stats(runs, "asr", n_boot)
                    fmt = "{:.0f}" if coarse else "{:.1f}"
                    text = format_cell(aua["mean"], None, aua["ci_low"], aua["ci_high"], fmt=fmt)
                    cell = f"{text} / {100 * suc['mean']:.1f}"
                    if timing_dependent(runs):
                        cell += f" ({TIMING})"
                row[f"{label} Aua/Suc %"] = cell
            rows.append(row)
    table = pd.DataFrame(rows)
    notes = []
    if table["budget"].nunique(dropna=False) == 1:  # one budget: say it once, in the caption
        notes.append(f"Every row: `budget={table['budget'].iloc[0]}` (training budget).")
        table = table.drop(columns="budget")
    if not (table["differs"] != "").any():
        table = table.drop(columns="differs")
    if not (table["degenerate"] != "").any():
        table = table.drop(columns="degenerate")
    if not (table["inference ms (pruned / dense)"] != "").any():
        table = table.drop(columns="inference ms (pruned / dense)")
    extra = caption_notes(ok)
    table.attrs["notes"] = [*notes, *([extra] if extra else [])]
    return table


def _latency_cell(sub: pd.DataFrame) -> str:
    """Median forward latency of the pruned and of the dense model over a row's records
    (``inference_ms``, ``inference_ms_dense``: the job's device, a fixed batch); empty for
    records written before the field existed."""
    if "inference_ms" not in sub or sub["inference_ms"].dropna().empty:
        return ""
    pruned = float(sub["inference_ms"].dropna().median())
    dense = sub["inference_ms_dense"].dropna() if "inference_ms_dense" in sub else pd.Series()
    return f"{pruned:.0f} / {float(dense.median()):.0f}" if len(dense) else f"{pruned:.0f} / -"


def _split_by_dense_model(ok: pd.DataFrame, rows: list[str]) -> list[str]:
    """Row ids that never put two different models of one seed in one row.

    A summary row spans attacks, so its ``clean %`` would average the records of one seed
    even when they were pruned from different dense models (the same configuration fine-tuned
    by another version of the code: another ``dense_info.key``). The rows of such a (sparsity,
    pruner, budget) group are split by the records' ``schema_version`` when that separates
    the dense models (seeds of one version stay in one row), else by the dense model itself;
    ``differs`` names the key.
    """
    col = "dense_info.key"
    if col not in ok or ok[col].isna().all():
        return rows
    schema = ok["schema_version"] if "schema_version" in ok else pd.Series(None, index=ok.index)
    frame = pd.DataFrame({"row": rows, "run": ok["_run"].to_numpy(), "dense": ok[col].to_numpy(),
                          "schema": schema.to_numpy(),
                          "group": list(zip(ok["sparsity_target"], ok["pruner"], ok["budget"],
                                            strict=True))}, index=ok.index)  # fmt: skip
    known = frame.dropna(subset=["dense"])
    per_run = known.groupby(["row", "run"])["dense"].nunique()
    mixed_rows = set(per_run[per_run > 1].index.get_level_values("row"))
    if not mixed_rows:
        return rows
    by_schema = known.groupby(["row", "run", "schema"], dropna=False)["dense"].nunique()
    split_key = "schema_version" if (by_schema <= 1).all() else "dense_model"
    split_groups = set(frame.loc[frame["row"].isin(mixed_rows), "group"])
    out = []
    for row, dense, ver, group in zip(frame["row"], frame["dense"], frame["schema"],
                                      frame["group"], strict=True):  # fmt: skip
        if group in split_groups and isinstance(dense, str):
            d = json.loads(row) if row else {}
            d[split_key] = ver if split_key == "schema_version" else dense
            row = json.dumps(d, sort_keys=True, default=str)
        out.append(row)
    return out


SUMMARY_NOTE = (
    "Aua / Suc per attack in %, Aua with its 95% interval: Wilson from the counts for one seed, "
    "cluster bootstrap over examples of the attack logs for several (mean of per-seed Wilson "
    "bounds when a log is missing). `clean %` = accuracy on the whole evaluation split [Wilson]. "
    "`seeds` = seeds per row; a job stored under two experiments counts once. `degenerate` (when "
    "shown) = clean accuracy within its interval of the majority-class rate. `inference ms` = "
    "median forward latency of the pruned / the dense model on a fixed batch of 32 evaluation "
    "sentences on the job's device (a cost figure, measured while other jobs shared the CPU; "
    "masked weights give no speed-up on a CPU). Each attack column is one attack, one attacked "
    "sample size and one threat model (described below; its hash in brackets where an attack "
    "has several): records of two "
    "threat models are never averaged in one cell. docs/statistics.md."
)


def write_summary(df: pd.DataFrame, exp_names: list[str], results_dir: Path) -> Path:
    """Write ``results/tables/summary_<exp>[+<exp>...].{md,csv}``; return the Markdown path."""
    table = summary_table(df, exp_names)
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    stem = "summary_" + "+".join(exp_names)
    md = table.to_markdown(index=False) if not table.empty else "_no successful records_"
    caption = "\n\n".join([SUMMARY_NOTE, *table.attrs.get("notes", [])])
    (out / f"{stem}.md").write_text(caption + "\n\n" + md + "\n", encoding="utf-8")
    table.to_csv(out / f"{stem}.csv", index=False)
    log.info("summary %s: %d rows -> %s/%s.{md,csv}", stem, len(table), out, stem)
    return out / f"{stem}.md"
