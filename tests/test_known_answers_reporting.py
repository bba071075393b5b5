"""Known answers for the reporting steps that a broken implementation could still pass
(issue 27, "Tests that notice a broken step"): the bootstrap's confidence level, pairing two
attack logs by ``example_index``, ``limit`` rows in the per-example Aua, and the comparison's
protocol guard (model, dataset, dense recipe). Every expected value is worked out here from
first principles (binomial quantiles, hand-counted discordant pairs), never by calling the
code under test. Each test was checked by breaking its step on purpose and seeing it fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from benchmark.reporting import compare
from benchmark.reporting.leaderboard import leaderboard
from benchmark.reporting.records import load_records, log_values
from benchmark.reporting.stats import cluster_bootstrap, paired_cluster_bootstrap

# ---------------------------------------------------------------------------------------------
# Synthetic records and logs


def _write(results: Path, run_id: str, pruner: str, sparsity: float, rows: list[dict],
           seed: int = 0, model: str = "m1", dataset: str = "d1", dense: str = "finetune",
           exp: str = "e") -> None:  # fmt: skip
    """A record and its attack log (``rows`` as given, in that order) as a job writes them."""
    n = len(rows)
    failed = sum(r["result"] == "failed" for r in rows)
    success = sum(r["result"] == "successful" for r in rows)
    skipped = sum(r["result"] == "skipped" for r in rows)
    cfg = {"seed": seed, "exp_name": exp, "sparsity": sparsity,
           "choices": {"dense": dense, "pruner": pruner, "attack": "pwws"},
           "model": {"name": model}, "dataset": {"name": dataset},
           "pruner": {"name": pruner}, "attack": {"recipe": "pwws", "seed": seed,
                                                  "num_examples": n},
           "dense": {"recipe": dense, "seed": seed}}  # fmt: skip
    rec = {"run_id": run_id, "status": "ok", "exp_name": exp, "model": model, "dataset": dataset,
           "pruner": pruner, "attack": "pwws", "seed": seed, "sparsity_target": sparsity,
           "clean_acc": 0.8, "n_eval": 100, "attack_clean_acc": (n - skipped) / n,
           "aua": failed / n, "asr": success / max(success + failed, 1), "n_total": n,
           "n_success": success, "n_failed": failed, "n_skipped": skipped,
           "sparsity_actual": sparsity, "cfg": cfg}  # fmt: skip
    folder = results / "runs" / exp
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.json").write_text(json.dumps(rec), encoding="utf-8")
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / f"{run_id}.attack.jsonl").write_text(text, encoding="utf-8")


def _rows(results: dict[int, str], order: list[int] | None = None) -> list[dict]:
    """Log rows ``{example_index: result}``, written in ``order`` (default: by index)."""
    return [{"example_index": i, "label": 1, "result": results[i], "queries": 5}
            for i in (order if order is not None else sorted(results))]  # fmt: skip


def _survive(n: int, survivors) -> dict[int, str]:
    keep = set(survivors)
    return {i: "failed" if i in keep else "successful" for i in range(n)}


# ---------------------------------------------------------------------------------------------
# The bootstrap's confidence level


N_EX, N_SURV = 26, 13  # 13 of 26 sentences survive


def _binomial_percentiles(n: int, k: int, level: float) -> tuple[float, float]:
    """The percentile interval of the exact bootstrap distribution of a 0/1 mean.

    Resampling n sentences with replacement, the number of survivors drawn is
    Binomial(n, k/n); its (1 - level)/2 and (1 + level)/2 quantiles over n are what a percentile
    bootstrap converges to. The guard checks that the quantiles sit well inside a step of the
    binomial CDF, so the Monte Carlo percentile cannot land on a neighbouring value.
    """
    out = []
    for a in ((1 - level) / 2, (1 + level) / 2):
        x = binom.ppf(a, n, k / n)
        assert binom.cdf(x - 1, n, k / n) < a - 0.005 < a + 0.005 < binom.cdf(x, n, k / n)
        out.append(x / n)
    return out[0], out[1]


def test_bootstrap_interval_is_95_percent_by_default() -> None:
    lo95, hi95 = _binomial_percentiles(N_EX, N_SURV, 0.95)  # 8/26, 18/26
    lo90, hi90 = _binomial_percentiles(N_EX, N_SURV, 0.90)  # 9/26, 17/26: a 90% one differs
    assert (lo95, hi95) != (lo90, hi90)
    values = [1.0] * N_SURV + [0.0] * (N_EX - N_SURV)
    mean, lo, hi = cluster_bootstrap(range(N_EX), [0] * N_EX, values, n_boot=20_000, seed=3)
    assert mean == pytest.approx(0.5)
    assert (lo, hi) == (pytest.approx(lo95), pytest.approx(hi95))
    # the paired version: row survives 0..12, reference none -> per-example diffs 13 x 1, 13 x 0
    a = {(i, 0): float(i < N_SURV) for i in range(N_EX)}
    b = {(i, 0): 0.0 for i in range(N_EX)}
    delta, lo, hi, n_pairs = paired_cluster_bootstrap(a, b, n_boot=20_000, seed=3)
    assert (delta, n_pairs) == (pytest.approx(0.5), N_EX)
    assert (lo, hi) == (pytest.approx(lo95), pytest.approx(hi95))


def test_compare_and_leaderboard_intervals_are_95_percent(tmp_path: Path) -> None:
    """The tables' "[95% CI]": compare (paired, one seed) and a two-seed leaderboard cell."""
    lo95, hi95 = _binomial_percentiles(N_EX, N_SURV, 0.95)
    for seed in (0, 1):  # the same outcomes under both seeds: the seed mean is the 0/1 mean
        _write(tmp_path, f"ref{seed}", "none", 0.0, _rows(_survive(N_EX, [])), seed=seed)
        _write(tmp_path, f"mag{seed}", "magnitude", 0.5,
               _rows(_survive(N_EX, range(N_SURV))), seed=seed)  # fmt: skip
    df = load_records(tmp_path)
    row = compare.compare_table(df, "e", "none", n_boot=20_000).iloc[0]
    assert row["delta_aua"] == pytest.approx(0.5)
    assert (row["delta_ci_low"], row["delta_ci_high"]) == (pytest.approx(lo95),
                                                           pytest.approx(hi95))  # fmt: skip
    board = leaderboard(df, n_boot=20_000).set_index("pruner")
    assert board.loc["magnitude", "aua_mean"] == pytest.approx(0.5)
    assert (board.loc["magnitude", "aua_ci_low"], board.loc["magnitude", "aua_ci_high"]) == (
        pytest.approx(lo95), pytest.approx(hi95))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Pairing by example_index, and `limit` rows


def test_logs_pair_by_example_index_not_by_line(tmp_path: Path) -> None:
    """The reference attacked sentences 0..19 in order; the row attacked 4..23 in reverse
    order (a resumed or parallel attack writes lines in any order). Shared: 4..19 (16 pairs).
    Reference survives {4, 5, 6, 7, 8}; row survives {4, 5, 20, 21}: on the shared sentences
    the reference alone survives 6, 7, 8 (c = 3) and the row alone none (b = 0)."""
    _write(tmp_path, "ref", "none", 0.0, _rows(_survive(20, [4, 5, 6, 7, 8])))
    row_results = {i: "failed" if i in (4, 5, 20, 21) else "successful" for i in range(4, 24)}
    _write(tmp_path, "mag", "magnitude", 0.5, _rows(row_results, order=list(range(23, 3, -1))))
    row = compare.compare_table(load_records(tmp_path), "e", "none",
                                n_boot=500).iloc[0]  # fmt: skip
    assert row["n_pairs"] == 16
    assert row["delta_aua"] == pytest.approx((2 - 5) / 16)
    assert row["test"] == "mcnemar" and row["p_value"] == pytest.approx(2 * 0.5**3)  # McNemar(0, 3)


def test_limit_rows_count_as_not_surviving(tmp_path: Path) -> None:
    """``limit`` (stopped by a per-example limit) is neither survived nor broken; Aua counts
    it as not surviving (docs/statistics.md), so does the per-example Aua of the paired tests."""
    results = {0: "failed", 1: "limit", 2: "successful", 3: "skipped", 4: "limit", 5: "failed"}
    values = dict(log_values(_rows(results), "aua"))
    assert values == {0: 1.0, 1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 1.0}
    attacked = dict(log_values(_rows(results), "attack_clean_acc"))
    assert attacked == {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.0, 4: 1.0, 5: 1.0}
    # paired: the reference survives 0..9; the row survives 0..3 and hit the limit on 4..9:
    # 6 discordant pairs, all the reference's (McNemar(0, 6) = 2 / 64), delta -6/20
    _write(tmp_path, "ref", "none", 0.0, _rows(_survive(20, range(10))))
    row_results = _survive(20, range(4))
    row_results.update(dict.fromkeys(range(4, 10), "limit"))
    _write(tmp_path, "mag", "magnitude", 0.5, _rows(row_results))
    row = compare.compare_table(load_records(tmp_path), "e", "none",
                                n_boot=500).iloc[0]  # fmt: skip
    assert row["delta_aua"] == pytest.approx(-6 / 20)
    assert row["p_value"] == pytest.approx(2 / 64)


# ---------------------------------------------------------------------------------------------
# The protocol guard: model, dataset, dense recipe


@pytest.mark.parametrize("key", ["model", "dataset", "dense"])
def test_compare_pairs_only_on_the_same_model_dataset_and_dense_recipe(tmp_path: Path,
                                                                      key: str) -> None:  # fmt: skip
    """Two protocols differing only in ``key``, each with a reference and a row: each row is
    paired with its own protocol's reference, so the deltas are -2/20 and -7/20 (a guard that
    ignored ``key`` would see two reference configurations and pair neither)."""
    other = {"model": {"model": "m2"}, "dataset": {"dataset": "d2"},
             "dense": {"dense": "freelb"}}[key]  # fmt: skip
    _write(tmp_path, "ref1", "none", 0.0, _rows(_survive(20, range(10))))
    _write(tmp_path, "mag1", "magnitude", 0.5, _rows(_survive(20, range(8))))
    _write(tmp_path, "ref2", "none", 0.0, _rows(_survive(20, range(12))), **other)
    _write(tmp_path, "mag2", "magnitude", 0.5, _rows(_survive(20, range(5))), **other)
    table = compare.compare_table(load_records(tmp_path), "e", "none", n_boot=300)
    assert len(table) == 2
    assert sorted(table["delta_aua"].round(9)) == [round(-7 / 20, 9), round(-2 / 20, 9)]
    assert (table["note"] == "").all() and (table["n_pairs"] == 20).all()
    # only the other protocol's reference: no pair, and the note says why
    (tmp_path / "runs" / "e" / "ref1.json").unlink()
    table = compare.compare_table(load_records(tmp_path), "e", "none", n_boot=300)
    first = table[table["delta_aua"].isna()]
    assert len(first) == 1 and first.iloc[0]["note"] == "no reference row on the same protocol"
    assert np.isclose(table["delta_aua"].dropna().iloc[0], -7 / 20)
