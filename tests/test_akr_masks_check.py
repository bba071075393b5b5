"""scripts/akr_masks_check.py: its per-layer comparison finds equal solvers equal and a solver
that chooses other masks different (the job around it is an ordinary ``benchmark.run``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from benchmark.pruners import _obs_fast

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
_spec = importlib.util.spec_from_file_location(
    "akr_masks_check", ROOT / "scripts/akr_masks_check.py"
)
mc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mc)

# the default job's OBS options (conf/pruner/akr.yaml, version 2), as AKR's solve passes them
OPTIONS = dict(nm=None, protect_last=False, zeros_per_row="floor", official_damp=1e-4)


def _layer(d_out=24, d=33, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8 * d, d, generator=g, dtype=torch.float64)
    return torch.randn(d_out, d, generator=g, dtype=torch.float64), x.T @ x / x.shape[0]


def _check(real, stride=3):
    mc.ROWS.clear()
    mc.STRIDE = stride
    w, h = _layer()
    mc.checked_solver(real)(w, h, 0.5, impl="compiled", workers=1, **OPTIONS)
    return mc.ROWS[-1]


def test_compiled_against_lowrank_is_identical():
    row = _check(_obs_fast.obs_prune)
    assert row["rows_compared"] == 8 and row["identical"] == 8 and row["differing"] == []
    assert row["zeros_per_row"] == 16 and row["max_w_diff"] < 1e-10


def test_a_solver_with_other_masks_is_reported():
    def wrong(w, h, sparsity, **kw):  # keeps the smallest weights of row 3 instead
        out, keep, used = _obs_fast.obs_prune(w, h, sparsity, **kw)
        keep[3] = ~keep[3]
        return out, keep, used

    row = _check(wrong)
    assert row["identical"] == 7 and row["differing"] == [3]
    assert len(row["tie_gaps"]) == 1 and row["tie_gaps"][0] >= 0
    text = mc.render(type("A", (), {"stride": 3, "cached": None, "out": "x.md"}), ["pruner=akr"],
                     [], 1.0, "")  # fmt: skip
    assert "7 of 8 rows identical" in text and "| 3 (" in text
