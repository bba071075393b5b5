"""The pruning contract shared by every method.

A pruner's ``prune(model, data, sparsity)`` returns masks (``True`` = keep) over exactly the
prunable weights (:func:`prunable_params`). It may update kept weights (layer-wise
reconstruction, masked retraining); a reconstruction method may also refit the biases of the
linears it prunes (AKR refits weight and bias jointly) and, where a method says so, the
pooler and classifier (AKR's ``refit_head``) or retrain the whole network (rewinding methods).
Embeddings are never pruned. The caller applies the
masks with :func:`apply_masks`, the only code that zeroes weights, and records
:func:`measure_sparsity` as the actual sparsity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from benchmark.models.structure import prunable_linears

Masks = dict[str, torch.Tensor]
"""Qualified parameter name (``bert.encoder.layer.0.attention.self.query.weight``) -> bool
tensor of the weight's shape. True = KEEP (``torch.nn.utils.prune`` convention)."""


@dataclass(frozen=True)
class PruneData:
    """Everything a pruner may use besides the model and the target sparsity.

    Attributes:
        tokenizer: the model's tokenizer.
        train: the task's training split as ``(text, label)`` pairs (calibration, retraining).
        max_length: tokenizer truncation length of the task.
        device: the device to compute on (models arrive already on it).
        seed: the seed for every random choice the pruner makes (calibration sample, masks).
        pretrained: loads the PRE-TRAINED (not task-fine-tuned) model, for rewinding (LTH,
            RobustT); None when unavailable.
        cache_dir: a folder for the method's own checkpoints, keyed by the caller.
    """

    tokenizer: Any = None
    train: Sequence[tuple[str, int]] = ()
    max_length: int = 128
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    pretrained: Callable[[], nn.Module] | None = None
    cache_dir: Path | None = None


@runtime_checkable
class Pruner(Protocol):
    """What every pruning method provides.

    A pruner may also set ``self.info`` (a JSON-serialisable dict) during ``prune``: it is
    stored in the record as ``prune_info`` (solver used, ticket selection, calibration size).
    """

    version: int
    scope: str

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Return final masks over ``prunable_params(model, self.scope)``."""
        ...


def calibration_batches(
    data: PruneData, nsamples: int, max_length: int | None = None, batch_size: int = 32
) -> list[dict[str, torch.Tensor]]:
    """A seeded sample of ``nsamples`` training sentences, tokenized in batches on the device.

    Padding is to the longest sentence in each batch; use the ``attention_mask`` to ignore pads.
    The sample depends only on (training split, nsamples, data.seed).
    """
    from benchmark.data.loading import sample_indices

    if not data.train:
        raise ValueError("this pruner needs calibration data (PruneData.train is empty)")
    idx = sample_indices(len(data.train), nsamples, data.seed)
    texts = [data.train[i][0] for i in idx]
    length = max_length or data.max_length
    out = []
    for start in range(0, len(texts), batch_size):
        enc = data.tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True,
            max_length=length, return_tensors="pt",
        )  # fmt: skip
        out.append({k: v.to(data.device) for k, v in enc.items()})
    return out


def prunable_params(model: nn.Module, scope: str = "encoder_linear") -> dict[str, nn.Parameter]:
    """Qualified parameter name -> weight parameter of every prunable linear in ``scope``.

    Works on a model whose masks are applied non-permanently too (returns ``weight_orig``
    under the ``.weight`` name then).
    """
    out = {}
    for name, lin in prunable_linears(model, scope).items():
        weight = getattr(lin, "weight_orig", None)
        out[f"{name}.weight"] = weight if weight is not None else lin.weight
    return out


def full_masks(model: nn.Module, scope: str = "encoder_linear") -> Masks:
    """All-True masks over the prunable weights (sparsity 0)."""
    return {
        n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable_params(model, scope).items()
    }


def apply_masks(model: nn.Module, masks: Masks, *, permanent: bool) -> None:
    """Zero the weights where ``masks`` is False.

    ``permanent=False`` keeps the mask as a forward pre-hook (``torch.nn.utils.prune``), so it
    stays enforced while a method retrains; ``permanent=True`` folds it into the weight.
    Calling it again on an already masked layer combines the masks (logical and).
    """
    modules = dict(model.named_modules())
    for pname, mask in masks.items():
        mod_name = pname.rsplit(".", 1)[0]
        module = modules.get(mod_name)
        if module is None:
            raise KeyError(f"mask for unknown parameter {pname!r}")
        weight = getattr(module, "weight_orig", module.weight)
        if mask.shape != weight.shape:
            raise ValueError(
                f"mask {pname} has shape {tuple(mask.shape)}, weight {tuple(weight.shape)}"
            )
        mask = mask.to(device=weight.device, dtype=torch.bool)
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            mask = mask & module.weight_mask.bool()
            torch_prune.remove(module, "weight")
        torch_prune.custom_from_mask(module, "weight", mask)
        if permanent:
            torch_prune.remove(module, "weight")


def remove_mask_hooks(model: nn.Module) -> None:
    """Make every non-permanent mask permanent (fold it into the weight)."""
    for module in model.modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")


def current_masks(model: nn.Module, scope: str = "encoder_linear") -> Masks:
    """Masks equal to the non-zero pattern of the prunable weights now."""
    return {n: (p.detach() != 0) for n, p in prunable_params(model, scope).items()}


def measure_sparsity(model: nn.Module, scope: str = "encoder_linear") -> float:
    """Fraction of prunable weights that are exactly zero (the recorded actual sparsity)."""
    zeros = total = 0
    for lin in prunable_linears(model, scope).values():
        w = lin.weight  # masked weight when a pre-hook is active
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


def check_sparsity(sparsity: float) -> float:
    """Validate a target sparsity (fraction zeroed) and return it as float."""
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return s


def keep_count(n: int, sparsity: float) -> int:
    """Number of weights kept out of ``n`` at ``sparsity`` (rounded to the nearest count)."""
    return n - round(n * sparsity)
