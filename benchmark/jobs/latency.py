"""Forward latency of a model on one fixed batch (the speed column of pruned models).

``inference_ms`` times ``model(**batch)`` under ``torch.inference_mode`` after warm-up runs,
with CUDA synchronisation around every timed call on a GPU (kernels are asynchronous, so
timing without it measures only the launch), and reports the median (robust to the odd slow
run on a shared machine) with the spread. Sparse weights that are stored densely (masks
applied by zeroing) run exactly as fast as dense ones; only a sparse storage format (e.g. 2:4
semi-structured on GPU) can change this number.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import torch
from torch import nn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_ms(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    device: torch.device | str | None = None,
    repeats: int = 20,
    warmup: int = 3,
) -> dict:
    """Median forward latency (ms) of ``model`` on ``batch``.

    Args:
        model: the model; it is put in eval mode for the measurement and its mode restored.
        batch: keyword inputs of the forward (``input_ids``, ``attention_mask``, ...); moved
            to ``device``. Keys ``labels`` are dropped (no loss is timed).
        device: where to run; None: the device of the model's first parameter.
        repeats: timed forward passes (at least 1).
        warmup: untimed forward passes before (kernel selection, caches, lazy init).

    Returns:
        ``{"median_ms", "min_ms", "max_ms", "repeats", "warmup", "batch_size", "seq_len",
        "device", "threads"}``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    ids = inputs.get("input_ids")
    if ids is None:
        ids = next(iter(inputs.values()))
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for _ in range(max(0, warmup)):
                model(**inputs)
            _sync(device)
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                model(**inputs)
                _sync(device)
                times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        model.train(was_training)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "repeats": repeats,
        "warmup": max(0, warmup),
        "batch_size": int(ids.shape[0]),
        "seq_len": int(ids.shape[1]) if ids.dim() > 1 else 1,
        "device": str(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
