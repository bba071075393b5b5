"""``python -m benchmark.aggregate``: records -> leaderboard and paper tables.

Reads every ``results/runs/**/<run_id>.json`` (and its ``<run_id>.attack.jsonl.gz`` attack log
when there is one), keeps status ``ok`` (failed ones are counted and reported), and writes
``results/leaderboard.csv`` and ``.md``: one row per configuration (the record's ``cfg``
without the seed; shown by model, dense recipe, dataset, pruner, training budget, sparsity,
attack), a job stored twice counted once; mean, std, 95% interval over seeds of each metric,
n, and whether the model is degenerate (docs/statistics.md). ``--summary EXP`` (repeatable)
writes a compact table of those experiments: pruner x sparsity rows, Aua [interval] / Suc per
attack (``results/tables/summary_<exp>[+<exp>].md``).

``--table <name>`` (a spec under ``conf/table/``; ``all`` for every spec) also rebuilds that
paper table in the paper's layout beside the published numbers (``benchmark.reporting.tables``), as
``results/tables/<name>.{md,csv,tex}`` (the numbers behind it are in the leaderboard), and plots
clean accuracy and Aua against sparsity under ``results/tables/plots/``. ``--variant
embedded`` reads the embedded-model / offline-attack runs of the same table instead.

``--compare EXP --reference PRUNER[@SPARSITY]`` writes paired per-example comparisons of EXP's
rows against the reference (``results/tables/compare_<EXP>.{csv,md}``,
``benchmark.reporting.compare``). ``--effects NAME`` writes the effect table of
``conf/effects/NAME.yaml``: one method's configurations (options, versions) side by side, each
paired against its reference row (``results/tables/effects_NAME.{md,csv}``,
``benchmark.reporting.effects``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.records.logs import find_log, read_text, run_id_of_log
from benchmark.records.logs import log_path as log_file_path
from benchmark.records.logs import resolve as resolve_log
from benchmark.records.store import CorruptRecord, missing_keys, read_record, with_defaults
from benchmark.reporting.provenance import (
    TIMING,
    TIMING_NOTE,
    caption_notes,
    threat_hash,
    threat_hashes,
    timing_dependent,
)
from benchmark.reporting.stats import cluster_bootstrap, seed_t_test, wilson_interval

log = logging.getLogger(__name__)

KEYS = ["model", "dense", "dataset", "pruner", "budget", "sparsity_target", "attack"]
METRICS = [
    "dense_acc", "sparsity_actual", "clean_acc", "attack_clean_acc", "aua", "asr",
    "avg_queries", "prune_seconds",
]  # fmt: skip
# Proportions that get an interval (fractions); the others get mean and std only.
PROPORTIONS = ("clean_acc", "attack_clean_acc", "aua", "asr")
BOOTSTRAP_SEED = 0
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# Loading: records, identity, attack logs


def config_identity(cfg: dict[str, Any] | None, rec: dict[str, Any]) -> dict[str, Any]:
    """What makes a record's configuration: its resolved ``cfg`` minus the seed and what follows
    from it (``attack.seed``, ``dense.seed`` when equal to ``seed``), minus the keys that do
    not change results (the run id's ``NON_IDENTITY_KEYS`` and ``NON_IDENTITY_NESTED``), minus
    ``exp_name`` and ``attack_build``; plus the record's own names (model, dataset, pruner,
    attack, sparsity, training budget), so that records without a full ``cfg`` still separate.
    """
    from benchmark.records.store import (
        ATTACK_IDENTITY,
        NON_IDENTITY_KEYS,
        without_nested_non_identity,
    )

    cfg = copy.deepcopy(cfg or {})
    seed = cfg.get("seed", rec.get("seed"))
    drop = {*NON_IDENTITY_KEYS, "seed", "exp_name", "attack_build"}
    ident = without_nested_non_identity({k: v for k, v in cfg.items() if k not in drop})
    if isinstance(ident.get("attack"), dict):
        ident["attack"].pop("seed", None)
        for key in ATTACK_IDENTITY:  # the attack's parts of the run id travel with the attack
            if key in ident:
                ident["attack"][key] = ident.pop(key)
    if isinstance(ident.get("dense"), dict) and ident["dense"].get("seed", object()) == seed:
        ident["dense"].pop("seed")
    ident["_record"] = {k: rec.get(k) for k in ("model", "dataset", "pruner", "attack",
                                                "sparsity_target", "budget", "dense")}  # fmt: skip
    return ident


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.cache
def _default_pretrained(model: str) -> str | None:
    path = ROOT / "conf" / "model" / f"{model}.yaml"
    if not path.is_file():
        return None
    import yaml

    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("pretrained")


def model_label(model: str | None, cfg: dict[str, Any] | None) -> str | None:
    """The model option, with the local folder name when ``pretrained`` is not its default."""
    pretrained = ((cfg or {}).get("model") or {}).get("pretrained")
    if model is None or pretrained is None or ":" in str(model):  # schema 3 names it already
        return model
    default = _default_pretrained(str(model))
    if default is None or pretrained == default:
        return model
    return f"{model} ({Path(str(pretrained).rstrip('/')).name})"


@functools.cache
def _majority_from_file(path: str, label_column: str) -> float | None:
    try:
        labels = pd.read_csv(path)[label_column]
    except (OSError, KeyError, ValueError):
        return None
    return float(labels.value_counts().max() / len(labels)) if len(labels) else None


def majority_rate(rec: dict[str, Any], cfg: dict[str, Any] | None) -> float | None:
    """Share of the majority class on the evaluation split: the record's ``majority_rate``,
    else counted from the split's CSV under ``paths.data_dir``/``dataset.local_name``."""
    if rec.get("majority_rate") is not None:
        return float(rec["majority_rate"])
    cfg = cfg or {}
    ds = cfg.get("dataset") or {}
    data_dir = (cfg.get("paths") or {}).get("data_dir")
    split = ds.get("eval_split") or rec.get("split")
    if not (data_dir and split and ds.get("local_name")):
        return None
    path = Path(data_dir) / str(ds["local_name"]) / f"{split}.csv"
    return _majority_from_file(str(path), str(ds.get("label_column") or "label"))


LOG_RESULTS = {"successful", "failed", "skipped", "limit"}


@functools.lru_cache(maxsize=256)
def _read_log_cached(path: str, mtime: float) -> tuple[dict[str, Any], ...] | None:
    rows = []
    try:
        for line in read_text(path).splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("result") == "success":  # older spelling
                row["result"] = "successful"
            rows.append(row)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("unreadable attack log %s: %s", path, exc)
        return None
    return tuple(rows)


def read_attack_log(path: str | Path | None) -> list[dict[str, Any]] | None:
    """The rows of ``<run_id>.attack.jsonl.gz`` (or a plain ``.attack.jsonl`` of an older
    schema; ``None`` when it is missing or unreadable)."""
    if path is None or not isinstance(path, (str, Path)) or not str(path):
        return None  # missing (NaN in a DataFrame column)
    p = resolve_log(path)
    if not p.is_file():
        return None
    rows = _read_log_cached(str(p), p.stat().st_mtime)
    return None if rows is None else list(rows)


def transfer_label(cfg: dict[str, Any], folder: Path | None = None) -> str:
    """``transfer (<source attack>)`` for an ``attack=transfer`` record: the attack of the
    record beside its source log (``transfer (?)`` when that record is not there)."""
    source = ((cfg.get("attack") or {}).get("options") or {}).get("source")
    src_attack = "?"
    # schema 3: the source's (migrated) run id is identity; the path is as the job was given it
    run_id = (cfg.get("transfer_source") or {}).get("run_id") or (
        run_id_of_log(source) if source else None
    )
    places = [p for p in (folder, Path(str(source)).parent if source else None) if p]
    for place in places if run_id else []:  # beside the transfer record first (any clone)
        with contextlib.suppress(OSError, json.JSONDecodeError):
            src_attack = (
                json.loads((place / f"{run_id}.json").read_text(encoding="utf-8")).get("attack")
                or "?"
            )
            break
    return f"transfer ({src_attack})"


def log_problem(path: Path, rec: dict[str, Any]) -> str | None:
    """Why an attack log cannot stand for its record (None when it can): empty, unreadable,
    or its lines disagree with the record's counts (``n_total``, ``n_failed``)."""
    if path.stat().st_size == 0:
        return "empty file"
    rows = read_attack_log(path)
    if rows is None:
        return "unreadable"
    if rec.get("n_total") is not None and len(rows) != int(rec["n_total"]):
        return f"{len(rows)} lines, the record counts n_total={int(rec['n_total'])}"
    failed = sum(r.get("result") == "failed" for r in rows)
    if rec.get("n_failed") is not None and failed != int(rec["n_failed"]):
        return f"{failed} lines survived, the record counts n_failed={int(rec['n_failed'])}"
    return None


def attack_log_path(record_path: Path) -> Path:
    """Where the attack log of a record lives (beside it): the compressed log, or the plain log
    of an older schema when only that exists."""
    run_id = record_path.name.removesuffix(".json")
    return find_log(record_path.parent, run_id) or log_file_path(record_path.parent, run_id)


def log_values(rows: list[dict[str, Any]], metric: str) -> list[tuple[Any, float]]:
    """(example_index, value) per example of a log for a proportion of the attack sample.

    ``aua``: survived (``failed``); ``attack_clean_acc``: attacked (not ``skipped``); ``asr``:
    broken (``successful``) among the examples attacked to the end (successful or failed).
    """
    out = []
    for i, r in enumerate(rows):
        key = r.get("example_index", i)
        res = r.get("result")
        if metric == "aua":
            out.append((key, float(res == "failed")))
        elif metric == "attack_clean_acc":
            out.append((key, float(res != "skipped")))
        elif metric == "asr" and res in ("successful", "failed"):
            out.append((key, float(res == "successful")))
    return out


def load_records(results_dir: Path) -> pd.DataFrame:
    """All records under ``results_dir/runs`` as a DataFrame (one row per record).

    Adds ``_identity`` (the configuration, JSON), ``model_label``, ``majority_rate``, and
    ``_log`` (the attack log's path, or ``None`` when it is missing).
    """
    rows = []
    for path in sorted((Path(results_dir) / "runs").glob("*/*.json")):
        try:
            rec = read_record(path)
        except CorruptRecord as exc:  # truncated or hand-edited: named, and the rest goes on
            log.warning("skipping %s", exc)
            continue
        if rec is None:  # removed while listing
            continue
        missing = missing_keys(rec)
        if missing:  # a hand edit or partial copy: named, and read with empty values
            log.warning("record %s lacks key(s) %s; read with those empty", path,
                        ", ".join(missing))  # fmt: skip
        rec = with_defaults(rec)  # every field a column, also where an edit dropped one
        cfg = rec.pop("cfg", None) or {}
        # The dense recipe and the W&B mode live only in the resolved config.
        rec["dense"] = (cfg.get("choices") or {}).get("dense")
        rec["budget"] = (cfg.get("budget") or {}).get("name") or "paper"  # training budget
        logger = cfg.get("logger") or {}
        rec["logger_mode"] = logger.get("mode") if logger.get("enabled") else None
        rec["logger_project"] = logger.get("project")
        if rec.get("attack") == "transfer":  # name the source attack: one column per source
            rec["attack"] = transfer_label(cfg, path.parent)
        rec["_identity"] = json.dumps(config_identity(cfg, rec), sort_keys=True, default=str)
        rec["model_label"] = model_label(rec.get("model"), cfg)
        rec["majority_rate"] = majority_rate(rec, cfg)
        log_path = attack_log_path(path)
        rec["_log"] = str(log_path) if log_path.is_file() else None
        if rec["_log"] and rec.get("status") == "ok":
            problem = log_problem(log_path, rec)
            if problem:  # named once, and left out of every paired test
                log.warning("attack log %s left out: %s", log_path, problem)
                rec["_log"], rec["_log_problem"] = None, f"{log_path.name}: {problem}"
        rec["_path"] = str(path)
        rows.append(rec)
    if not rows:
        return pd.DataFrame(columns=[*KEYS, "status"])
    df = pd.json_normalize(rows)
    return df


RESULT_FIELDS = ("clean_acc", "attack_clean_acc", "aua", "asr", "n_total", "n_success",
                 "n_failed", "n_skipped", "sparsity_actual")  # fmt: skip


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One record per job: the same ``run_id`` found twice, or the same configuration and seed
    with the same results (a job copied under another exp_name), is kept once (the one with an
    attack log, then the newest). Same configuration and seed with DIFFERENT results are kept
    (with a warning): they are different runs, not copies.
    """
    if df.empty:
        return df
    out = df.copy()
    if "_identity" not in out:
        out["_identity"] = [
            json.dumps({k: r.get(k) for k in KEYS}, default=str) for r in out.to_dict("records")
        ]
    has_log = out["_log"].notna() if "_log" in out else pd.Series(False, index=out.index)
    started = out["started_at"].fillna("") if "started_at" in out else ""
    out = out.assign(_haslog=has_log, _started=started)
    out = out.sort_values(["_haslog", "_started"], ascending=False, kind="stable")
    n0 = len(out)
    if "run_id" in out:
        ids = out["run_id"]
        out = out[ids.isna() | ~ids.duplicated(keep="first")]
    fields = [f for f in RESULT_FIELDS if f in out]
    # element-wise str: pandas 3's astype(str) keeps missing values as NaN (records without an
    # attack, e.g. attack=none, have no counts), which "|".join cannot take
    sig = (out[fields].round(9).map(lambda v: "nan" if pd.isna(v) else str(v))
           .agg("|".join, axis=1)) if fields else ""  # fmt: skip
    seed = out["seed"].astype(str) if "seed" in out else ""
    key = out["_identity"].astype(str) + "#" + seed
    out = out[~(key + "#" + sig).duplicated(keep="first")]
    key = key.loc[out.index]
    clash = key[key.duplicated(keep=False)]
    if len(clash):
        log.warning("%d record(s) share configuration and seed but differ in results; kept "
                    "apart: %s", len(clash), sorted(set(out.loc[clash.index, "_path"]
                    if "_path" in out else clash.index)))  # fmt: skip
    # the run of a record: its seed, numbered when results of one seed differ (kept apart)
    out["_run"] = (
        (out["seed"].astype(str) if "seed" in out else "0")
        + "#"
        + (key.groupby(key).cumcount().astype(str))
    )
    if len(out) < n0:
        log.info("dedupe: %d duplicate record(s) of the same job counted once", n0 - len(out))
    return out.drop(columns=["_haslog", "_started"]).sort_index()


# ---------------------------------------------------------------------------------------------
# Cells: mean, std, interval


def _counts(rec: dict[str, Any], metric: str) -> tuple[int, int] | None:
    """(successes, trials) of a proportion in one record, or ``None`` when not recorded."""

    def num(key):
        v = rec.get(key)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    if metric == "clean_acc":
        acc, n = num("clean_acc"), num("n_eval")
        return None if acc is None or not n else (round(acc * n), int(n))
    total, succ, fail, skip = (num(k) for k in ("n_total", "n_success", "n_failed", "n_skipped"))
    if metric == "aua" and total and fail is not None:
        return int(fail), int(total)
    if metric == "attack_clean_acc" and total and skip is not None:
        return int(total - skip), int(total)
    if metric == "asr" and succ is not None and fail is not None and succ + fail > 0:
        return int(succ), int(succ + fail)
    return None


def record_interval(rec: dict[str, Any], metric: str) -> tuple[float, float]:
    """95% interval of one record's proportion: its stored ``<metric>_ci_low/_ci_high``, else
    Wilson from its counts; NaN when neither is there."""
    lo, hi = rec.get(f"{metric}_ci_low"), rec.get(f"{metric}_ci_high")
    if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
        return float(lo), float(hi)
    counts = _counts(rec, metric)
    return wilson_interval(*counts) if counts else (float("nan"), float("nan"))


def cell_stats(
    recs: pd.DataFrame, metric: str, n_boot: int = 10_000, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """Mean, std (over seeds), n, 95% interval and how it was computed, of one metric.

    One value per seed (records of one configuration). Interval: one seed -> Wilson from the
    record's counts (``wilson``); several -> cluster bootstrap over examples of the attack logs
    (``bootstrap``, conditional on these fine-tunes; clean accuracy too when every log holds the
    whole split, :func:`_whole_split`), or the mean of the per-seed Wilson bounds when a log is
    missing or the metric has none (``wilson-mean``). Several seeds also give
    ``seed_ci_low/high``: the random-effects t-interval over the per-seed values (the seed is the
    unit; :func:`benchmark.reporting.stats.seed_t_test`).
    """
    out = {"mean": float("nan"), "std": float("nan"), "n": 0, "ci_low": float("nan"),
           "ci_high": float("nan"), "ci": "", "seed_ci_low": float("nan"),
           "seed_ci_high": float("nan")}  # fmt: skip
    if metric not in recs:
        return out
    ok = recs[recs[metric].notna()]
    if "seed" not in ok:
        ok = ok.assign(seed=0)
    run = "_run" if "_run" in ok else "seed"
    per_seed = ok.groupby(run)
    values = per_seed[metric].mean().astype(float)
    if values.empty:
        return out
    out.update(mean=float(values.mean()), n=len(values),
               std=float(values.std(ddof=1)) if len(values) > 1 else float("nan"))  # fmt: skip
    if metric not in PROPORTIONS:
        return out
    firsts = [g.iloc[0].to_dict() for _, g in per_seed]
    if len(firsts) == 1:
        lo, hi = record_interval(firsts[0], metric)
        out.update(ci_low=lo, ci_high=hi, ci="wilson" if not pd.isna(lo) else "")
        return out
    _, seed_lo, seed_hi, _ = seed_t_test(values.tolist())
    out.update(seed_ci_low=seed_lo, seed_ci_high=seed_hi)
    logs = [read_attack_log(r.get("_log")) for r in firsts]
    whole = all(_whole_split(r, lg) for r, lg in zip(firsts, logs, strict=True))
    if (metric != "clean_acc" or whole) and all(lg for lg in logs):
        per_example = "attack_clean_acc" if metric == "clean_acc" else metric
        cl, sd, vals = [], [], []
        for r, lg in zip(firsts, logs, strict=True):
            for key, v in log_values(lg, per_example):
                cl.append(key)
                sd.append(r["seed"])
                vals.append(v)
        _, lo, hi = cluster_bootstrap(cl, sd, vals, n_boot=n_boot, seed=seed)
        out.update(ci_low=lo, ci_high=hi, ci="bootstrap")
        return out
    bounds = np.array([record_interval(r, metric) for r in firsts], dtype=float)
    if np.isfinite(bounds).all():
        out.update(ci_low=float(bounds[:, 0].mean()), ci_high=float(bounds[:, 1].mean()),
                   ci="wilson-mean")  # fmt: skip
    return out


def _whole_split(rec: dict[str, Any], rows: list[dict[str, Any]] | None) -> bool:
    """Whether an attack log holds every sentence of the evaluation split with the record's
    clean predictions (a full-split record: its rows not ``skipped`` are the correct ones)."""
    n_eval, acc = rec.get("n_eval"), rec.get("clean_acc")
    if not rows or n_eval is None or acc is None or pd.isna(n_eval) or pd.isna(acc):
        return False
    right = sum(1 for r in rows if r.get("result") != "skipped")
    return len(rows) == int(n_eval) and right == round(float(acc) * int(n_eval))


def is_degenerate(recs: pd.DataFrame, clean_interval: tuple[float, float]) -> bool:
    """A (near) constant classifier: the majority-class rate lies inside the clean-accuracy
    interval, or the majority predicted class has >= 95% of the predictions."""
    if "pred_majority_share" in recs:
        share = recs["pred_majority_share"].dropna()
        if len(share) and float(share.mean()) >= 0.95:
            return True
    if "majority_rate" in recs:
        maj = recs["majority_rate"].dropna()
        lo, hi = clean_interval
        if len(maj) and not (pd.isna(lo) or pd.isna(hi)):
            return bool(lo <= float(maj.mean()) <= hi)
    return False


def _differs(identities: list[str]) -> dict[str, str]:
    """For configurations that share their display keys: ``k=v`` of the keys that differ."""
    flats = [_flatten(json.loads(i)) for i in identities]
    keys = sorted({k for f in flats for k in f})
    diff = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    return {
        ident: ", ".join(f"{k}={f.get(k)}" for k in diff)
        for ident, f in zip(identities, flats, strict=True)
    }


def _rows_by_configuration(ok: pd.DataFrame, keys: list[str]):
    """(display key values, differs text, records) per configuration, sorted by keys."""
    ok = ok.copy()
    if "_identity" not in ok:
        ok["_identity"] = [json.dumps({k: r.get(k) for k in KEYS}, default=str)
                           for r in ok.to_dict("records")]  # fmt: skip
    for vals, group in ok.groupby(keys, dropna=False, sort=True):
        idents = sorted(group["_identity"].unique())
        differs = _differs(idents) if len(idents) > 1 else {idents[0]: ""}
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


def format_cell(mu, sd, lo, hi, scale: float = 100.0, fmt: str = "{:.1f}") -> str:
    """``mean±std [low, high]`` (the parts that exist), scaled."""
    if mu is None or pd.isna(mu):
        return "-"
    s = fmt.format(mu * scale)
    if sd is not None and not pd.isna(sd):
        s += f"±{fmt.format(sd * scale)}"
    if lo is not None and hi is not None and not (pd.isna(lo) or pd.isna(hi)):
        s += f" [{fmt.format(lo * scale)}, {fmt.format(hi * scale)}]"
    return s


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
    from benchmark.reporting.plots import plot_sparsity_curves
    from benchmark.reporting.tables import (
        build_tables,
        load_spec,
        render_latex,
        render_markdown,
        spec_records,
    )

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
    ok["_row"] = _split_by_dense_model(ok, [_without_attack(i) for i in ok["_identity"]])
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
        differs = _differs([i or "{}" for i in row_ids]) if len(row_ids) > 1 else {row_ids[0]: ""}
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


def _without_attack(identity: str | None) -> str:
    """A configuration's identity without its attack (a summary row spans attacks)."""
    if not identity:
        return ""
    d = json.loads(identity)
    d.pop("attack", None)
    d.pop("_record", None)
    if isinstance(d.get("choices"), dict):
        d["choices"] = {k: v for k, v in d["choices"].items() if k != "attack"}
    return json.dumps(d, sort_keys=True)


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


def _csv_stamps(results_dir: Path) -> dict[Path, int]:
    """mtime of every table CSV (leaderboard and ``tables/*.csv``), to tell what was written."""
    paths = [Path(results_dir) / "leaderboard.csv", *(Path(results_dir) / "tables").glob("*.csv")]
    return {p: p.stat().st_mtime_ns for p in paths if p.is_file()}


def mirror_tables_to_wandb(results_dir: Path, before: dict[Path, int], mode: str = "auto") -> bool:
    """Log every table CSV written since ``before`` (:func:`_csv_stamps`): leaderboard, paper
    tables, summaries, comparisons, read back from disk, as typed ``wandb.Table``s
    ``tables/<stem>`` to one run of job type ``aggregate`` (``results/wandb/``). ``mode`` as in
    :func:`log_table_to_wandb`."""
    if mode == "off":
        return False
    written = sorted(p for p, t in _csv_stamps(results_dir).items() if before.get(p) != t)
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


def report_stale(results_dir: Path) -> list[tuple[Path, list[str]]]:
    """Log the records whose identity no longer matches the code (they stay in the tables,
    but a rerun of their command would not find them)."""
    from benchmark.records.staleness import stale_records

    stale = stale_records(results_dir)
    if stale:
        log.warning("%d record(s) no longer match the current configs (rerun them, or migrate "
                    "with scripts/migrate_records.py when numbers cannot have changed):",
                    len(stale))  # fmt: skip
        for path, reasons in stale:
            log.warning("  %s: %s", Path(path).relative_to(results_dir), "; ".join(reasons))
    return stale


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    from benchmark.reporting.tables import SpecError, load_spec, table_names

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
        help="log the tables written to W&B as typed tables, one run of job type "
        "'aggregate' (auto: when some job logged online)",
    )
    ap.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="EXP",
        help="paired comparison of EXP's rows against --reference (repeatable): "
        "results/tables/compare_<EXP>.{csv,md}",
    )
    ap.add_argument(
        "--analyses",
        action="append",
        default=[],
        metavar="EXP",
        help="Aua against query and perturbation budgets, worst case over attacks, from the "
        "per-example logs of EXP: results/tables/analyses_<EXP>.md and plots",
    )
    ap.add_argument(
        "--reference",
        default="none",
        metavar="PRUNER[@SPARSITY]",
        help="the reference row of --compare (default: none, the dense model)",
    )
    ap.add_argument(
        "--claims",
        action="append",
        default=[],
        metavar="NAME",
        help="judge the pre-written claims conf/claims/NAME.yaml: "
        "results/tables/claims_NAME.{md,csv}",
    )
    ap.add_argument(
        "--reference-exp",
        default=None,
        metavar="EXP",
        help="look the reference up in this experiment's records (default: the compared one); "
        "writes compare_<EXP>_vs_<REF>_in_<REFEXP>.{csv,md}",
    )
    ap.add_argument(
        "--effects",
        action="append",
        default=[],
        metavar="NAME",
        help="one method's configurations side by side, paired against a reference row "
        "(conf/effects/NAME.yaml): results/tables/effects_NAME.{md,csv}",
    )
    ap.add_argument(
        "--site",
        type=Path,
        default=None,
        metavar="DIR",
        help="write a static site of the records into DIR: leaderboard, claims, comparisons, "
        "plots, one page per configuration with its attack examples (docs/site.md)",
    )
    args = ap.parse_args(argv)  # fmt: skip
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not (args.results_dir / "runs").is_dir():
        log.error(
            "error: no records under %s/runs; run `python -m benchmark.run` first", args.results_dir
        )
        return 2
    names = table_names() if "all" in args.table else args.table
    for name in names:  # every spec read before any work: a typo is one line, exit 2
        try:
            load_spec(name, args.variant)
        except SpecError as exc:
            log.error("error: %s", exc)
            return 2
    before = _csv_stamps(args.results_dir)
    board = write_leaderboard(args.results_dir)
    report_stale(args.results_dir)
    if names or args.summary or args.compare or args.analyses or args.claims or args.effects:
        df = load_records(args.results_dir)
        known = set(df["exp_name"].dropna()) if "exp_name" in df else set()
        for exp in [*args.compare, *args.analyses]:
            if exp not in known:
                log.error("error: no records of experiment %r under %s/runs (experiments: %s)",
                          exp, args.results_dir, ", ".join(sorted(known)) or "none")  # fmt: skip
                return 2
        for exp in args.analyses:
            from benchmark.reporting.analyses import analyses

            log.info("wrote %s", analyses(df, exp, Path(args.results_dir) / "tables"))
        for exp in args.compare:
            from benchmark.reporting.compare import write_compare

            try:
                write_compare(df, exp, args.reference, args.results_dir,
                              reference_exp=args.reference_exp)  # fmt: skip
            except ValueError as exc:
                log.error("error: %s", exc)
                return 2
        from benchmark.reporting.claims import write_claims
        from benchmark.reporting.effects import write_effects

        for writer, specs in ((write_claims, args.claims), (write_effects, args.effects)):
            for name in specs:
                try:
                    log.info("wrote %s", writer(df, name, args.results_dir))
                except ValueError as exc:
                    log.error("error: %s", exc)
                    return 2
        for name in names:
            write_table(df, name, args.results_dir, args.variant, "off")  # mirrored below
        if args.summary:
            write_summary(df, args.summary, args.results_dir)
    if args.site is not None:
        from benchmark.reporting.site import build_site

        log.info("site: %s", build_site(args.results_dir, args.site, board=board))
    mirror_tables_to_wandb(args.results_dir, before, args.wandb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
