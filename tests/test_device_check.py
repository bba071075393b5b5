"""scripts/device_check.sh --smoke: every part runs on CPU and the report files are complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_smoke(tmp_path):
    out = tmp_path / "report"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device_check.sh"), "--smoke", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "device_report.json").read_text())
    parts = data["parts"]
    assert set(parts) == {"preflight", "akr gpu path", "semi-structured 2:4",
                          "forward throughput", "training steps", "pruners"}  # fmt: skip
    pre = parts["preflight"]
    assert pre["status"] == "ok" and pre["imports_failed"] == "none"
    assert pre["hydra/omegaconf/textattack imported"] == "none"
    assert parts["semi-structured 2:4"]["status"] == "skipped: no CUDA"
    akr_gpu = parts["akr gpu path"]["rows"][0]
    assert akr_gpu["wall_s"] > akr_gpu["obs_s"] > 0
    assert akr_gpu["layers"] == akr_gpu["layers checked"] == 12  # every layer of the tiny model
    assert akr_gpu["mask entries equal to lowrank f64"] == 1.0
    for name in ("akr gpu path", "forward throughput", "training steps", "pruners"):
        assert parts[name]["status"] == "ok", parts[name]
    methods = {r["method"]: r for r in parts["pruners"]["rows"]}
    assert set(methods) == {
        "sparsegpt",
        "wanda",
        "akr lowrank float32",
        "akr blocked float64 (_obs_fast)",
        "akr lowrank float64 (the class default, the reference)",
    }
    for row in methods.values():
        assert isinstance(row["wall_s"], float) and row["wall_s"] > 0, row
        assert row["sparsity"] == pytest.approx(0.5, abs=0.01)
    training = parts["training steps"]["rows"]
    assert len(training) == 2 and all(r["steps_per_s"] > 0 for r in training)
    assert parts["forward throughput"]["rows"][0]["median_ms"] > 0
    md = (out / "device_report.md").read_text()
    assert "## pruners" in md and "skipped: no CUDA" in md
