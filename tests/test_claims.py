"""Pre-written claims judged from records (benchmark/reporting/claims.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_stats import pruner_option, write_run

from benchmark.reporting import aggregate, claims
from benchmark.reporting.records import load_records

N = 40


ONE = " (one seed, conditional only)"


def _run(tmp: Path, run_id: str, pruner: str, sparsity: float, survive: int | list[int],
         seed: int = 0, n: int = N, **kw) -> None:  # fmt: skip
    cfg = {**pruner_option(pruner), **kw.pop("cfg", {})}
    keep = list(range(survive)) if isinstance(survive, int) else survive
    write_run(tmp, "e", run_id, pruner, sparsity, seed, keep, n=n, attack="deepwordbug",
              extra_cfg=cfg, **kw)  # fmt: skip


def _spec(tmp: Path, *items: dict, family=("A",), n: int = N) -> Path:
    spec = {"experiment": "e", "attacks": ["deepwordbug"], "num_examples": n, "alpha": 0.05,
            "family": list(family), "claims": list(items)}  # fmt: skip
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_above_holds_fails_and_pends(tmp_path: Path) -> None:
    """AKR survives 30 of 40 against SparseGPT's 10 at 50% (holds), 10 against 30 at 70%
    (opposite, significant), 87.5% not run: one failing cell decides the claim."""
    _run(tmp_path, "a5", "akr", 0.5, 30)
    _run(tmp_path, "s5", "sparsegpt", 0.5, 10)
    _run(tmp_path, "a7", "akr", 0.7, 10)
    _run(tmp_path, "s7", "sparsegpt", 0.7, 30)
    spec = claims.load_spec(_spec(tmp_path, {
        "id": "A", "text": "t", "kind": "above", "row": "akr", "reference": "sparsegpt",
        "sparsities": [0.5, 0.7, 0.875]}))  # fmt: skip
    table, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    assert list(table["cell"]) == ["holds" + ONE, "fails: opposite, significant" + ONE, "not run"]
    assert table.loc[0, "delta_aua"] == pytest.approx(20 / N)
    assert verdicts.loc[0, "verdict"] == "does not replicate"
    # one seed has no seed-level interval: the seed-level columns are empty, the conditional
    # ones hold McNemar(20, 0), Holm over the 3 registered cells (87.5% not run: p = 1)
    assert pd.isna(table.loc[0, "delta_ci_low"]) and pd.isna(table.loc[0, "p_value"])
    assert table.loc[0, "p_value_conditional"] == pytest.approx(2.0**-19)
    assert table.loc[0, "p_holm_conditional"] == pytest.approx(3 * 2.0**-19)
    assert table.loc[0, "cell_conditional"] == "holds"
    # without the failing cell the claim is pending (its 87.5% cell has not run), not replicated
    (tmp_path / "runs/e/a7.json").unlink()
    table, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    assert verdicts.loc[0, "verdict"] == "pending"


def test_holm_over_the_registered_family_and_variants_are_not_the_protocol(tmp_path: Path) -> None:
    """Holm over the family's two registered cells turns p = 0.031 (6 vs 0 discordant) into
    0.0625, so the cell no longer holds, although the other cell is degenerate (it counts in m
    with p = 1); a 2:4 AKR record (not the option's default) is not the row."""
    _run(tmp_path, "a5", "akr", 0.5, 6)
    _run(tmp_path, "s5", "sparsegpt", 0.5, 0)
    _run(tmp_path, "m5", "magnitude", 0.5, 0, pred_majority_share=0.99)
    _run(tmp_path, "v5", "akr", 0.5, 40, cfg={"structure": "2:4"})
    above = {"text": "t", "kind": "above", "row": "akr", "sparsities": [0.5]}
    spec = claims.load_spec(_spec(tmp_path, {**above, "id": "A", "reference": "sparsegpt"},
                                  {**above, "id": "B", "reference": "magnitude"},
                                  family=("A", "B")))  # fmt: skip
    table, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    assert list(table["n_pairs"]) == [N, N]
    assert table.loc[0, "delta_aua"] == pytest.approx(6 / N)  # the default-config AKR row
    assert table.loc[0, "p_value_conditional"] == pytest.approx(2 / 64)
    assert table.loc[0, "p_holm_conditional"] == pytest.approx(2 * 2 / 64)
    assert table.loc[1, "cell"] == "degenerate" and pd.isna(table.loc[1, "p_holm_conditional"])
    assert list(verdicts["verdict"]) == ["does not replicate", "undecidable"]
    spec["family"] = ["A"]
    table, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    assert table.loc[0, "cell"] == "holds" + ONE
    assert verdicts.loc[0, "verdict"] == claims.ONE_FINE_TUNE  # one seed: never "replicates"


def test_degenerate_reference_is_undecidable_and_retains(tmp_path: Path) -> None:
    _run(tmp_path, "d", "none", 0.0, 12)
    _run(tmp_path, "m", "magnitude", 0.875, 2, pred_majority_share=0.99)
    _run(tmp_path, "a", "akr", 0.5, 11)
    spec = claims.load_spec(_spec(tmp_path, {
        "id": "A", "text": "t", "kind": "below", "row": "magnitude", "reference": "none",
        "sparsities": [0.875], "decisive": [0.875]}, {
        "id": "R", "text": "t", "kind": "retains", "row": "akr", "reference": "none",
        "sparsities": [0.5]}))  # fmt: skip
    table, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    assert list(table["cell"]) == ["degenerate", "holds" + ONE]  # the dense row at 0.0: ref
    assert list(verdicts["verdict"]) == ["undecidable", claims.ONE_FINE_TUNE]


def test_gap_grows_needs_disjoint_intervals(tmp_path: Path) -> None:
    _run(tmp_path, "a5", "akr", 0.5, 10)  # a gap of 5 / 40 at 50%
    _run(tmp_path, "s5", "sparsegpt", 0.5, 5)
    _run(tmp_path, "a8", "akr", 0.875, 30)  # 25 / 40 at 87.5%
    _run(tmp_path, "s8", "sparsegpt", 0.875, 5)
    gap = {"id": "G", "text": "t", "kind": "gap_grows", "row": "akr",
           "reference": "sparsegpt", "sparsities": [0.5, 0.875]}  # fmt: skip
    spec = claims.load_spec(_spec(tmp_path, gap, family=()))
    _, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    # holds on one seed: no seed-level interval, so not "replicates"
    assert verdicts.loc[0, "verdict"] == claims.ONE_FINE_TUNE
    assert verdicts.loc[0, "cells"] == "deepwordbug: holds" + ONE
    _run(tmp_path, "a8", "akr", 0.875, 12)  # a gap of 7 / 40: larger, but intervals overlap
    _, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    assert verdicts.loc[0, "verdict"] == "does not replicate"
    assert "intervals overlap" in verdicts.loc[0, "cells"]


def test_cli_writes_claims_and_names_a_bad_spec(tmp_path: Path) -> None:
    _run(tmp_path, "a5", "akr", 0.5, 10)
    code = aggregate.main(["--results-dir", str(tmp_path), "--claims", "embedded_post_training"])
    assert code == 0
    md = (tmp_path / "tables" / "claims_embedded_post_training.md").read_text(encoding="utf-8")
    assert "## Verdicts" in md and "| C5 " in md
    assert aggregate.main(["--results-dir", str(tmp_path), "--claims", "nope"]) == 2


# ---------------------------------------------------------------------------------------------
# Several seeds: the seed is the unit of a method claim (issue 27)


def _seeded(tmp: Path, pruner: str, sparsity: float, survive: list[list[int]], n: int) -> None:
    for seed, keep in enumerate(survive):
        _run(tmp, f"{pruner}{sparsity}s{seed}", pruner, sparsity, keep, seed=seed, n=n)


def test_three_seeds_hold_only_on_both_intervals(tmp_path: Path) -> None:
    """AKR above SparseGPT on three seeds (dense seeds 0-2), 40 sentences. At 50% AKR gains
    10, 11, 12 sentences: both intervals hold. At 70% it gains 3, 5, 12: every gained sentence
    moves one way, so the sign-flip p is tiny (conditional: holds), but the per-seed deltas
    spread: t = 2.44 with 2 df, p = 0.135 (a z quantile would give 0.015)."""
    n = 40
    _seeded(tmp_path, "sparsegpt", 0.5, [[], [], []], n)
    _seeded(tmp_path, "akr", 0.5, [list(range(10)), list(range(11)), list(range(12))], n)
    _seeded(tmp_path, "sparsegpt", 0.7, [[], [], []], n)
    _seeded(tmp_path, "akr", 0.7, [list(range(3)), list(range(5)), list(range(12))], n)
    claim = {"id": "A", "text": "t", "kind": "above", "row": "akr", "reference": "sparsegpt"}
    spec = claims.load_spec(_spec(tmp_path, {**claim, "sparsities": [0.5]},
                                  {**claim, "id": "B", "sparsities": [0.7]},
                                  family=("A",), n=n))  # fmt: skip
    table, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    a, b = table.iloc[0], table.iloc[1]
    assert a["seed_deltas"] == "0:+0.250000;1:+0.275000;2:+0.300000"
    assert a["cell"] == "holds" and verdicts.loc[0, "verdict"] == "replicates"
    # B is not in the family: raw p. Seed level: mean 20/3 / 40, sd sqrt(67/3) / 40
    t = (20 / 3) / (math.sqrt(67 / 3) / math.sqrt(3))
    assert b["p_value"] == pytest.approx(1 - t / math.sqrt(2 + t * t), rel=1e-9)
    assert b["p_value_conditional"] == pytest.approx(2 / 2**12)  # 12 sentences, one sign
    assert b["cell_conditional"] == "holds"
    assert b["cell"] == "not robust to seed variance (conditional: holds)"
    assert verdicts.loc[1, "verdict"] == "does not replicate"
    csv_cols = ["delta_ci_low", "delta_ci_high", "p_value", "p_holm", "cell"]
    assert all(c in table and f"{c}_conditional" in table for c in csv_cols)


def test_a_wider_interval_never_rescues_a_failed_cell(tmp_path: Path) -> None:
    """AKR against the dense model (`retains`), 200 sentences, three seeds: the row loses 1,
    12 and 8 different sentences. The seed-level t-interval reaches 0 (it holds there), the
    sentence-level one lies below 0: the cell is not robust to seed variance and the claim
    does not replicate (issue 27's C4 at DeepWordBug)."""
    n = 200
    dense = list(range(100))
    _seeded(tmp_path, "none", 0.0, [dense, dense, dense], n)
    lost = [[0], list(range(10, 22)), list(range(30, 38))]
    _seeded(tmp_path, "akr", 0.5, [[i for i in dense if i not in x] for x in lost], n)
    spec = claims.load_spec(_spec(tmp_path, {
        "id": "R", "text": "t", "kind": "retains", "row": "akr", "reference": "none",
        "sparsities": [0.5]}, family=(), n=n))  # fmt: skip
    table, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=2000)
    r = table.iloc[0]
    q2 = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # t quantile, 2 df
    sd = math.sqrt(((-1 + 7) ** 2 + (-12 + 7) ** 2 + (-8 + 7) ** 2) / 2) / n
    assert r["delta_ci_high"] == pytest.approx(-7 / n + q2 * sd / math.sqrt(3))
    assert r["delta_ci_high"] > 0 > r["delta_ci_high_conditional"]
    assert r["cell_conditional"] == "fails: below"
    assert r["cell"] == "not robust to seed variance (conditional: fails: below)"
    assert verdicts.loc[0, "verdict"] == "does not replicate"


def test_two_sided_claim_on_named_settings_in_its_own_family(tmp_path: Path) -> None:
    """C6-like: AKR calibrated on SST-2 against the task-calibrated AKR, two-sided, Holm over
    its own two cells. At 50% the SST-2 row survives 10 against 30 (lower: holds, the sign in
    the delta); at 87.5% both survive 20 (no difference). The SST-2 row never stands in for
    the default AKR row of another claim, and a settings key the option lacks is an error."""
    for s, task, sst2 in ((0.5, 30, 10), (0.875, 20, 20)):
        _run(tmp_path, f"a{s}", "akr", s, task)
        _run(tmp_path, f"c{s}", "akr", s, sst2, cfg={"calibration": "sst2"})
        _run(tmp_path, f"s{s}", "sparsegpt", s, 0)
    c6 = {"id": "C6", "text": "t", "kind": "differs", "row": "akr",
          "row_settings": {"calibration": "sst2"}, "reference": "akr",
          "sparsities": [0.5, 0.875]}  # fmt: skip
    above = {"id": "A", "text": "t", "kind": "above", "row": "akr", "reference": "sparsegpt",
             "sparsities": [0.5]}  # fmt: skip
    spec = claims.load_spec(_spec(tmp_path, above, c6, family=(["A"], ["C6"])))
    table, verdicts = claims.judge(load_records(tmp_path), spec, n_boot=300)
    a, c50, c875 = table.iloc[0], table.iloc[1], table.iloc[2]
    assert a["delta_aua"] == pytest.approx(30 / N)  # the task-calibrated AKR row
    assert a["p_holm_conditional"] == pytest.approx(a["p_value_conditional"])  # m = 1
    assert c50["row"] == "akr (calibration=sst2)" and c50["reference"] == "akr"
    assert c50["delta_aua"] == pytest.approx(-20 / N)
    assert c50["p_holm_conditional"] == pytest.approx(2 * 2.0**-19)  # m = 2, its own family
    assert c50["cell"] == "holds" + ONE
    assert c875["cell"] == "fails: no significant difference" + ONE
    assert list(verdicts["verdict"]) == [claims.ONE_FINE_TUNE, "does not replicate"]
    md = claims.render(table, verdicts, spec, "spec")
    assert "each family separately" in md and "akr (calibration=sst2)" in md
    bad = {**c6, "row_settings": {"calibraton": "sst2"}}
    with pytest.raises(ValueError, match="calibraton"):
        claims.load_spec(_spec(tmp_path, bad))
