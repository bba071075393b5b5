"""SparseGPT (Frantar & Alistarh, ICML 2023, "SparseGPT: Massive Language Models Can Be
Accurately Pruned in One-Shot"), ported from the official ``sparsegpt.py`` / ``opt.py``.

Blocks are pruned in order; each block's prunable linears see the outputs of the already
pruned previous block, all layers of a block are collected together from the block's inputs
(``opt_sequential``), and the target of each layer is its own current output: H = X^T X
(no dense target, no refit step). Per layer: damping 0.01 * mean(diag H), inverse Hessian by
Cholesky, then column blocks of 128 with the mask chosen per block by ``w^2 / [H^-1]_jj^2``
and lazy batched updates of the later columns.

Differences from the official code:

- The per-block unstructured mask prunes exactly ``numel - keep_count(numel, s)`` weights
  (the official ``tmp <= sort(tmp)[int(numel * s)]`` prunes one more weight per block, so at
  sparsity 0 it still prunes); ties break by index.
- ``N:M`` means KEEP N of every M (the official ``prunen:prunem`` counts pruned weights).
- Padding tokens are excluded from H (the LLM code has no padding).
- Calibration sentences come from the task's training split (``nsamples`` sentences, default
  128 as in the paper), not C4 segments of 2,048 tokens.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from benchmark.pruners._layerwise import (
    CalibrationPruner,
    GramCollector,
    linear_weight,
    mark_dead_inputs,
    prune_sequentially,
    write_linear,
)
from benchmark.pruners.base import (
    Masks,
    PruneData,
    keep_count,
)
from benchmark.pruners.magnitude import topk_mask

log = logging.getLogger(__name__)


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT's ``fasterprune`` on one weight matrix.

    Args:
        weight: ``(d_out, d_in)``.
        hessian: ``(d_in, d_in)`` proportional to ``X^T X``.
        sparsity: target fraction zeroed (ignored with ``nm``).
        nm: ``(N, M)``: keep N of every M consecutive inputs.
        blocksize: column block width of the lazy updates.
        percdamp: damping as a fraction of the mean diagonal of H.

    Returns:
        (pruned weight float32, keep mask).
    """
    w = weight.detach().to(torch.float32).clone()
    h = hessian.detach().to(torch.float32).clone()
    _rows, cols = w.shape
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={nm[1]}")
    mark_dead_inputs(h, w)
    damp = percdamp * torch.mean(torch.diagonal(h))
    h += damp * torch.eye(cols, dtype=h.dtype, device=h.device)
    h = torch.linalg.cholesky(h)
    h = torch.cholesky_inverse(h)
    hinv = torch.linalg.cholesky(h, upper=True)
    prune_mask = torch.zeros_like(w, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        if nm is None:
            tmp = w1**2 / (torch.diag(hinv1).reshape(1, -1)) ** 2
            mask1 = topk_mask(-tmp, tmp.numel() - keep_count(tmp.numel(), sparsity))
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(count):
            col = w1[:, i]
            d = hinv1[i, i]
            if nm is not None and i % nm[1] == 0:
                tmp = (
                    w1[:, i : i + nm[1]] ** 2
                    / (torch.diag(hinv1)[i : i + nm[1]].reshape(1, -1)) ** 2
                )
                idx = torch.sort(tmp, dim=1, stable=True).indices[:, : nm[1] - nm[0]]
                mask1.scatter_(1, i + idx, True)
            q = col.clone()
            q[mask1[:, i]] = 0
            q1[:, i] = q
            e = (col - q) / d
            w1[:, i:] -= e.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = e
        w[:, i1:i2] = q1
        prune_mask[:, i1:i2] = mask1
        w[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])
    return w, ~prune_mask


class SparseGPTPruner(CalibrationPruner):
    """SparseGPT (Frantar & Alistarh, ICML 2023) for BERT-style encoders.

    See the module docstring for the algorithm and the differences from the official code.
    """

    def __init__(
        self,
        nsamples: int = 128,
        max_length: int | None = None,
        batch_size: int = 32,
        structure: str = "unstructured",
        blocksize: int = 128,
        percdamp: float = 0.01,
        scope: str = "encoder_linear",
        version: int = 1,
    ) -> None:
        """Args:
        nsamples: calibration sentences (paper: 128 segments).
        max_length: tokenizer truncation (None: the task's ``max_length``).
        batch_size: calibration batch size (memory only).
        structure: ``unstructured`` or ``N:M`` (keep N of every M).
        blocksize: column block width of the lazy batched updates (paper: 128).
        percdamp: Hessian damping as a fraction of its mean diagonal (paper: 0.01).
        scope: only ``encoder_linear`` is supported.
        version: bumped whenever the method's numbers can change.
        """
        super().__init__(nsamples, max_length, batch_size, structure, scope, version)
        self.blocksize = blocksize
        self.percdamp = percdamp

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Prune ``model`` in place (weights of prunable linears) and return masks."""
        start = time.perf_counter()
        sparsity, batches = self._start(data, sparsity)

        def prune_layer(lin: nn.Linear, coll: GramCollector) -> torch.Tensor:
            new_w, keep = sparsegpt_prune(
                linear_weight(lin), coll.hessian, sparsity, self.nm, self.blocksize, self.percdamp
            )
            write_linear(lin, new_w)
            return keep

        masks, state = prune_sequentially(
            model, batches, lambda lin: GramCollector(lin.in_features, linear_weight(lin).device),
            prune_layer,
        )  # fmt: skip
        self.info = {
            "method": "sparsegpt",
            "nsamples": sum(int(b["input_ids"].shape[0]) for b in batches),
            "n_tokens": state.n_tokens,
            "structure": self.structure,
            "blocksize": self.blocksize,
            "percdamp": self.percdamp,
            "seconds": round(time.perf_counter() - start, 3),
        }
        return masks
