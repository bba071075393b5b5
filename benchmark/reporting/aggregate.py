"""``python -m benchmark.aggregate``: records -> leaderboard and paper tables.

Reads every ``results/runs/**/<run_id>.json``, keeps status ``ok`` (failed ones are counted
and reported), and writes ``results/leaderboard.csv`` and ``.md``: one row per (model, dense
recipe, dataset, pruner, training budget, sparsity, attack), mean and std over seeds of each
metric, and n. ``--summary EXP`` (repeatable) writes a compact table of those experiments:
pruner x sparsity rows, Aua / Suc per attack (``results/tables/summary_<exp>[+<exp>].md``).

``--table <name>`` (a spec under ``conf/table/``; ``all`` for every spec) also rebuilds that
paper table in the paper's layout beside the published numbers (``benchmark.reporting.tables``), as
``results/tables/<name>.{md,csv,tex}`` (the numbers behind it are in the leaderboard), and plots
clean accuracy and Aua against sparsity under ``results/tables/plots/``. ``--variant
embedded`` reads the embedded-model / offline-attack runs of the same table instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)

KEYS = ["model", "dense", "dataset", "pruner", "budget", "sparsity_target", "attack"]
METRICS = [
    "dense_acc", "sparsity_actual", "clean_acc", "attack_clean_acc", "aua", "asr",
    "avg_queries", "prune_seconds",
]  # fmt: skip


def load_records(results_dir: Path) -> pd.DataFrame:
    """All records under ``results_dir/runs`` as a DataFrame (one row per record)."""
    rows = []
    for path in sorted((Path(results_dir) / "runs").glob("*/*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("skipping unreadable record %s: %s", path, exc)
            continue
        cfg = rec.pop("cfg", None) or {}
        # The dense recipe and the W&B mode live only in the resolved config.
        rec["dense"] = (cfg.get("choices") or {}).get("dense")
        rec["budget"] = (cfg.get("budget") or {}).get("name", "paper")  # training budget
        logger = cfg.get("logger") or {}
        rec["logger_mode"] = logger.get("mode") if logger.get("enabled") else None
        rec["logger_project"] = logger.get("project")
        rec["_path"] = str(path)
        rows.append(rec)
    return pd.json_normalize(rows) if rows else pd.DataFrame(columns=[*KEYS, "status"])


def leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and n over seeds per (model, dataset, pruner, sparsity, attack)."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=[*KEYS, "n"])
    metrics = [m for m in METRICS if m in ok.columns]
    grouped = ok.groupby(KEYS, dropna=False)[metrics]
    mean = grouped.mean().add_suffix("_mean")
    std = grouped.std(ddof=1).add_suffix("_std")  # NaN with a single seed
    n = grouped.size().rename("n")
    table = pd.concat([mean, std, n], axis=1).reset_index()
    order = [*KEYS, "n"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    return table[order].sort_values(KEYS).reset_index(drop=True)


def to_markdown(table: pd.DataFrame) -> str:
    """Markdown leaderboard: percentages as mean±std, queries and seconds as numbers."""
    if table.empty:
        return "_no successful records_\n"
    out = table[[*KEYS, "n"]].copy()
    for m in METRICS:
        if f"{m}_mean" not in table:
            continue
        pct = m not in ("avg_queries", "prune_seconds")
        scale, fmt = (
            (100.0, "{:.1f}") if pct else (1.0, "{:.1f}" if m == "avg_queries" else "{:.2f}")
        )
        out[m + (" %" if pct else "")] = [
            _mean_std(mu, sd, scale, fmt)
            for mu, sd in zip(table[f"{m}_mean"], table[f"{m}_std"], strict=True)
        ]
    return out.to_markdown(index=False) + "\n"


def _mean_std(mu: float, sd: float, scale: float, fmt: str) -> str:
    if pd.isna(mu):
        return "-"
    s = fmt.format(mu * scale)
    return s if pd.isna(sd) else f"{s}±{fmt.format(sd * scale)}"


def write_leaderboard(results_dir: Path) -> pd.DataFrame:
    """Write ``leaderboard.csv`` and ``leaderboard.md`` under ``results_dir``."""
    df = load_records(results_dir)
    failed = int((df["status"] != "ok").sum()) if not df.empty else 0
    if failed:
        log.warning("%d record(s) did not finish (status != ok); not in the leaderboard", failed)
    table = leaderboard(df)
    results_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(results_dir / "leaderboard.csv", index=False)
    (results_dir / "leaderboard.md").write_text(to_markdown(table), encoding="utf-8")
    log.info("leaderboard: %d rows from %d records -> %s", len(table), len(df), results_dir)
    return table


def write_table(
    df: pd.DataFrame, name: str, results_dir: Path, variant: str | None = None,
    wandb_mode: str = "auto",
) -> pd.DataFrame:  # fmt: skip
    """Rebuild one paper table from the records ``df`` and write it under ``results/tables``.

    Writes ``<stem>.md`` (with links to the plots under ``plots/``), ``<stem>.csv`` (the same
    layout) and ``<stem>.tex``, where ``<stem>`` is the table name, suffixed with
    ``_<variant>`` for a variant. Returns the table.
    """
    from benchmark.reporting.plots import plot_sparsity_curves
    from benchmark.reporting.tables import build_table, load_spec, render_latex, render_markdown, spec_records

    spec = load_spec(name, variant)
    stem = f"{name}_{variant}" if variant else name
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    table = build_table(df, spec)
    records = spec_records(df, spec)
    plots = plot_sparsity_curves(records, out / "plots", stem, spec.title.split(" — ")[0])
    links = [str(p.relative_to(out)) for p in plots]
    (out / f"{stem}.md").write_text(render_markdown(table, spec, links), encoding="utf-8")
    table.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.tex").write_text(render_latex(table, spec), encoding="utf-8")
    log.info("table %s: %d rows from %d records -> %s/%s.{md,csv,tex}", stem, len(table),
             len(records), out, stem)  # fmt: skip
    log_table_to_wandb(table, stem, records, wandb_mode)
    return table


# Row and column order of the summary tables (others follow, alphabetically).
SUMMARY_PRUNERS = ("none", "magnitude", "magnitude_global", "wanda", "sparsegpt", "akr", "imp",
                   "lth", "rticket_no_adv", "rticket", "rticket_no_mask_learning", "seven",
                   "randmask")  # fmt: skip
SUMMARY_ATTACKS = ("deepwordbug", "pwws", "textfooler_offline", "textbugger_offline", "textfooler",
                   "textbugger", "bertattack", "bertattack_robustt")  # fmt: skip


def _rank(order: tuple[str, ...], name: str) -> tuple[int, str]:
    return (order.index(name) if name in order else len(order), name)


def summary_table(df: pd.DataFrame, exp_names: list[str]) -> pd.DataFrame:
    """One row per (pruner, training budget, sparsity) of the experiments ``exp_names``.

    Columns: sparsity reached, clean accuracy, pruning seconds (means over seeds, ``seeds`` says
    how many), then ``Aua / Suc`` per attack (``SUMMARY_ATTACKS`` order); an attack a row was
    not run with reads ``not run``. Rows are ordered by sparsity, then experiment (as given)
    and pruner (``SUMMARY_PRUNERS`` order). Percentages have one decimal, except Aua when no
    attack sample exceeds 100 examples (one example is then one point: no decimals). The
    ``budget`` column is dropped when every row has the same training budget.
    """
    ok = df[(df["status"] == "ok") & df["exp_name"].isin(exp_names)].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["_exp"] = ok["exp_name"].map({e: i for i, e in enumerate(exp_names)})
    ok["_pruner"] = ok["pruner"].map(lambda p: _rank(SUMMARY_PRUNERS, p))
    attacks = sorted(ok["attack"].unique(), key=lambda a: _rank(SUMMARY_ATTACKS, a))
    coarse = "n_total" in ok and ok["n_total"].max() <= 100
    rows = []
    keys = ["sparsity_target", "_exp", "_pruner", "pruner", "budget"]
    for (sparsity, _e, _p, pruner, budget), group in ok.groupby(keys, sort=True, dropna=False):
        row = {
            "pruner": pruner, "budget": budget, "sparsity": sparsity,
            "actual %": round(100 * group["sparsity_actual"].mean(), 1),
            "clean %": round(100 * group["clean_acc"].mean(), 1),
            "prune s": round(float(group["prune_seconds"].mean()), 1),
            "seeds": group["seed"].nunique(),
        }  # fmt: skip
        for attack in attacks:
            runs = group[group["attack"] == attack]
            if runs.empty:
                cell = "not run"
            else:
                aua, suc = 100 * runs["aua"].mean(), 100 * runs["asr"].mean()
                cell = f"{aua:.0f} / {suc:.1f}" if coarse else f"{aua:.1f} / {suc:.1f}"
            row[f"{attack} Aua/Suc %"] = cell
        rows.append(row)
    table = pd.DataFrame(rows)
    if table["budget"].nunique(dropna=False) == 1:  # one budget: say it once, in the caption
        table = table.drop(columns="budget")
    return table


def write_summary(df: pd.DataFrame, exp_names: list[str], results_dir: Path) -> Path:
    """Write ``results/tables/summary_<exp>[+<exp>...].{md,csv}``; return the Markdown path."""
    table = summary_table(df, exp_names)
    out = Path(results_dir) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    stem = "summary_" + "+".join(exp_names)
    md = table.to_markdown(index=False) if not table.empty else "_no successful records_"
    (out / f"{stem}.md").write_text(md + "\n", encoding="utf-8")
    table.to_csv(out / f"{stem}.csv", index=False)
    log.info("summary %s: %d rows -> %s/%s.{md,csv}", stem, len(table), out, stem)
    return out / f"{stem}.md"


def log_table_to_wandb(
    table: pd.DataFrame, name: str, records: pd.DataFrame, mode: str = "auto"
) -> bool:
    """Send a rebuilt table to W&B as a ``wandb.Table``; return whether it was logged.

    ``mode`` ``auto`` logs only when some of the table's jobs logged online (their
    ``logger.mode``), into the same project; ``online``/``offline`` force it; ``off`` never.
    The JSON records stay the source of truth: this is a mirror.
    """
    project = "robust-prune-bench"
    if mode == "auto":
        if records.empty or "logger_mode" not in records:
            return False
        online = records[records["logger_mode"] == "online"]
        if online.empty:
            return False
        mode = "online"
        projects = online["logger_project"].dropna()
        project = str(projects.iloc[0]) if len(projects) else project
    if mode not in ("online", "offline"):
        return False
    import wandb

    run = wandb.init(project=project, job_type="aggregate", name=f"table-{name}", mode=mode,
                     reinit="finish_previous")  # fmt: skip
    try:
        run.log({f"tables/{name}": wandb.Table(dataframe=table.astype(str))})
    finally:
        run.finish()
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    from benchmark.reporting.tables import table_names

    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(prog="python -m benchmark.aggregate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--results-dir", type=Path, default=root / "results")
    ap.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="NAME",
        help=f"rebuild a paper table (repeatable; 'all'): {', '.join(table_names())}",
    )
    ap.add_argument(
        "--summary",
        action="append",
        default=[],
        metavar="EXP",
        help="a compact table (pruner x sparsity rows, Aua/Suc per attack) of these "
        "experiments together (repeatable): results/tables/summary_<exp>[+<exp>].{md,csv}",
    )
    ap.add_argument(
        "--variant",
        default=None,
        help="read a variant's runs, e.g. 'embedded' (conf/table/_variants.yaml)",
    )
    ap.add_argument(
        "--wandb",
        default="auto",
        choices=["auto", "online", "offline", "off"],
        help="mirror tables to W&B (auto: when the table's jobs logged online)",
    )
    args = ap.parse_args(argv)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.results_dir / "runs").is_dir():
        log.error(
            "error: no records under %s/runs; run `python -m benchmark.run` first", args.results_dir
        )
        return 2
    names = table_names() if "all" in args.table else args.table
    unknown = [n for n in names if n not in table_names()]
    if unknown:
        log.error("error: unknown table %s; valid: %s", unknown, ", ".join(table_names()))
        return 2
    write_leaderboard(args.results_dir)
    if names or args.summary:
        df = load_records(args.results_dir)
        for name in names:
            write_table(df, name, args.results_dir, args.variant, args.wandb)
        if args.summary:
            write_summary(df, args.summary, args.results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
