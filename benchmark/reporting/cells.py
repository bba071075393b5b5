"""Cells: the mean, spread and 95% interval of one metric over a configuration's seeds, and
how a cell is written.

:func:`cell_stats` is the number behind every cell of the leaderboard, the summaries, the paper
tables and the plots (Wilson for one seed, cluster bootstrap over examples for several,
docs/statistics.md); :func:`record_interval` is one record's interval, :func:`is_degenerate`
flags a (near) constant classifier, :func:`format_cell` writes ``mean±std [low, high]``, and
:func:`seed_delta_text` / :func:`seed_points` write per-seed paired deltas.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from benchmark.reporting.records import log_values, read_attack_log
from benchmark.reporting.stats import cluster_bootstrap, seed_t_test, wilson_interval

# Proportions that get an interval (fractions); the others get mean and std only.
PROPORTIONS = ("clean_acc", "attack_clean_acc", "aua", "asr")
BOOTSTRAP_SEED = 0


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


def seed_delta_text(deltas: Any, points: bool = False) -> str:
    """``{seed: delta}`` as ``0:+0.009174;1:+0.016055`` (fractions, for a CSV) or, with
    ``points``, ``+0.92/+1.61`` (percentage points, for Markdown); empty for none."""
    if not isinstance(deltas, dict) or not deltas:
        return ""
    if points:
        return "/".join(f"{100 * v:+.2f}" for v in deltas.values())
    return ";".join(f"{s}:{v:+.6f}" for s, v in deltas.items())


def seed_points(text: Any) -> str:
    """``0:+0.009174;1:+0.016055`` -> ``+0.92/+1.61`` (points); ``-`` for one seed or none."""
    if not isinstance(text, str) or ";" not in text:
        return "-"
    return "/".join(f"{100 * float(x.split(':')[1]):+.2f}" for x in text.split(";"))
