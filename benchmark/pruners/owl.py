"""OWL: outlier-weighed layer-wise sparsity (Yin, Wu, Zhang, Lu, Jaiswal, Pechenizkiy, Wang,
Liu, ICML 2024, "Outlier Weighed Layerwise Sparsity (OWL): A Missing Secret Sauce for Pruning
LLMs to High Sparsity").

Official code: luuyin/OWL @ dddb7a4 (``lib/prune_all.py``, ``main.py``, ``README.md``). OWL
does not choose weights itself; it gives every encoder block its own sparsity and lets a base
pruner (Wanda, SparseGPT, AKR here) prune each block at that sparsity:

1. Outlier pass on the DENSE model (nothing is pruned in it, prune_all.py:884-951 for
   ``prune_wanda_outlier``): per block, the Wanda score ``|W_ij| * ||X_j||`` of all its
   prunable linears is concatenated and the block's outlier ratio D is the percentage of
   entries above ``M`` times their mean (``check_outlier_mean``, prune_all.py:139-154, called
   at :947). The Wanda score is used whatever the base pruner is (``prune_sparsegpt_outlier``
   computes the same, prune_all.py:1282-1307).
2. Ratios: D is min-max normalised to ``[0, 2 * lambda]``, its mean subtracted and ``1 - s``
   added, which gives each block's density (prune_all.py:964-966); the block's sparsity is
   one minus that, so blocks lie in ``[s - lambda, s + lambda]``, blocks with more outliers
   are pruned less, and the mean over blocks is exactly ``s``. The official code sets a block
   sparsity ``<= 0`` to 0.01 (prune_all.py:1054-1058); see the differences below.
3. The base pruner runs block by block with its own propagation, each block at its ratio
   (prune_all.py:1049-1097 for Wanda, :1402-1441 for SparseGPT).

Defaults ``lambda = 0.08``, ``M = 5``: the README's unstructured scripts for OWL-Wanda,
OWL-SparseGPT and OWL-magnitude (README.md:106-107, :133-134, :146-147); ``main.py``'s own
defaults are ``Lamda = 0.08`` (main.py:256-258) and ``Hyper_m = 3`` (main.py:265-267).

How the per-block sparsity reaches the base (no base file is changed): Wanda and SparseGPT
expose their per-layer solvers (:func:`~benchmark.pruners.wanda.wanda_mask`,
:func:`~benchmark.pruners.sparsegpt.sparsegpt_prune`), which this module calls inside the
shared :func:`~benchmark.pruners._layerwise.prune_sequentially` loop with the base's own
settings. AKR has no public per-layer entry point, so a subclass overrides its per-layer
method ``AKRPruner._prune_layer`` to replace the sparsity argument by the layer's ratio; the
rest of AKR (dense targets, ridge, OBS, info) runs unchanged. A per-layer sparsity hook in
the bases (e.g. ``layer_sparsity: dict[str, float]``) would make this private coupling
unnecessary.

Differences from the official code:

- All blocks of a BERT encoder have the same number of prunable weights, so the mean ratio
  being ``s`` makes the overall target exact before rounding; per row the base prunes
  ``int(d_in * s_l)`` weights, so the actual sparsity is below the target by less than
  ``1 / d_in`` (recorded in ``info["actual_sparsity"]``).
- When every block has the same outlier ratio the official min-max normalisation divides by
  zero (NaN ratios); here every block then gets ``s``.
- ``lambda`` is capped at ``s`` (recorded as ``info["lamda_used"]``). The official code
  clamps a block sparsity ``<= 0`` to 0.01 (prune_all.py:1057-1058), which breaks the mean:
  at ``s < lambda`` it prunes more than the target, and at ``s = 0`` it still prunes. With
  the cap the mean is ``s`` for every target and ``s = 0`` keeps every weight. Nothing changes
  for ``s >= lambda`` (all of OWL's settings).
- A ratio ``>= 1`` (``s + lambda >= 1``) is refused rather than pruning a whole block.
- N:M bases are refused: OWL's N:M variant (``prune_wanda_outlier_structure``,
  prune_all.py:682-851) is a different algorithm, not implemented.
- The outlier statistics use real (non-padding) tokens, and the base's calibration settings
  (sample, length) serve both passes, as the official code draws the same C4 sample twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from benchmark.models.structure import encoder_blocks
from benchmark.pruners._layerwise import (
    CalibrationPruner,
    GramCollector,
    LinearTaps,
    capture_block_inputs,
    eval_mode,
    linear_weight,
    prune_sequentially,
    run_block,
    write_linear,
)
from benchmark.pruners.akr import AKRPruner
from benchmark.pruners.base import Masks, PruneData, check_sparsity
from benchmark.pruners.sparsegpt import SparseGPTPruner, sparsegpt_prune
from benchmark.pruners.wanda import NormCollector, WandaPruner, wanda_mask


def outlier_ratio(scores: Sequence[torch.Tensor], m: float) -> float:
    """Percentage of the concatenated ``scores`` above ``m`` times their mean (OWL's D)."""
    flat = torch.cat([s.detach().flatten().to(torch.float64) for s in scores])
    return float((flat > m * flat.mean()).sum()) / flat.numel() * 100.0


def owl_sparsities(ratios: Sequence[float], sparsity: float, lamda: float) -> list[float]:
    """Per-block sparsities from the outlier ratios: ``s - lambda .. s + lambda``, mean ``s``.

    More outliers -> lower sparsity. Identical ratios (or ``lamda == 0``) give ``s`` everywhere.
    ``lamda`` is capped at ``s`` so that no block falls below 0 and the mean stays ``s`` (this
    replaces the official clamp of a block sparsity ``<= 0`` to 0.01).
    """
    lamda = min(lamda, sparsity)
    d = torch.tensor(list(ratios), dtype=torch.float64)
    spread = float(d.max() - d.min()) if d.numel() else 0.0
    if spread == 0.0 or lamda == 0.0:
        return [float(sparsity)] * d.numel()
    d = (d - d.min()) / spread * (2 * lamda)
    density = d - d.mean() + (1 - sparsity)
    out = []
    for dens in density.tolist():
        s = max(1 - dens, 0.0)  # >= 0 up to rounding thanks to the cap
        if s >= 1:
            raise ValueError(
                f"OWL block sparsity {s:.4f} >= 1 (sparsity {sparsity} + lambda {lamda} too high)"
            )
        out.append(s)
    return out


@torch.no_grad()
def block_outlier_ratios(
    model: nn.Module, batches: list[dict[str, torch.Tensor]], m: float
) -> list[float]:
    """OWL's outlier ratio of every encoder block, on the dense model (nothing pruned)."""
    ratios = []
    with eval_mode(model):
        state = capture_block_inputs(model, batches)
        hidden = state.hidden
        for block in encoder_blocks(model):
            colls = {
                n: NormCollector(lin.in_features, linear_weight(lin).device)
                for n, lin in block.linears.items()
            }
            with LinearTaps(dict(block.linears), colls) as taps:
                taps.feed(block.module, state, hidden)
            scores = [
                linear_weight(lin).detach().abs().to(torch.float64) * colls[n].sq.sqrt()[None, :]
                for n, lin in block.linears.items()
            ]
            ratios.append(outlier_ratio(scores, m))
            hidden = run_block(block.module, state, hidden)
    return ratios


class _AKRPerLayer(AKRPruner):
    """AKR with the sparsity of each linear replaced by its OWL ratio (keyed by module id)."""

    def __init__(self, base: AKRPruner, per_layer: dict[int, float]) -> None:
        self.__dict__.update(base.__dict__)
        self._per_layer = per_layer

    def _prune_layer(self, lin: nn.Linear, *args):  # type: ignore[override]
        *rest, _sparsity = args
        return super()._prune_layer(lin, *rest, self._per_layer[id(lin)])


class OWLPruner:
    """OWL (Yin et al., ICML 2024): outlier-weighed per-block sparsity over a base pruner."""

    def __init__(
        self,
        base: str | CalibrationPruner = "wanda",
        base_overrides: dict | None = None,
        lamda: float = 0.08,
        hyper_m: float = 5.0,
        scope: str = "encoder_linear",
        version: int = 1,
    ) -> None:
        """Args:
        base: the pruner that prunes each block: a ``conf/pruner`` name (``wanda``,
            ``sparsegpt``, ``akr``; built from that file, so OWL always runs the base exactly
            as ``pruner=<base>`` does) or a WandaPruner / SparseGPTPruner / AKRPruner object.
            Its calibration settings serve both passes.
        base_overrides: keys of the base's config to override (e.g. ``{nsamples: 64}``).
        lamda: half-width of the sparsity range ``[s - lambda, s + lambda]`` (paper's lambda).
        hyper_m: outlier threshold as a multiple of the mean score (paper's M).
        scope: only ``encoder_linear``.
        version: bumped whenever the method's numbers can change.
        """
        self.base_name = base if isinstance(base, str) else type(base).__name__
        self.base_overrides = dict(base_overrides or {})
        if isinstance(base, str):
            from benchmark.jobs.registry import build

            base = build("pruner", base, **self.base_overrides)
        elif self.base_overrides:
            raise ValueError("base_overrides needs the base given by its config name")
        if not isinstance(base, WandaPruner | SparseGPTPruner | AKRPruner):
            raise TypeError(
                f"OWL supports Wanda, SparseGPT and AKR bases, got {type(base).__name__}"
            )
        if base.nm is not None:
            raise ValueError("OWL's N:M variant is not implemented; use an unstructured base")
        if scope != "encoder_linear" or base.scope != scope:
            raise ValueError("OWL supports scope=encoder_linear only")
        if lamda < 0 or hyper_m <= 0:
            raise ValueError(f"need lamda >= 0 and hyper_m > 0, got {lamda}, {hyper_m}")
        self.base = base
        self.lamda = float(lamda)
        self.hyper_m = float(hyper_m)
        self.scope = scope
        self.version = version
        self.info: dict = {}

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Outlier pass on the dense model, then the base pruner block by block at its ratio."""
        start = time.perf_counter()
        sparsity = check_sparsity(sparsity)
        _, batches = self.base._start(data, sparsity)
        ratios = block_outlier_ratios(model, batches, self.hyper_m)
        block_sp = owl_sparsities(ratios, sparsity, self.lamda)
        blocks = encoder_blocks(model)
        per_layer = {
            id(lin): s
            for blk, s in zip(blocks, block_sp, strict=True)
            for lin in blk.linears.values()
        }
        base_name = self.base_name
        if isinstance(self.base, AKRPruner):
            runner = _AKRPerLayer(self.base, per_layer)
            masks = runner.prune(model, data, sparsity)
            base_info = runner.info
            self.base.info = base_info
        else:
            masks, state = self._prune_simple(model, batches, per_layer)
            base_info = {
                "method": "wanda" if isinstance(self.base, WandaPruner) else "sparsegpt",
                "nsamples": sum(int(b["input_ids"].shape[0]) for b in batches),
                "n_tokens": state.n_tokens,
            }
        total = sum(m.numel() for m in masks.values())
        actual = sum(int((~m).sum()) for m in masks.values()) / max(total, 1)
        self.info = {
            "method": "owl",
            "base": base_name,
            "base_overrides": self.base_overrides,
            "base_version": getattr(self.base, "version", None),
            "lamda": self.lamda,
            "lamda_used": min(self.lamda, sparsity),
            "hyper_m": self.hyper_m,
            "target_sparsity": sparsity,
            "outlier_ratio": {b.name: r for b, r in zip(blocks, ratios, strict=True)},
            "layer_sparsity": {b.name: s for b, s in zip(blocks, block_sp, strict=True)},
            "actual_sparsity": actual,
            "base_info": base_info,
            "seconds": round(time.perf_counter() - start, 3),
        }
        return masks

    def _prune_simple(self, model: nn.Module, batches: list[dict], per_layer: dict[int, float]):
        """Wanda or SparseGPT with per-layer sparsities, through their per-layer solvers."""
        base = self.base
        if isinstance(base, WandaPruner):

            def make(lin: nn.Linear) -> NormCollector:
                return NormCollector(lin.in_features, linear_weight(lin).device)

            def prune_layer(lin: nn.Linear, coll: NormCollector) -> torch.Tensor:
                weight = linear_weight(lin)
                keep = wanda_mask(weight, coll.sq.sqrt(), per_layer[id(lin)])
                with torch.no_grad():
                    weight.mul_(keep.to(weight.dtype))
                return keep

        else:

            def make(lin: nn.Linear) -> GramCollector:
                return GramCollector(lin.in_features, linear_weight(lin).device)

            def prune_layer(lin: nn.Linear, coll: GramCollector) -> torch.Tensor:
                new_w, keep = sparsegpt_prune(
                    linear_weight(lin), coll.hessian, per_layer[id(lin)], None,
                    base.blocksize, base.percdamp,
                )  # fmt: skip
                write_linear(lin, new_w)
                return keep

        return prune_sequentially(model, batches, make, prune_layer)
