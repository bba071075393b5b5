"""RIA: relative importance and activations (Zhang, Bai, Lin, Zhao, Wu, Zeng, ICLR 2024,
"Plug-and-Play: An Efficient Post-training Pruning Method for Large Language Models").

Official code: biomedical-cybernetics/Relative-importance-and-activation-pruning @ 7bc55b0
(``lib/prune.py``, ``main.py``). Per linear, with ``|W|`` the absolute weights and ``||X_j||``
the L2 norm of input channel j over the calibration tokens:

    RI_ij  = |W_ij| / sum_k |W_kj|  +  |W_ij| / sum_k |W_ik|      (input column + output row)
    score  = RI_ij * ||X_j|| ** a,   a = 0.5                       (prune.py:239, main.py:45)

Masks:

- unstructured (default, as the official code without ``--per_outneuron``): one threshold per
  layer over the whole matrix (prune.py:409-410); ``granularity: row`` keeps the same number
  per output row (``--per_outneuron``, prune.py:403-407, Wanda's rule).
- ``N:M``: keep the N highest scores of every M consecutive inputs of each row
  (prune.py:390-395).
- ``N:M`` with ``reallocation: true`` (channel permutation, "heuristic channel reallocation",
  prune.py:243-380): input channels are sorted by their summed score (``importance_score=sum``,
  the default, prune.py:261) and dealt to the M positions of the groups in a zig-zag (odd
  positions take the next slice of the sorted order, even positions the same slice reversed,
  prune.py:279-284); N:M is applied in the permuted order and the mask mapped back to the
  original columns (prune.py:380). The mask is then N:M in the PERMUTED input order (what a
  2:4 kernel runs after the input channels are permuted once), not in the original one; the
  permutation of every layer is recorded in ``info["permutations"]``.

Blocks are pruned in order with the statistics of each block taken from the already pruned
previous block, and weights are only zeroed, never updated (prune.py:175-420; the same engine
as Wanda here, :func:`benchmark.pruners._layerwise.prune_sequentially`).

Differences from the official code:

- The per-layer threshold ``score <= sorted[int(numel * s)]`` prunes one weight more than
  ``int(numel * s)``; we prune exactly ``numel - keep_count(numel, s)`` (ties by index).
- ``N:M`` means KEEP N of every M (official ``prune_n`` counts pruned weights: its ``2:4`` is
  ours, its ``1:4`` is our ``3:4``).
- Not implemented: the linear-sum-assignment refinement of the permutation (``--lsa``,
  prune.py:300-375), the ``retained_degree_*`` column scores (prune.py:262-277), the SparseGPT
  reconstruction option (``--reconstruction``), and 2:4 kernels (``--semi_sparse_acc``).
- Padding tokens are excluded from ``||X_j||``; calibration sentences come from the task's
  training split (official: 128 C4 segments of 2,048 tokens).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from benchmark.models.structure import prunable_linears
from benchmark.pruners._layerwise import CalibrationPruner, linear_weight, prune_sequentially
from benchmark.pruners.base import Masks, PruneData, keep_count
from benchmark.pruners.magnitude import nm_mask, topk_mask
from benchmark.pruners.wanda import NormCollector


def relative_importance(weight: torch.Tensor) -> torch.Tensor:
    """``|W_ij| / sum_k |W_kj| + |W_ij| / sum_k |W_ik|`` (float64; an all-zero line gives 0)."""
    w = weight.detach().abs().to(torch.float64)
    col = w.sum(0, keepdim=True)  # per input channel (over output rows)
    row = w.sum(1, keepdim=True)  # per output row (over inputs)
    return w / col.clamp_min(torch.finfo(w.dtype).tiny) + w / row.clamp_min(
        torch.finfo(w.dtype).tiny
    )


def ria_score(weight: torch.Tensor, xnorm: torch.Tensor, a: float = 0.5) -> torch.Tensor:
    """RIA score ``RI * ||X_j|| ** a`` (float64)."""
    return relative_importance(weight) * xnorm.to(weight.device, torch.float64)[None, :] ** a


def reallocation_index(score: torch.Tensor, m: int) -> torch.Tensor:
    """RIA's heuristic channel reallocation: the input permutation ``index``.

    Channels sorted by summed score (ascending) are cut into M equal slices; slice i fills
    position i of every group of M, in order for odd i (1-based) and reversed for even i.
    The permuted matrix is ``score[:, index]``.
    """
    d = score.shape[1]
    if d % m:
        raise ValueError(f"input dimension {d} is not divisible by M={m}")
    order = torch.sort(score.sum(0), stable=True).indices
    index = torch.empty_like(order)
    for pos in range(m):
        chunk = order[d * pos // m : d * (pos + 1) // m]
        index[pos::m] = chunk if pos % 2 == 0 else chunk.flip(0)
    return index


def ria_mask(
    score: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    granularity: str = "layer",
    reallocation: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep mask from a RIA score; returns (mask, permutation or None).

    Args:
        score: ``(d_out, d_in)`` scores (higher = keep).
        sparsity: fraction pruned (ignored with ``nm``).
        nm: ``(N, M)``: keep N of every M consecutive inputs.
        granularity: ``layer`` (one threshold per matrix) or ``row`` (same count per row).
        reallocation: with ``nm``, apply N:M in the channel-reallocated order.
    """
    if nm is not None:
        if not reallocation:
            return nm_mask(score, *nm), None
        index = reallocation_index(score, nm[1])
        mask = torch.zeros_like(score, dtype=torch.bool)
        mask[:, index] = nm_mask(score[:, index], *nm)
        return mask, index
    if granularity == "row":
        d_in = score.shape[1]
        keep = d_in - int(d_in * sparsity)
        return torch.stack([topk_mask(row, keep) for row in score]), None
    return topk_mask(score, keep_count(score.numel(), sparsity)), None


class RIAPruner(CalibrationPruner):
    """RIA (Zhang et al., ICLR 2024): relative importance times ``||X||^a``, no weight update."""

    def __init__(
        self,
        nsamples: int = 128,
        max_length: int | None = None,
        batch_size: int = 32,
        structure: str = "unstructured",
        a: float = 0.5,
        granularity: str = "layer",
        reallocation: bool = False,
        scope: str = "encoder_linear",
        version: int = 1,
    ) -> None:
        """Args:
        nsamples: calibration sentences (official: 128).
        max_length: tokenizer truncation (None: the task's ``max_length``).
        batch_size: calibration batch size (memory only).
        structure: ``unstructured`` or ``N:M`` (keep N of every M).
        a: exponent of the activation norm (official 0.5).
        granularity: ``layer`` (official default) or ``row`` (``--per_outneuron``).
        reallocation: channel permutation before N:M (official ``--reallocation``).
        scope: only ``encoder_linear`` is supported.
        version: bumped whenever the method's numbers can change.
        """
        if granularity not in ("layer", "row"):
            raise ValueError(f"granularity must be 'layer' or 'row', got {granularity!r}")
        super().__init__(nsamples, max_length, batch_size, structure, scope, version)
        if reallocation and self.nm is None:
            raise ValueError("reallocation (channel permutation) needs an N:M structure")
        self.a = float(a)
        self.granularity = granularity
        self.reallocation = reallocation

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Return RIA masks; pruned weights are zeroed in place for the propagation."""
        start = time.perf_counter()
        sparsity, batches = self._start(data, sparsity)
        perms: dict[str, list[int]] = {}
        names = {}

        def prune_layer(lin: nn.Linear, coll: NormCollector) -> torch.Tensor:
            weight = linear_weight(lin)
            score = ria_score(weight, coll.sq.sqrt(), self.a)
            keep, index = ria_mask(score, sparsity, self.nm, self.granularity, self.reallocation)
            if index is not None:
                perms[names[id(lin)]] = index.tolist()
            with torch.no_grad():
                weight.mul_(keep.to(weight.dtype))
            return keep

        names.update({id(lin): n for n, lin in prunable_linears(model, self.scope).items()})
        masks, state = prune_sequentially(
            model, batches, lambda lin: NormCollector(lin.in_features, linear_weight(lin).device),
            prune_layer,
        )  # fmt: skip
        self.info = {
            "method": "ria",
            "nsamples": sum(int(b["input_ids"].shape[0]) for b in batches),
            "n_tokens": state.n_tokens,
            "structure": self.structure,
            "a": self.a,
            "granularity": self.granularity,
            "reallocation": self.reallocation,
            "seconds": round(time.perf_counter() - start, 3),
        }
        if perms:
            self.info["permutations"] = perms
        return masks
