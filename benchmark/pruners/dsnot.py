"""DSnoT: dynamic sparse no training (Zhang, Zhao, Lin, Zhang, Chen, Ji, ICLR 2024,
"Dynamic Sparse No Training: Training-Free Fine-tuning for Sparse LLMs").

Official code: zyxxmu/DSnoT @ 4c029df (``lib/prune.py`` ``prune_DSnoT``, ``lib/layerwrapper.py``,
``main.py``). A training-free refinement of another method's mask: per output row, pairs of
(regrow a pruned weight, prune a kept one) are swapped to drive the row's expected
reconstruction error towards zero. Weights are never updated, only the mask.

Per linear, with calibration statistics of its input (block by block, each block fed by the
already pruned previous block: prune.py:440-477, mask applied at :855, outputs recomputed
:860-866):

- ``mu_j``: the per-sentence SUM of input j averaged over sentences (``sum_metric_row``,
  layerwrapper.py:56-60); ``var_j``: its variance over tokens (layerwrapper.py:47-53);
  ``||X_j||`` for the Wanda score.
- Initial mask (``initial_method``, main.py:40): the ``int(d_in * s)`` lowest per row of the
  Wanda score ``|W| * ||X_j||`` (prune.py:485-488), of ``|W|`` (magnitude, :489-490) or of
  SparseGPT's score ``W^2 / diag(chol(H^-1))^2`` with 1% damping (no SparseGPT weight update;
  the official branch, :491-516, is broken: see below); selection prune.py:667-679.
- ``dm_ij = W_ij * mu_j`` (prune.py:483). Row error ``e_i = sum_{j pruned} dm_ij``
  (prune.py:695-698).
- Regrowing candidates: the pruned weights sorted by ``dm_ij / var_j ** pow_of_var_regrowing``
  (prune.py:700-709); when ``e > 0`` the largest is regrown, when ``e <= 0`` the smallest.
- Pruning candidates: the kept weights sorted by the Wanda score (least important first),
  negatives of ``dm`` at the front and positives at the back in reverse order (prune.py:711-722,
  ``return_reorder_indice`` prune.py:109-152); when ``e < 0`` the next positive from the back
  is pruned, when ``e >= 0`` the next negative from the front.
- Each cycle, for every row still active, the pair is swapped and ``e += dm_p - dm_r``; a row
  stops for good once ``|e| <= update_threshold`` (0.1, main.py:44); at most ``max_cycle_time``
  (50, main.py:42) cycles (prune.py:758-852). ``without_same_sign`` is True by default
  (main.py:49), so no sign condition is checked.
- ``skip_layer=mlp`` by default (main.py:47; prune.py:680-684): the MLP linears keep their
  initial mask. On BERT that is ``intermediate.dense`` and ``output.dense``
  (``skip: [intermediate.dense, output.dense]``); ``skip: []`` refines all six.

Differences from the official code:

- ``initial_method: sparsegpt``. The official wrapper allocates ``H`` as zeros
  (layerwrapper.py:24-25) and ``add_batch`` never accumulates it (:37-60), so prune.py:499-503
  marks every input dead, zeroes ``W`` and the score is zero everywhere: the stable sort
  (:667-669) prunes the first ``int(d_in * s)`` columns of every row. A defect, not
  reproduced: :func:`sparsegpt_score` uses the real ``X^T X``. Not the default (``wanda``).
- Candidate lists. The official regrowing list sorts ALL weights of the row (kept ones with
  value 0) and the pointers are not bounded, so after enough cycles a pointer can reach a
  kept weight ("regrowing" it is a no-op while a weight is still pruned, raising the row's
  sparsity) and a stopped row keeps overwriting mask entries. Here regrowing candidates are
  the pruned weights only, pruning candidates the kept weights only, and a row stops when a
  list is used up: every row keeps exactly ``int(d_in * s)`` zeros.
- Statistics: real tokens only; ``mu_j`` is the per-sentence sum over a sentence's real tokens
  (the official sums over 2,048-token C4 segments, the scale ``update_threshold`` refers to);
  ``var_j`` is the pooled variance over all real tokens (the official averages per-segment
  variances).
- Not implemented: the N:M branch (prune.py:520-655); N:M structures are refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from benchmark.models.structure import canonical_names, prunable_linears
from benchmark.pruners._layerwise import CalibrationPruner, linear_weight, prune_sequentially
from benchmark.pruners.base import Masks, PruneData

INITIAL_METHODS = ("wanda", "magnitude", "sparsegpt")


def block_relative(name: str) -> str:
    """``bert.encoder.layer.0.attention.output.dense`` -> ``attention.output.dense``."""
    return name.rsplit(".layer.", 1)[-1].split(".", 1)[1]


class DSnoTCollector:
    """Sum, sum of squares (and optionally ``X^T X``) of a layer's real-token inputs."""

    def __init__(self, d_in: int, device: torch.device, gram: bool = False) -> None:
        """Args: input width, device, and whether to keep ``X^T X`` (SparseGPT score)."""
        self.sum = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.sq = torch.zeros(d_in, dtype=torch.float64, device=device)
        self.xtx = torch.zeros(d_in, d_in, dtype=torch.float64, device=device) if gram else None
        self.n = 0

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor) -> None:
        """Add the input rows ``(n, d_in)`` of one batch."""
        x = inp.to(torch.float64)
        self.sum += x.sum(0)
        self.sq += (x * x).sum(0)
        if self.xtx is not None:
            self.xtx.addmm_(x.T, x)
        self.n += x.shape[0]

    @property
    def var(self) -> torch.Tensor:
        """Population variance of each input over the real tokens."""
        n = max(self.n, 1)
        mean = self.sum / n
        return (self.sq / n - mean * mean).clamp_min(0.0)


def sparsegpt_score(weight: torch.Tensor, xtx: torch.Tensor, percdamp: float = 0.01):
    """SparseGPT's selection score ``W^2 / diag(chol(H^-1))^2`` (dead inputs as SparseGPT)."""
    w = weight.detach().to(torch.float64).clone()
    h = xtx.detach().to(torch.float64).clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += percdamp * torch.diagonal(h).mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    u = torch.linalg.cholesky(hinv, upper=True)
    return w * w / torch.diagonal(u)[None, :] ** 2


@torch.no_grad()
def dsnot_refine(
    initial_metric: torch.Tensor,
    wanda_metric: torch.Tensor,
    dm: torch.Tensor,
    var: torch.Tensor,
    sparsity: float,
    update_threshold: float = 0.1,
    max_cycle_time: int = 50,
    pow_of_var_regrowing: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """DSnoT's prune-and-regrow on one layer (all rows in parallel).

    Args:
        initial_metric: ``(d_out, d_in)`` score of the initial mask (higher = keep).
        wanda_metric: ``(d_out, d_in)`` Wanda score ordering the pruning candidates.
        dm: ``(d_out, d_in)`` ``W_ij * mu_j``, each weight's contribution to the row error.
        var: ``(d_in,)`` input variances (regrowing candidates are ranked by ``dm / var^p``).
        sparsity: fraction pruned per row (``int(d_in * s)`` weights).
        update_threshold: a row stops once ``|error| <= update_threshold``.
        max_cycle_time: most swap cycles.
        pow_of_var_regrowing: ``p`` above (0: no variance scaling).

    Returns:
        (keep mask, {"initial_keep": initial keep mask, "cycles": cycles run, "swaps": swaps}).
    """
    rows, d = initial_metric.shape
    k = int(d * sparsity)
    keep = torch.ones(rows, d, dtype=torch.bool, device=dm.device)
    if k == 0:
        return keep, {"initial_keep": keep.clone(), "cycles": 0, "swaps": 0}
    order = torch.sort(initial_metric, dim=1, stable=True).indices
    pruned_idx, kept_idx = order[:, :k], order[:, k:]
    keep.scatter_(1, pruned_idx, False)
    initial_keep = keep.clone()
    dm = dm.to(torch.float64)
    err = dm.gather(1, pruned_idx).sum(1)

    # regrowing candidates: the pruned weights by dm / var^p, ascending
    regrow_score = dm.gather(1, pruned_idx)
    if pow_of_var_regrowing:
        v = var.to(dm.device, torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
        regrow_score = regrow_score / v[pruned_idx] ** pow_of_var_regrowing
    regrow = pruned_idx.gather(1, torch.sort(regrow_score, dim=1, stable=True).indices)

    # pruning candidates: kept weights by Wanda score; negatives first (least important first),
    # zeros in the middle, positives last (least important last)
    kept_wanda = wanda_metric.to(torch.float64).gather(1, kept_idx)
    by_wanda = torch.sort(kept_wanda, dim=1, stable=True).indices
    cand = kept_idx.gather(1, by_wanda)
    sign = torch.sign(dm.gather(1, cand))
    n_kept = d - k
    rank = torch.arange(n_kept, device=dm.device, dtype=torch.float64).expand(rows, n_kept)
    key = torch.where(sign < 0, rank, torch.where(sign > 0, 3 * n_kept - rank, n_kept + rank))
    prune_cand = cand.gather(1, torch.sort(key, dim=1, stable=True).indices)

    ar = torch.arange(rows, device=dm.device)
    lo_r = torch.zeros(rows, dtype=torch.long, device=dm.device)
    hi_r = torch.full((rows,), k - 1, dtype=torch.long, device=dm.device)
    lo_p = torch.zeros(rows, dtype=torch.long, device=dm.device)
    hi_p = torch.full((rows,), n_kept - 1, dtype=torch.long, device=dm.device)
    active = torch.ones(rows, dtype=torch.bool, device=dm.device)
    cycles = swaps = 0
    while bool(active.any()) and cycles < max_cycle_time:
        cycles += 1
        has = (lo_r <= hi_r) & (lo_p <= hi_p)
        from_top_r = err > 0
        pos_r = torch.where(from_top_r, hi_r, lo_r).clamp(0, k - 1)
        r = regrow[ar, pos_r]
        hi_r = hi_r - from_top_r.long()
        lo_r = lo_r + (~from_top_r).long()
        from_top_p = err < 0
        pos_p = torch.where(from_top_p, hi_p, lo_p).clamp(0, n_kept - 1)
        p = prune_cand[ar, pos_p]
        hi_p = hi_p - from_top_p.long()
        lo_p = lo_p + (~from_top_p).long()
        active &= has & (err.abs() > update_threshold)
        sel = ar[active]
        keep[sel, p[active]] = False
        keep[sel, r[active]] = True
        err = err + torch.where(active, dm[ar, p] - dm[ar, r], torch.zeros_like(err))
        swaps += int(active.sum())
    return keep, {"initial_keep": initial_keep, "cycles": cycles, "swaps": swaps}


class DSnoTPruner(CalibrationPruner):
    """DSnoT (Zhang et al., ICLR 2024): training-free prune-and-regrow over an initial mask."""

    def __init__(
        self,
        initial_method: str = "wanda",
        max_cycle_time: int = 50,
        update_threshold: float = 0.1,
        pow_of_var_regrowing: float = 1.0,
        skip: Sequence[str] = ("intermediate.dense", "output.dense"),
        percdamp: float = 0.01,
        nsamples: int = 128,
        max_length: int | None = None,
        batch_size: int = 32,
        structure: str = "unstructured",
        scope: str = "encoder_linear",
        version: int = 1,
    ) -> None:
        """Args:
        initial_method: the base mask: ``wanda`` (default), ``magnitude`` or ``sparsegpt``
            (its score only, as the official code).
        max_cycle_time: most swap cycles per layer (official 50).
        update_threshold: stop a row once ``|error| <= threshold`` (official 0.1).
        pow_of_var_regrowing: exponent of the variance in the regrowing score (official 1).
        skip: block-relative linears that keep their initial mask (official ``skip_layer=mlp``).
        percdamp: damping of the SparseGPT score.
        nsamples, max_length, batch_size: calibration (official 128 samples).
        structure: only ``unstructured`` (the N:M branch is not implemented).
        scope: only ``encoder_linear``.
        version: bumped whenever the method's numbers can change.
        """
        if initial_method not in INITIAL_METHODS:
            raise ValueError(
                f"initial_method must be one of {INITIAL_METHODS}, got {initial_method!r}"
            )
        super().__init__(nsamples, max_length, batch_size, structure, scope, version)
        if self.nm is not None:
            raise ValueError("DSnoT's N:M branch is not implemented; use structure=unstructured")
        self.initial_method = initial_method
        self.max_cycle_time = int(max_cycle_time)
        self.update_threshold = float(update_threshold)
        self.pow_of_var_regrowing = float(pow_of_var_regrowing)
        self.skip = tuple(skip)
        self.percdamp = float(percdamp)

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Initial mask per layer, refined by DSnoT; pruned weights zeroed for propagation."""
        start = time.perf_counter()
        sparsity, batches = self._start(data, sparsity)
        n_sent = sum(int(b["input_ids"].shape[0]) for b in batches)
        names = {id(lin): n for n, lin in prunable_linears(model, self.scope).items()}
        canon = canonical_names(model)  # the skip list names BERT roles on every layout
        layers: dict[str, dict] = {}

        def make(lin: nn.Linear) -> DSnoTCollector:
            return DSnoTCollector(lin.in_features, linear_weight(lin).device,
                                  gram=self.initial_method == "sparsegpt")  # fmt: skip

        def prune_layer(lin: nn.Linear, coll: DSnoTCollector) -> torch.Tensor:
            weight = linear_weight(lin)
            w = weight.detach().to(torch.float64)
            wanda = w.abs() * coll.sq.sqrt()[None, :]
            if self.initial_method == "wanda":
                initial = wanda
            elif self.initial_method == "magnitude":
                initial = w.abs()
            else:
                initial = sparsegpt_score(w, coll.xtx, self.percdamp)
            name = names[id(lin)]
            if block_relative(name) in self.skip or canon.get(name) in self.skip:
                keep, info = dsnot_refine(initial, wanda, w, coll.var, sparsity, max_cycle_time=0)
                info["skipped"] = True
            else:
                dm = w * (coll.sum / max(n_sent, 1))[None, :]
                keep, info = dsnot_refine(
                    initial, wanda, dm, coll.var, sparsity, self.update_threshold,
                    self.max_cycle_time, self.pow_of_var_regrowing,
                )  # fmt: skip
            changed = int((keep != info.pop("initial_keep")).sum()) // 2
            layers[name] = {**info, "changed_pairs": changed}
            with torch.no_grad():
                weight.mul_(keep.to(weight.dtype))
            return keep

        masks, state = prune_sequentially(model, batches, make, prune_layer)
        self.info = {
            "method": "dsnot",
            "initial_method": self.initial_method,
            "nsamples": n_sent,
            "n_tokens": state.n_tokens,
            "max_cycle_time": self.max_cycle_time,
            "update_threshold": self.update_threshold,
            "pow_of_var_regrowing": self.pow_of_var_regrowing,
            "skip": list(self.skip),
            "seconds": round(time.perf_counter() - start, 3),
            "layers": layers,
        }
        return masks
