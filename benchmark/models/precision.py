"""The job-level ``precision`` of clean evaluation and attack queries.

``float32`` (the default) runs the model as stored. ``bfloat16`` runs its forward passes under
``torch.autocast`` with bfloat16 (on CPUs that have AVX512-BF16 or AMX, and on GPUs);
``float16`` does the same with float16 and is GPU-only. Pruning and the dense fine-tune are not
affected. The precision is part of the run id: it changes numbers slightly.
"""

from __future__ import annotations

import contextlib

import torch

from benchmark.errors import UserError

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """One line for a precision the device cannot run (``float16`` on CPU, an unknown name)."""
    if precision not in PRECISIONS:
        raise UserError(f"invalid value precision={precision!r}: expected one of "
                        f"{', '.join(PRECISIONS)}")  # fmt: skip
    if precision == "float16" and device.type != "cuda":
        raise UserError(f"precision=float16 needs a GPU (device is {device}); use bfloat16 or "
                        "float32 on a CPU")  # fmt: skip


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for float32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
