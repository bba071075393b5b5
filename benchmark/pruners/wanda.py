"""Wanda (Sun, Liu, Bair, Kolter, ICLR 2024, "A Simple and Effective Pruning Approach for
Large Language Models"), ported from the official ``prune_wanda``.

Score ``|W_ij| * ||X_j||_2`` over the calibration tokens; per output row the ``int(d_in * s)``
lowest scores are pruned (``N:M``: the M - N lowest of every M consecutive inputs). No weight
update. Blocks are processed in order and each block's statistics come from the outputs of the
already pruned previous block (as the official code does); all linears of a block are
collected together.

Differences from the official code: padding tokens are excluded from ``||X_j||``; calibration
sentences come from the task's training split (default 128); ``N:M`` means KEEP N of every M;
ties break by index.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from benchmark.pruners._layerwise import CalibrationPruner, linear_weight, prune_sequentially
from benchmark.pruners.base import Masks, PruneData
from benchmark.pruners.magnitude import nm_mask, topk_mask


class NormCollector:
    """Accumulates ``||X_j||_2^2`` (float64) of a layer's real-token inputs."""

    def __init__(self, d_in: int, device: torch.device) -> None:
        """Args: input width and device."""
        self.sq = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.n = 0

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor) -> None:
        """Add the input rows ``(n, d_in)`` of one batch."""
        x = inp.to(torch.float64)
        self.sq += (x * x).sum(0)
        self.n += x.shape[0]

    def solve(
        self, weight: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Keep mask of ``weight`` by the Wanda score, per output row."""
        return wanda_mask(weight, self.sq.sqrt(), sparsity, nm)


def wanda_mask(
    weight: torch.Tensor, xnorm: torch.Tensor, sparsity: float, nm: tuple[int, int] | None = None
) -> torch.Tensor:
    """Keep mask from the score ``|W_ij| * xnorm_j``: per row, or N:M within each row."""
    score = weight.detach().abs().to(torch.float64) * xnorm.to(weight.device)[None, :]
    if nm is not None:
        return nm_mask(score, *nm)
    d_in = score.shape[1]
    keep = d_in - int(d_in * sparsity)
    return (
        torch.stack([topk_mask(row, keep) for row in score])
        if keep < d_in
        else (torch.ones_like(score, dtype=torch.bool))
    )


class WandaPruner(CalibrationPruner):
    """Wanda (Sun et al., ICLR 2024): ``|W| * ||X||`` per output row, no weight update."""

    def __init__(
        self,
        nsamples: int = 128,
        max_length: int | None = None,
        batch_size: int = 32,
        structure: str = "unstructured",
        scope: str = "encoder_linear",
        version: int = 1,
    ) -> None:
        """Args:
        nsamples: calibration sentences (paper: 128 segments).
        max_length: tokenizer truncation (None: the task's ``max_length``).
        batch_size: calibration batch size (memory only).
        structure: ``unstructured`` or ``N:M`` (keep N of every M).
        scope: only ``encoder_linear`` is supported.
        version: bumped whenever the method's numbers can change.
        """
        super().__init__(nsamples, max_length, batch_size, structure, scope, version)

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Return Wanda masks; the model's pruned weights are zeroed in place for propagation."""
        start = time.perf_counter()
        sparsity, batches = self._start(data, sparsity)

        def prune_layer(lin: nn.Linear, coll: NormCollector) -> torch.Tensor:
            weight = linear_weight(lin)
            keep = coll.solve(weight, sparsity, self.nm)
            with torch.no_grad():  # zeroed now so the next block sees the pruned outputs
                weight.mul_(keep.to(weight.dtype))
            return keep

        masks, state = prune_sequentially(
            model, batches, lambda lin: NormCollector(lin.in_features, linear_weight(lin).device),
            prune_layer,
        )  # fmt: skip
        self.info = {
            "method": "wanda",
            "nsamples": sum(int(b["input_ids"].shape[0]) for b in batches),
            "n_tokens": state.n_tokens,
            "structure": self.structure,
            "seconds": round(time.perf_counter() - start, 3),
        }
        return masks
