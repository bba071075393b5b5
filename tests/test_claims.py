"""Pre-written claims judged from records (benchmark/reporting/claims.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from test_stats import write_run

from benchmark.reporting import aggregate, claims

N = 40


def _defaults(pruner: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(aggregate.ROOT / f"conf/pruner/{pruner}.yaml"))


def _run(tmp: Path, run_id: str, pruner: str, sparsity: float, survive: int, **kw) -> None:
    cfg = {**_defaults(pruner), **kw.pop("cfg", {})}
    write_run(tmp, "e", run_id, pruner, sparsity, 0, list(range(survive)), n=N,
              attack="deepwordbug", extra_cfg=cfg, **kw)  # fmt: skip


def _spec(tmp: Path, *items: dict, family=("A",)) -> Path:
    spec = {"experiment": "e", "attacks": ["deepwordbug"], "num_examples": N, "alpha": 0.05,
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
    table, verdicts = claims.judge(aggregate.load_records(tmp_path), spec, n_boot=300)
    assert list(table["cell"]) == ["holds", "fails: opposite, significant", "not run"]
    assert table.loc[0, "delta_aua"] == pytest.approx(20 / N)
    assert verdicts.loc[0, "verdict"] == "does not replicate"
    # without the failing cell the claim is pending, not replicated
    (tmp_path / "runs/e/a7.json").unlink()
    table, verdicts = claims.judge(aggregate.load_records(tmp_path), spec, n_boot=300)
    assert verdicts.loc[0, "verdict"] == "pending"


def test_holm_over_the_family_and_variants_are_not_the_protocol(tmp_path: Path) -> None:
    """Holm over the family's two cells turns p = 0.031 (6 vs 0 discordant) into 0.0625, so the
    cell no longer holds; a 2:4 AKR record (not the option's default) is not the row."""
    _run(tmp_path, "a5", "akr", 0.5, 6)
    _run(tmp_path, "s5", "sparsegpt", 0.5, 0)
    _run(tmp_path, "m5", "magnitude", 0.5, 0)
    _run(tmp_path, "v5", "akr", 0.5, 40, cfg={"structure": "2:4"})
    above = {"text": "t", "kind": "above", "row": "akr", "sparsities": [0.5]}
    spec = claims.load_spec(_spec(tmp_path, {**above, "id": "A", "reference": "sparsegpt"},
                                  {**above, "id": "B", "reference": "magnitude"},
                                  family=("A", "B")))  # fmt: skip
    table, verdicts = claims.judge(aggregate.load_records(tmp_path), spec, n_boot=300)
    assert list(table["n_pairs"]) == [N, N]
    assert table.loc[0, "delta_aua"] == pytest.approx(6 / N)  # the default-config AKR row
    assert table.loc[0, "p_value"] < 0.05 < table.loc[0, "p_holm"]
    assert list(verdicts["verdict"]) == ["does not replicate"] * 2
    spec["family"] = ["A"]
    table, verdicts = claims.judge(aggregate.load_records(tmp_path), spec, n_boot=300)
    assert table.loc[0, "cell"] == "holds" and verdicts.loc[0, "verdict"] == "replicates"


def test_degenerate_reference_is_undecidable_and_retains(tmp_path: Path) -> None:
    _run(tmp_path, "d", "none", 0.0, 12)
    _run(tmp_path, "m", "magnitude", 0.875, 2, pred_majority_share=0.99)
    _run(tmp_path, "a", "akr", 0.5, 11)
    spec = claims.load_spec(_spec(tmp_path, {
        "id": "A", "text": "t", "kind": "below", "row": "magnitude", "reference": "none",
        "sparsities": [0.875], "decisive": [0.875]}, {
        "id": "R", "text": "t", "kind": "retains", "row": "akr", "reference": "none",
        "sparsities": [0.5]}))  # fmt: skip
    table, verdicts = claims.judge(aggregate.load_records(tmp_path), spec, n_boot=300)
    assert list(table["cell"]) == ["degenerate", "holds"]  # the dense row at 0.0 is the ref
    assert list(verdicts["verdict"]) == ["undecidable", "replicates"]


def test_gap_grows_needs_disjoint_intervals(tmp_path: Path) -> None:
    _run(tmp_path, "a5", "akr", 0.5, 10)  # a gap of 5 / 40 at 50%
    _run(tmp_path, "s5", "sparsegpt", 0.5, 5)
    _run(tmp_path, "a8", "akr", 0.875, 30)  # 25 / 40 at 87.5%
    _run(tmp_path, "s8", "sparsegpt", 0.875, 5)
    gap = {"id": "G", "text": "t", "kind": "gap_grows", "row": "akr",
           "reference": "sparsegpt", "sparsities": [0.5, 0.875]}  # fmt: skip
    spec = claims.load_spec(_spec(tmp_path, gap))
    _, verdicts = claims.judge(aggregate.load_records(tmp_path), spec, n_boot=300)
    assert verdicts.loc[0, "verdict"] == "replicates"
    _run(tmp_path, "a8", "akr", 0.875, 12)  # a gap of 7 / 40: larger, but intervals overlap
    _, verdicts = claims.judge(aggregate.load_records(tmp_path), spec, n_boot=300)
    assert verdicts.loc[0, "verdict"] == "does not replicate"
    assert "intervals overlap" in verdicts.loc[0, "cells"]


def test_cli_writes_claims_and_names_a_bad_spec(tmp_path: Path) -> None:
    _run(tmp_path, "a5", "akr", 0.5, 10)
    code = aggregate.main(["--results-dir", str(tmp_path), "--claims", "embedded_post_training"])
    assert code == 0
    md = (tmp_path / "tables" / "claims_embedded_post_training.md").read_text(encoding="utf-8")
    assert "## Verdicts" in md and "| C5 " in md
    assert aggregate.main(["--results-dir", str(tmp_path), "--claims", "nope"]) == 2
