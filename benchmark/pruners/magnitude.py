"""One-shot magnitude pruning (Han et al., 2015; the baseline of every seed paper).

Per layer (default): each prunable matrix loses its ``round(n * s)`` smallest-|w| weights.
Global: one threshold over all prunable weights together. ``structure="n:m"`` keeps the N
largest of every M consecutive weights along the input dimension (sparsity is then 1 - N/M,
and the ``sparsity`` argument must match it).
Ties are broken by flat index (``torch.topk`` on a stable sort) so masks are deterministic.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.pruners.base import Masks, PruneData, check_sparsity, keep_count, prunable_params


def topk_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask keeping the ``keep`` largest entries of ``scores`` (deterministic ties)."""
    flat = scores.flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:keep]] = True
    return mask.view_as(scores)


def global_topk_masks(scores: dict[str, torch.Tensor], sparsity: float) -> Masks:
    """One global top-k over all score tensors: keep ``keep_count(N, sparsity)`` entries.

    Computed on the scores' device (they must share one); ties broken by position.
    """
    flat = torch.cat([s.detach().flatten().float() for s in scores.values()])
    keep = topk_mask(flat, keep_count(flat.numel(), sparsity))
    masks, offset = {}, 0
    for name, s in scores.items():
        masks[name] = keep[offset : offset + s.numel()].view_as(s).to(s.device)
        offset += s.numel()
    return masks


def layer_topk_masks(scores: dict[str, torch.Tensor], sparsity: float) -> Masks:
    """A top-k per tensor at the same sparsity."""
    return {n: topk_mask(s.detach(), keep_count(s.numel(), sparsity)) for n, s in scores.items()}


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` largest scores in every group of ``m`` consecutive inputs of each row."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(f"input dimension {cols} is not divisible by M={m}")
    groups = scores.reshape(rows, cols // m, m)
    idx = torch.sort(groups, dim=-1, descending=True, stable=True).indices[..., :n]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(rows, cols)


def parse_nm(structure: str) -> tuple[int, int] | None:
    """Parse ``"unstructured"`` (None) or ``"N:M"`` (tuple)."""
    if structure == "unstructured":
        return None
    try:
        n, m = (int(x) for x in structure.split(":"))
    except ValueError as exc:
        raise ValueError(f"structure must be 'unstructured' or 'N:M', got {structure!r}") from exc
    if not 0 < n <= m:
        raise ValueError(f"N:M needs 0 < N <= M, got {structure!r}")
    return n, m


def check_nm_sparsity(nm: tuple[int, int], sparsity: float) -> None:
    """N:M fixes the sparsity at 1 - N/M; refuse a different target instead of ignoring it."""
    implied = 1 - nm[0] / nm[1]
    if abs(implied - sparsity) > 1e-9:
        raise ValueError(
            f"structure {nm[0]}:{nm[1]} implies sparsity {implied:g}, but sparsity={sparsity:g}"
        )


class MagnitudePruner:
    """Magnitude pruning, per layer or global, unstructured or N:M."""

    def __init__(
        self,
        granularity: str = "layer",
        structure: str = "unstructured",
        scope: str = "encoder_linear",
        version: int = 1,
    ) -> None:
        """Args:
        granularity: ``layer`` (one threshold per matrix) or ``global`` (one threshold).
        structure: ``unstructured`` or ``N:M``.
        scope: which weights are prunable (``benchmark.models.structure.SCOPES``).
        version: bumped whenever the method's numbers can change.
        """
        if granularity not in ("layer", "global"):
            raise ValueError(f"granularity must be 'layer' or 'global', got {granularity!r}")
        self.granularity = granularity
        self.nm = parse_nm(structure)
        if self.nm and granularity == "global":
            raise ValueError("N:M structure is per row; use granularity=layer")
        self.scope = scope
        self.version = version

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Return masks keeping the largest-magnitude weights."""
        sparsity = check_sparsity(sparsity)
        params = prunable_params(model, self.scope)
        if self.nm:
            check_nm_sparsity(self.nm, sparsity)
            return {n: nm_mask(p.detach().abs(), *self.nm) for n, p in params.items()}
        scores = {n: p.detach().abs() for n, p in params.items()}
        if self.granularity == "layer":
            return layer_topk_masks(scores, sparsity)
        return global_topk_masks(scores, sparsity)


class NoPruner:
    """The dense model: keeps every weight (``pruner=none``; sparsity must be 0 or is ignored)."""

    def __init__(self, scope: str = "encoder_linear", version: int = 1) -> None:
        """Args: scope and version as for every pruner."""
        self.scope = scope
        self.version = version

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Return all-True masks."""
        return {
            n: torch.ones_like(p, dtype=torch.bool)
            for n, p in prunable_params(model, self.scope).items()
        }
