"""Batching, the shared training loop, and the dense fine-tuning stage with its keyed cache.

The loop is shared by the dense fine-tune and by methods that train with masks: masks applied
through ``benchmark.pruners.base.apply_masks(permanent=False)`` stay enforced by their
pre-hooks while this loop updates ``weight_orig``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmark.data.loading import Example

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]

# Progress bars of every training loop (dense fine-tunes and training-based pruners); the
# pipeline sets it once per job from its ``progress`` option (the only switch: pruners and
# dense recipes just call :func:`train`). Without bars the loop logs every 10%.
SHOW_PROGRESS = True


def set_progress(enabled: bool) -> None:
    """Show (or hide) the training loops' progress bars."""
    global SHOW_PROGRESS
    SHOW_PROGRESS = bool(enabled)


# Where the training loops' step metrics go: the job's W&B mirror sets a sink while its run is
# open (``benchmark.records.tracking``); None (the default) makes reporting a no-op. The loop
# never imports wandb. The sink is called as ``sink(metrics, step, phase)`` with ``step`` the
# optimiser steps of every loop since the sink was set (monotone over a job's phases: dense
# fine-tune, IMP rounds, ticket fine-tune, ...) and ``phase`` the running loop's ``desc``.
MetricsSink = Callable[[dict[str, float], int, str], None]
_SINK: MetricsSink | None = None
_STEP = 0
_PHASE = ""
# at most this many metric points per loop (every step below it)
MAX_POINTS_PER_LOOP = 500


def set_metrics_sink(sink: MetricsSink | None) -> None:
    """Send the training loops' metrics to ``sink`` (None: nowhere); restarts the step count."""
    global _SINK, _STEP, _PHASE
    _SINK, _STEP, _PHASE = sink, 0, ""


def metrics_enabled() -> bool:
    """Whether a sink takes metrics (extra metrics cost nothing to skip when not)."""
    return _SINK is not None


def report_metrics(metrics: dict[str, float | int | None]) -> None:
    """Report metrics (held-out accuracy, ...) at the current step of the running loop.

    A no-op without a sink; None values are left out; a failing sink is logged once and
    dropped (the record, not the mirror, is the result).
    """
    global _SINK
    if _SINK is None:
        return
    values = {k: v if isinstance(v, int) else float(v) for k, v in metrics.items()
              if v is not None}  # fmt: skip
    if not values:
        return
    try:
        _SINK(values, _STEP, _PHASE)
    except Exception as exc:  # never let the mirror break a training run
        log.warning("training metrics no longer reported (%s: %s)", type(exc).__name__,
                    str(exc).splitlines()[0][:160] if str(exc) else "")  # fmt: skip
        _SINK = None


def mask_sparsity(model: nn.Module) -> float | None:
    """Fraction of zeros in the masks enforced by pre-hooks (``weight_mask`` buffers of
    ``apply_masks(permanent=False)``), or None when no mask is active."""
    zeros = total = 0
    for module in model.modules():
        mask = getattr(module, "weight_mask", None)
        if isinstance(mask, torch.Tensor):
            total += mask.numel()
            zeros += int((mask == 0).sum())
    return zeros / total if total else None


def encode(tokenizer, texts: Sequence[str], max_length: int, device: torch.device) -> Batch:
    """Tokenize ``texts`` padded to the longest in the batch (never to 512)."""
    enc = tokenizer(
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {k: v.to(device) for k, v in enc.items()}


def iterate_batches(
    examples: Sequence[Example],
    tokenizer,
    batch_size: int,
    max_length: int,
    device: torch.device,
    generator: torch.Generator | None = None,
    group_by_length: bool = False,
) -> Iterator[Batch]:
    """Yield tokenized batches with ``labels``; shuffled when ``generator`` is given.

    ``group_by_length`` (training only): inside each shuffled window of 50 batches, examples are
    sorted by length before batching and the batches are then shuffled, so a batch pads little.
    Every example is still seen once per pass; only which examples share a batch changes.
    """
    n = len(examples)
    order = (
        torch.randperm(n, generator=generator).tolist() if generator is not None else list(range(n))
    )
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    if group_by_length and generator is not None:
        window = 50 * batch_size
        batches = []
        for s in range(0, n, window):
            part = sorted(order[s : s + window], key=lambda i: len(examples[i][0]))
            batches += [part[j : j + batch_size] for j in range(0, len(part), batch_size)]
        perm = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in perm]
    for idx in batches:
        chunk = [examples[i] for i in idx]
        batch = encode(tokenizer, [t for t, _ in chunk], max_length, device)
        batch["labels"] = torch.tensor([y for _, y in chunk], device=device)
        yield batch


@dataclass(frozen=True)
class TrainConfig:
    """A training budget and optimiser settings (defaults: METHODS.md dense fine-tune).

    Attributes:
        epochs: passes over the training data (fractions allowed); ignored if max_steps is set.
        max_steps: hard step budget, or None.
        batch_size / lr / weight_decay / warmup_ratio: optimiser settings.
        grad_clip: max global L2 norm of the gradients (``None`` or 0: no clipping). A
            per-method setting: each pruner passes its official code's value.
        max_train_examples: use only the first N examples of the (shuffled) training split.
        group_by_length: batch examples of similar length together (much less padding). No
            official code of the seeds does this; the pruners default to False, the dense
            fine-tune (our own recipe) to True.
        seed: data order and dropout seed.
    """

    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 32
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float | None = 1.0
    max_train_examples: int | None = None
    group_by_length: bool = True
    seed: int = 0

    def total_steps(self, n_examples: int) -> int:
        """Number of optimiser steps this budget takes on ``n_examples``."""
        if self.max_steps:
            return int(self.max_steps)
        n = capped_examples(n_examples, self.max_train_examples)
        return max(1, math.ceil(self.epochs * math.ceil(n / self.batch_size)))


def capped_examples(n_available: int, cap: int | None) -> int:
    """Examples a loop trains on: ``n_available`` capped by ``max_train_examples`` (a seeded
    subsample drawn in :func:`train`)."""
    return min(n_available, int(cap)) if cap else n_available


SCHEDULES = ("linear", "constant_with_warmup", "constant")


def make_scheduler(optimizer, total: int, warmup_ratio: float, schedule: str = "linear"):
    """The learning-rate schedule, built with ``transformers``' own schedulers.

    ``linear``: ``get_linear_schedule_with_warmup`` (warm-up to the peak, then linear decay to
    0 at ``total``); ``constant_with_warmup``: ``get_constant_schedule_with_warmup``;
    ``constant``: the same with 0 warm-up steps (no scheduler in the official code: SEVEN).
    Warm-up steps are ``int(total * warmup_ratio)``, as in the official codes.
    """
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warm = int(total * warmup_ratio)
    if schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warm, total)
    if schedule == "constant_with_warmup":
        return get_constant_schedule_with_warmup(optimizer, warm)
    if schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, 0)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def default_step(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy loss, back-propagated; returns the detached loss."""
    loss = model(**batch).loss
    loss.backward()
    return loss.detach()


def train(
    model: nn.Module,
    tokenizer,
    examples: Sequence[Example],
    cfg: TrainConfig,
    max_length: int,
    device: torch.device,
    *,
    params: Sequence[nn.Parameter] | None = None,
    step_fn: Callable[[nn.Module, Batch], torch.Tensor] = default_step,
    after_step: Callable[[int], bool | None] | None = None,
    before_zero_grad: Callable[[int], None] | None = None,
    after_clip: Callable[[int], None] | None = None,
    clip_params: Sequence[torch.Tensor] | None = None,
    schedule: str = "linear",
    schedule_total: int | None = None,
    desc: str = "train",
    metrics: Callable[[], dict[str, float | None]] | None = None,
) -> dict[str, float]:
    """Train ``model`` with AdamW and a learning-rate schedule (:func:`make_scheduler`).

    Args:
        params: parameters to optimise (default: all that require grad).
        step_fn: computes the loss and calls ``backward`` (FreeLB and mask learning plug in here).
        after_step: called with the step index after every optimiser step (schedules, scores);
            returning True stops training early (early stopping). None/False continue.
        before_zero_grad: called with the step index right after ``opt.step()``, while the
            (clipped, if clipping is on) gradients are still in ``.grad`` (SEVEN's scores).
        after_clip: called with the step index after clipping and before ``opt.step()``; a
            gradient added here is not clipped (RobustT's L0 term, ``search_ticket.py:276-284``).
        clip_params: the tensors whose joint norm is clipped (default: ``params``).
        schedule: ``linear`` / ``constant_with_warmup`` / ``constant`` (:func:`make_scheduler`).
        schedule_total: length of the schedule in steps (default: this call's step budget);
            longer than the budget means the decay is cut off (IMP rounds, ``LT_glue.py:398``).
        metrics: extra metrics of the method at each reported step (RobustT's expected gate
            sparsity), called only while a metrics sink is set (:func:`set_metrics_sink`).
            Every loop reports ``loss`` (this step's), ``loss_ema``, ``lr`` and, when masks
            are enforced, ``sparsity`` (:func:`mask_sparsity`), at most
            ``MAX_POINTS_PER_LOOP`` times.

    Returns:
        ``{"steps", "seconds", "final_loss"}`` (plus ``"stopped_early": 1.0`` when
        ``after_step`` stopped training).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.max_train_examples:
        idx = torch.randperm(len(examples), generator=gen)[: cfg.max_train_examples].tolist()
        examples = [examples[i] for i in idx]
    total = cfg.total_steps(len(examples))
    params = (
        list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    )
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = make_scheduler(opt, schedule_total or total, cfg.warmup_ratio, schedule)
    clip_over = list(clip_params) if clip_params is not None else params
    model.train()
    step, loss_ema, start = 0, float("nan"), time.perf_counter()
    stop = False
    global _PHASE, _STEP
    _PHASE = desc
    every = max(1, math.ceil(total / MAX_POINTS_PER_LOOP))
    with tqdm(
        total=total, desc=desc, unit="step", dynamic_ncols=True, disable=not SHOW_PROGRESS
    ) as bar:
        while step < total:
            for batch in iterate_batches(
                examples, tokenizer, cfg.batch_size, max_length, device, gen, cfg.group_by_length
            ):
                loss = float(step_fn(model, batch))
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(clip_over, cfg.grad_clip)
                if after_clip is not None:
                    after_clip(step)
                lr = opt.param_groups[0]["lr"]  # the rate of this step
                opt.step()
                if before_zero_grad is not None:
                    before_zero_grad(step)
                sched.step()
                opt.zero_grad(set_to_none=True)
                if _SINK is not None:
                    _STEP += 1
                if after_step is not None:
                    stop = bool(after_step(step))
                step += 1
                loss_ema = loss if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * loss
                if _SINK is not None and (step % every == 0 or step >= total or stop):
                    _report_step(model, loss, loss_ema, lr, step, metrics)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_ema:.3f}")
                if not SHOW_PROGRESS and step % max(1, total // 10) == 0:  # bars off: log 10%s
                    log.info("%s: step %d/%d, loss %.4f, %.0f s", desc, step, total, loss_ema,
                             time.perf_counter() - start)  # fmt: skip
                if step >= total or stop:
                    break
            if stop:
                break
    model.eval()
    out = {"steps": step, "seconds": time.perf_counter() - start, "final_loss": loss_ema}
    if stop:
        out["stopped_early"] = 1.0
    return out


def _report_step(model, loss, loss_ema, lr, step, metrics) -> None:
    """The loop's own metrics of one step, plus the method's (``metrics``), to the sink."""
    values: dict[str, float | None] = {
        "loss": loss, "loss_ema": loss_ema, "lr": lr, "phase_step": step,
        "sparsity": mask_sparsity(model),
    }  # fmt: skip
    if metrics is not None:
        with torch.no_grad():
            values.update(metrics())
    report_metrics(values)


@torch.inference_mode()
def predict(
    model: nn.Module, tokenizer, texts: Sequence[str], max_length: int, device: torch.device,
    batch_size: int = 64,
) -> torch.Tensor:  # fmt: skip
    """Predicted labels for ``texts`` (model in eval mode, padding to the longest)."""
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        batch = encode(tokenizer, texts[start : start + batch_size], max_length, device)
        out.append(model(**batch).logits.argmax(-1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(
    model: nn.Module, tokenizer, examples: Sequence[Example], max_length: int,
    device: torch.device, batch_size: int = 64,
) -> float:  # fmt: skip
    """Clean accuracy on ``examples``."""
    if not examples:
        return float("nan")
    # Sorting by length makes padding-to-longest cheap; the result does not depend on order.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    texts = [examples[i][0] for i in order]
    labels = torch.tensor([examples[i][1] for i in order])
    preds = predict(model, tokenizer, texts, max_length, device, batch_size)
    return float((preds == labels).float().mean())


def holdout_split(
    examples: Sequence[Example], n_holdout: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """Carve a seeded held-out part of ``n_holdout`` examples out of a TRAINING split.

    Returns ``(rest, heldout)``; the same (examples, n_holdout, seed) always gives the same
    split. Used for checkpoint / candidate selection so the evaluation split the attacks use
    is never looked at. ``n_holdout`` is capped at a fifth of the examples (at least 1).
    """
    from benchmark.data.loading import sample_indices

    n = len(examples)
    k = max(1, min(int(n_holdout), n // 5))
    held = set(sample_indices(n, k, seed))
    rest = [examples[i] for i in range(n) if i not in held]
    return rest, [examples[i] for i in sorted(held)]
