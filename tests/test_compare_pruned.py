"""scripts/compare_pruned.py: mask agreement, weight difference and paired clean accuracy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("compare_pruned", ROOT / "scripts/compare_pruned.py")
cp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cp)


def test_weight_stats_counts_mask_entries_of_encoder_linears_only() -> None:
    a = {"bert.encoder.layer.0.q.weight": torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
         "bert.encoder.layer.1.q.weight": torch.tensor([[1.0, 1.0], [1.0, 1.0]]),
         "bert.encoder.layer.0.q.bias": torch.tensor([5.0, 0.0]),
         "classifier.weight": torch.zeros(2, 2)}  # fmt: skip
    b = {k: v.clone() for k, v in a.items()}
    b["bert.encoder.layer.0.q.weight"] = torch.tensor([[0.0, 0.5], [0.0, 2.25]])  # 2 of 4 differ
    b["classifier.weight"] = torch.ones(2, 2)  # not an encoder linear: ignored
    w = cp.weight_stats(a, b)
    assert w["entries"] == 8 and w["mask_agreement"] == pytest.approx(6 / 8)
    assert w["worst_layer"] == "bert.encoder.layer.0.q.weight"
    assert w["worst_layer_agreement"] == pytest.approx(0.5)
    assert w["max_abs_weight_diff"] == pytest.approx(1.0)


def test_clean_pairs_are_paired_by_example_index() -> None:
    rows_a = [{"example_index": i, "label": 1, "orig_pred": 1} for i in range(10)]
    rows_b = [{"example_index": i, "label": 1, "orig_pred": int(i >= 3)} for i in range(10)]
    rows_b.append({"example_index": 99, "label": 0, "orig_pred": 0})  # only in b: not paired
    c = cp.clean_pairs(rows_a, rows_b)
    assert c["n"] == 10 and c["clean_a"] == 1.0 and c["clean_b"] == pytest.approx(0.7)
    assert (c["only_a"], c["only_b"]) == (3, 0)
    assert c["p_value"] == pytest.approx(0.25)  # exact McNemar, 3 vs 0 discordant


def test_no_weights_compares_committed_records_without_a_pruned_cache(tmp_path) -> None:
    """``--no-weights`` needs only records and attack logs: two committed full-split records
    of seed 0 (magnitude and SparseGPT at 50%, DeepWordBug) with an empty cache folder."""
    out = tmp_path / "cmp.md"
    argv = ["--exp", "embedded_post_training", "--a", "98757510b4ad", "--b", "e5d2f89ea3b9",
            "--cache-dir", str(tmp_path / "no-cache"), "--markdown", str(out)]  # fmt: skip
    assert cp.main([*argv, "--no-weights"]) == 0
    text = out.read_text()
    assert "clean accuracy (872 examples)" in text and "Aua (deepwordbug, 872 pairs)" in text
    assert "identical mask entries" not in text
    with pytest.raises(SystemExit, match="no pruned-cache entry"):
        cp.main(argv)


def test_layer_rows_find_where_two_greedy_runs_parted() -> None:
    """Per layer in the model's order; the first layer with a differing row is named, with the
    largest weight difference of the identical layers before it."""
    ones = torch.ones(3, 2)
    a = {"bert.encoder.layer.0.q.weight": ones.clone(),
         "bert.encoder.layer.1.q.weight": ones.clone(),
         "bert.encoder.layer.2.q.weight": ones.clone()}  # fmt: skip
    b = {k: v.clone() for k, v in a.items()}
    b["bert.encoder.layer.0.q.weight"][0, 0] += 2**-20  # same mask, a rounding-sized change
    b["bert.encoder.layer.1.q.weight"][2] = 0.0  # one row: two entries pruned only in b
    b["bert.encoder.layer.2.q.weight"][:, 1] = 0.0  # every row differs after it
    rows = cp.layer_rows(a, b)
    assert [(r["entries"], r["rows"]) for r in rows] == [(0, 0), (2, 1), (3, 3)]
    text = cp.layer_table(rows)
    assert "First differing layer: bert.encoder.layer.1.q.weight (1 row(s))" in text
    assert "the 1 layers before it have identical masks" in text and "at most 9.54e-07" in text
    assert "Every mask is identical" in cp.layer_table(cp.layer_rows(a, a))
