"""The numerical noise floor: a dense model perturbed at the scale of floating-point noise.

Two dense fine-tunes of one recipe agree here only to about 3e-6 (another thread count, another
BLAS), and a greedy pruner can amplify that into a different mask. ``dense_noise={scale: s,
seed: k}`` multiplies every floating-point parameter of the loaded dense model by
``1 + s * e`` with ``e`` standard normal, drawn on the CPU from a generator seeded with ``k``
(parameters in ``named_parameters`` order), before anything is pruned or evaluated. Two seeds
at ``s = 1e-6`` are two dense models that differ by noise alone; how far a method's clean
accuracy and Aua move between them is its noise floor (``docs/statistics.md``).

The key is part of the run identity and of the pruned-weights cache key when set; unset
(``null``, the default) it is left out of both, so every earlier run id stays what it was.
"""

from __future__ import annotations

from typing import Any

import torch

KEYS = ("scale", "seed")


def check_dense_noise(value: Any) -> str | None:
    """None when ``value`` is a valid ``dense_noise`` (null, or ``{scale: s > 0, seed: k >= 0}``);
    else what is expected."""
    expected = "null or {scale: a number in (0, 0.01], seed: a non-negative integer}"
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(KEYS):
        return expected
    scale, seed = value["scale"], value["seed"]
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 0.01:
        return expected
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        return expected
    return None


@torch.no_grad()
def perturb_weights(model: torch.nn.Module, scale: float, seed: int) -> dict[str, Any]:
    """Multiply every floating-point parameter of ``model`` in place by ``1 + scale * e``,
    ``e ~ N(0, 1)`` drawn on the CPU (the same numbers on any device); returns what was done
    (scale, seed, parameters touched, largest relative change as stored)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    n, largest = 0, 0.0
    for _, p in model.named_parameters():
        if not p.is_floating_point():
            continue
        e = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        before = p.detach().to("cpu", torch.float64)
        after = before * (1.0 + float(scale) * e)
        p.copy_(after.to(p.dtype).to(p.device))
        stored = p.detach().to("cpu", torch.float64)
        nonzero = before != 0
        if nonzero.any():
            rel = ((stored - before).abs()[nonzero] / before.abs()[nonzero]).max().item()
            largest = max(largest, rel)
        n += p.numel()
    return {"scale": float(scale), "seed": int(seed), "n_params": n, "max_rel_change": largest}
