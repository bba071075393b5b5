"""benchmark/jobs/latency.py on the tiny BERT."""

from __future__ import annotations

import pytest
import torch

from benchmark.jobs.latency import inference_ms
from benchmark.models.loading import build_tiny_bert


def test_inference_ms_on_tiny_bert(tmp_path):
    model, tok = build_tiny_bert(2, tmp_path / "tiny")
    model.train()  # the measurement must not depend on (or change) the caller's mode
    batch = tok(["the movie was good", "a dull and boring plot"] * 2, padding="max_length",
                max_length=16, return_tensors="pt")  # fmt: skip
    batch["labels"] = torch.tensor([1, 0, 1, 0])
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(m.training))
    try:
        out = inference_ms(model, batch, "cpu", repeats=5, warmup=2)
    finally:
        handle.remove()
    assert model.training  # mode restored
    assert calls == [False] * 7  # 2 warm-up + 5 timed passes, all in eval mode
    assert out["batch_size"] == 4 and out["seq_len"] == 16
    assert out["device"] == "cpu" and out["repeats"] == 5 and out["warmup"] == 2
    assert 0 < out["min_ms"] <= out["median_ms"] <= out["max_ms"]


def test_inference_ms_defaults_to_model_device_and_checks_repeats(tmp_path):
    model, tok = build_tiny_bert(2, tmp_path / "tiny")
    batch = dict(tok(["good"], return_tensors="pt"))
    out = inference_ms(model, batch, repeats=1, warmup=0)
    assert out["device"] == "cpu" and out["batch_size"] == 1
    with pytest.raises(ValueError):
        inference_ms(model, batch, repeats=0)
