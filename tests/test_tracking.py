"""The W&B mirror: offline, no key, one run per job, metrics in the summary, always finished."""

from __future__ import annotations

import pytest

from benchmark.records.tracking import WandbMirror


def test_disabled_mirror_is_a_no_op(tmp_path):
    m = WandbMirror(enabled=False)
    m.start("id", "exp", {}, [], tmp_path)
    m.log_record({"aua": 0.1})
    m.finish()
    assert m.run_id is None and not list(tmp_path.iterdir())


def test_offline_run_logs_summary_and_finishes(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # conftest disables W&B for other tests
    monkeypatch.setenv("WANDB_SILENT", "true")
    m = WandbMirror(enabled=True, mode="offline", tags=["t"])
    m.start("run123", "exp", {"seed": 0}, ["magnitude"], tmp_path)
    try:
        m.log_record({"status": "ok", "run_id": "run123", "aua": 0.25, "asr": float("nan")})
        summary = dict(m.run.summary)
        assert summary["attack/aua"] == 0.25 and "attack/asr" not in summary  # NaN left out
        assert m.run_id
    finally:
        m.finish()
    assert m.run is None
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))


def test_mode_offline_unless_told_and_job_types(monkeypatch):
    from benchmark.records.tracking import default_mode, job_type_of

    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert default_mode() == "offline" and default_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert default_mode() == "online" and default_mode("offline") == "offline"
    assert job_type_of("none", False) == "dense" and job_type_of("imp", True) == "prune-attack"


def test_sink_is_set_while_the_run_is_open(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from benchmark.training import loop

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    m = WandbMirror(enabled=True)
    m.start("run1", "exp", {}, [], tmp_path, job_type="dense")
    try:
        assert loop.metrics_enabled() and m.run.job_type == "dense" and m.run.group == "exp"
        loop.report_metrics({"heldout_acc": 0.5})
    finally:
        m.finish()
    assert not loop.metrics_enabled()
