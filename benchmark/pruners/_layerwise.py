"""The layer-wise engine shared by the calibration pruners (Wanda, SparseGPT, AKR).

The loop every post-training pruner repeats (sparsegpt ``opt_sequential``, wanda
``prune_wanda``, AKR ``run_layerwise``) lives here once:

1. :func:`capture_block_inputs` runs the model on the calibration batches up to encoder block 0
   and keeps that block's inputs: the hidden states and whatever else the encoder passes to a
   block (the extended attention mask), plus the token mask that marks real (non-padding)
   tokens.
2. For each block, :class:`LinearTaps` hooks the block's prunable linears inside a context
   manager (the hooks are always removed) and feeds each layer's input and output, restricted
   to real tokens, to a small collector object (``add_batch(inp, out)``).
3. The pruner solves each collector, writes the pruned weights and :func:`run_block`
   recomputes the block's outputs, which become the next block's inputs.

Everything stays on the device the model is on; statistics are accumulated in float64.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from benchmark.models.structure import encoder_blocks
from benchmark.pruners.base import PruneData, calibration_batches, check_sparsity
from benchmark.pruners.magnitude import check_nm_sparsity, parse_nm

log = logging.getLogger(__name__)


class Collector(Protocol):
    """Accumulates one layer's calibration statistics, batch by batch."""

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor) -> None:
        """Add the layer's input ``(n_tokens, d_in)`` and output ``(n_tokens, d_out)``."""
        ...


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early (nothing after the tapped layer runs)."""


@dataclass
class CalibInputs:
    """The inputs of one encoder block for every calibration batch.

    Attributes:
        hidden: per batch, the hidden states ``(batch, seq, hidden)`` entering the block.
        args: per batch, the positional arguments after the hidden states (the extended
            attention mask, head mask, ...), exactly as the encoder passed them.
        kwargs: per batch, the keyword arguments the encoder passed.
        token_masks: per batch, ``(batch, seq)`` bool, True for real (non-padding) tokens.
    """

    hidden: list[torch.Tensor] = field(default_factory=list)
    args: list[tuple[Any, ...]] = field(default_factory=list)
    kwargs: list[dict[str, Any]] = field(default_factory=list)
    token_masks: list[torch.Tensor] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        """Number of real tokens over all batches."""
        return int(sum(int(m.sum()) for m in self.token_masks))


def _first_block(model: nn.Module) -> nn.Module:
    from benchmark.models.structure import encoder_blocks

    return encoder_blocks(model)[0].module


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, batches: Sequence[dict[str, torch.Tensor]]
) -> CalibInputs:
    """Run the model on ``batches`` up to encoder block 0 and keep that block's inputs."""
    block = _first_block(model)
    state = CalibInputs()

    def grab(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        state.hidden.append(args[0].detach())
        state.args.append(tuple(args[1:]))
        state.kwargs.append(dict(kwargs))
        raise _StopForward

    was_training = model.training
    model.eval()
    handle = block.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for batch in batches:
            with suppress(_StopForward):
                model(**batch)
            mask = batch.get("attention_mask")
            if mask is None:
                mask = torch.ones(batch["input_ids"].shape, device=batch["input_ids"].device)
            state.token_masks.append(mask.bool())
    finally:
        handle.remove()
        model.train(was_training)
    return state


@torch.no_grad()
def run_block(
    block: nn.Module, state: CalibInputs, hidden: Sequence[torch.Tensor] | None = None
) -> list[torch.Tensor]:
    """The block's outputs for every calibration batch (inputs: ``hidden`` or ``state.hidden``)."""
    hidden = state.hidden if hidden is None else hidden
    outs = []
    for h, args, kwargs in zip(hidden, state.args, state.kwargs, strict=True):
        out = block(h, *args, **kwargs)
        outs.append((out[0] if isinstance(out, tuple) else out).detach())
    return outs


class LinearTaps:
    """Context manager that feeds the inputs/outputs of chosen linears to collectors.

    Only real tokens (``token_mask``, set before each batch by :meth:`feed`) reach the
    collectors. With ``stop_after`` set, the forward pass ends right after that layer, so
    nothing downstream of it is computed.
    """

    def __init__(
        self,
        linears: dict[str, nn.Module],
        collectors: dict[str, Collector],
        stop_after: str | None = None,
    ) -> None:
        """Args:
        linears: name -> module to tap.
        collectors: name -> collector receiving that module's (input, output).
        stop_after: a name in ``linears`` after which the forward pass is abandoned.
        """
        self.linears = linears
        self.collectors = collectors
        self.stop_after = stop_after
        self.token_mask: torch.Tensor | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].detach()
            y = output.detach()
            if self.token_mask is not None:
                if x.shape[:-1] != self.token_mask.shape:  # not the token sequence: DeBERTa's
                    return  # shared query/key projections of relative positions (not tapped)
                x, y = x[self.token_mask], y[self.token_mask]
            self.collectors[name].add_batch(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))
            if name == self.stop_after:
                raise _StopForward

        return hook

    def __enter__(self) -> LinearTaps:
        for name, lin in self.linears.items():
            self._handles.append(lin.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @torch.no_grad()
    def feed(
        self, block: nn.Module, state: CalibInputs, hidden: Sequence[torch.Tensor] | None = None
    ) -> None:
        """Run ``block`` on every calibration batch so that the hooks see them."""
        for i in range(len(state.hidden)):
            self.feed_one(block, state, i, hidden)

    @torch.no_grad()
    def feed_one(
        self,
        block: nn.Module,
        state: CalibInputs,
        index: int,
        hidden: Sequence[torch.Tensor] | None = None,
    ) -> None:
        """Run ``block`` on calibration batch ``index`` (inputs: ``hidden`` or ``state``)."""
        h = (state.hidden if hidden is None else hidden)[index]
        self.token_mask = state.token_masks[index]
        try:
            with suppress(_StopForward):
                block(h, *state.args[index], **state.kwargs[index])
        finally:
            self.token_mask = None


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode (no dropout) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def block_progress(blocks: Sequence[Any], desc: str) -> Iterator[Any]:
    """Iterate over encoder blocks with a progress bar and ETA (the training loops' switch
    ``progress`` decides); without bars, one log line per block with elapsed time and ETA."""
    import time

    from tqdm.auto import tqdm

    from benchmark.training import loop

    blocks = list(blocks)
    if loop.SHOW_PROGRESS:
        yield from tqdm(blocks, desc=f"{desc} (blocks)", unit="block")
        return
    start = time.perf_counter()
    for i, block in enumerate(blocks):
        yield block
        done = time.perf_counter() - start
        eta = done / (i + 1) * (len(blocks) - i - 1)
        log.info("%s: block %d/%d done, %.0f s, about %.0f s left", desc, i + 1, len(blocks),
                 done, eta)  # fmt: skip


class CalibrationPruner:
    """Settings and set-up shared by the calibration-based pruners (AKR, SparseGPT, Wanda)."""

    def __init__(
        self, nsamples: int, max_length: int | None, batch_size: int, structure: str,
        scope: str, version: int,
    ) -> None:  # fmt: skip
        """Args: calibration size, length and batch size; ``unstructured`` or ``N:M``; scope
        (only ``encoder_linear``); the method's version."""
        if scope != "encoder_linear":
            raise ValueError(
                f"{type(self).__name__} supports scope=encoder_linear only, got {scope!r}"
            )
        self.nsamples = nsamples
        self.max_length = max_length
        self.batch_size = batch_size
        self.structure = structure
        self.nm = parse_nm(structure)
        self.scope = scope
        self.version = version
        self.info: dict = {}

    def _start(self, data: PruneData, sparsity: float) -> tuple[float, list[dict]]:
        """Validate the target sparsity (and N:M) and draw the seeded calibration batches."""
        sparsity = check_sparsity(sparsity)
        if self.nm:
            check_nm_sparsity(self.nm, sparsity)
        return sparsity, calibration_batches(data, self.nsamples, self.max_length, self.batch_size)


def prune_sequentially(
    model: nn.Module,
    batches: list[dict[str, torch.Tensor]],
    make_collector: Callable[[nn.Linear], Collector],
    prune_layer: Callable[[nn.Linear, Any], torch.Tensor],
) -> tuple[dict[str, torch.Tensor], CalibInputs]:
    """The block-sequential loop of the calibration pruners whose target is the current model.

    For each encoder block: tap its prunable linears with one collector each while the block
    runs on the calibration inputs, let ``prune_layer(linear, collector)`` prune each linear in
    place and return its keep-mask, then recompute the block's outputs (now pruned) as the next
    block's inputs. Returns the masks by parameter name and the captured calibration state.
    """
    masks: dict[str, torch.Tensor] = {}
    with eval_mode(model):
        state = capture_block_inputs(model, batches)
        hidden = state.hidden
        for block in block_progress(encoder_blocks(model), "prune"):
            colls = {n: make_collector(lin) for n, lin in block.linears.items()}
            with LinearTaps(dict(block.linears), colls) as taps:
                taps.feed(block.module, state, hidden)
            for name, lin in block.linears.items():
                masks[f"{name}.weight"] = prune_layer(lin, colls[name])
            del colls
            hidden = run_block(block.module, state, hidden)
    return masks, state


class GramCollector:
    """Accumulates ``H = X^T X / n`` (float64) of a layer's real-token inputs.

    With ``bias_column`` a column of ones is appended to X (AKR refits the bias jointly).
    """

    def __init__(self, d_in: int, device: torch.device, bias_column: bool = False) -> None:
        """Args: input width, device, and whether to append a ones column."""
        self.bias_column = bias_column
        d = d_in + int(bias_column)
        self.xtx = torch.zeros(d, d, dtype=torch.float64, device=device)
        self.n = 0

    def _augment(self, inp: torch.Tensor) -> torch.Tensor:
        x = inp.to(torch.float64)
        if self.bias_column:
            x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
        return x

    def add_batch(self, inp: torch.Tensor, out: torch.Tensor) -> None:
        """Add the input rows of one batch (the output is not used)."""
        x = self._augment(inp)
        self.xtx.addmm_(x.T, x)
        self.n += x.shape[0]

    @property
    def hessian(self) -> torch.Tensor:
        """``X^T X / n`` (float64)."""
        return self.xtx / max(self.n, 1)


def linear_weight(lin: nn.Module) -> torch.Tensor:
    """The weight parameter to read and write (``weight_orig`` while a mask hook is active)."""
    weight = getattr(lin, "weight_orig", None)
    return weight if weight is not None else lin.weight


@torch.no_grad()
def write_linear(lin: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    """Copy ``weight`` (and ``bias``) into the layer, in the layer's dtype."""
    target = linear_weight(lin)
    target.copy_(weight.to(target.dtype))
    if bias is not None and lin.bias is not None:
        lin.bias.copy_(bias.to(lin.bias.dtype))


def inverse_spd(
    h: torch.Tensor, damp: float = 0.0, min_pivot: float = 0.0
) -> tuple[torch.Tensor, float]:
    """Inverse of a symmetric positive (semi-)definite matrix via Cholesky.

    Adds ``damp * mean(diag)`` to the diagonal. When the factorisation fails, or its smallest
    squared pivot is below ``min_pivot * mean(diag)`` (H numerically singular, e.g. the exact
    linear dependency between a LayerNorm output and a ones column), the damping is raised to
    1e-10, 1e-9, ... times the mean diagonal. Returns the relative damping finally used so
    that callers can record it.
    """
    mean_diag = float(torch.diagonal(h).mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    rel = damp
    while True:
        chol, info = torch.linalg.cholesky_ex(h + rel * mean_diag * eye)
        if int(info) == 0:
            pivot = float(torch.diagonal(chol).min()) ** 2
            if pivot >= min_pivot * mean_diag:
                return torch.cholesky_inverse(chol), rel
        rel = 1e-10 if rel == 0 else rel * 10
        if rel > 1.0 or not math.isfinite(mean_diag):
            raise RuntimeError("Hessian is not positive definite even with damping 1.0 (NaN?)")
        log.debug("Hessian (numerically) singular; relative damping %g", rel)


def mark_dead_inputs(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """OBC/SparseGPT convention for inputs that are always zero: H_jj = 1 and W[:, j] = 0.

    Modifies ``h`` and ``w`` in place; returns the bool vector of dead inputs.
    """
    dead = torch.diagonal(h) == 0
    if bool(dead.any()):
        idx = torch.nonzero(dead).flatten()
        h[idx, idx] = 1.0
        w[:, idx[idx < w.shape[1]]] = 0.0
    return dead
