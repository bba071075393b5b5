"""SEVEN: pruning transformers by preserving sentinels (Xiao et al., IJCNN 2024).

Prunes during fine-tuning, starting from the PRE-TRAINED model (the dense fine-tuned model
handed to ``prune`` is only overwritten: SEVEN never sees it). After every optimiser step in
the pruning window ``[window_start, window_start + window_length - 1)`` (official; ``exact``:
to ``window_start + window_length``), with g the minibatch gradient of each prunable weight
(raw: no clipping, as the official code) and i the index of the update inside the window:

    m <- a1 m + (1 - a1)|g|          v <- a2 v + (1 - a2) g^2
    m_hat = m / (1 - a1^(i+1))       v_hat = sqrt(v / (1 - a2^(i+1))) + 1e-9
    I <- I + |W * g * m_hat / v_hat|   (cumulative "symbolic descent" score)

Pruned weights get score 0. One global top-k over the scope keeps
``remain(i) = keep + (1 - keep)(1 - (i+1)/window_length)^3`` of the weights (cubic schedule);
training continues with the final masks until the budget ends. Defaults: a1 = 0.8, a2 = 0.8,
lr 2e-5, batch 32, 10 epochs, AdamW without weight decay; SST-2 window start 1000, length 4000
(the official code hard-codes per-dataset windows; here they are config values).

Official code (xiaojinying/SEVEN @ 85e5903), reproduced by default:
- No learning-rate scheduler is built (``train.py:29-32`` builds only the optimizer and
  passes no ``lr_scheduler``, default None at ``strategies/pruner.py:24,30``; ``utils.py:229-230``
  steps one only if it exists): constant lr (``schedule: constant``; ``linear`` is an option).
- No gradient clipping (``utils.py:227-249``: backward, then step): the scores see the raw
  minibatch gradients (``grad_clip: null``).
- Every ``nn.Linear`` except the classifier is pruned (``pruning/abstract.py:71-76``), the
  pooler included: scope ``encoder_linear+pooler``.
- ``alpha_2 = 0.8`` as in the README's command (``readme.md:44``; the argparse default is 0.9).
- Bias correction: moments and scores reset at the window's first update
  (``strategies/pruner.py:64-71``), exponent = the update's index in the window + 1
  (``:42-43``, ``:78``), as :class:`SevenScore`. No warm-up (no scheduler at all).
- Random batches (no length grouping).
- Classifier head (``head: official``): the code's model is ``BertModel`` plus its own
  ``nn.Linear(768, C)`` on ``pooler_output`` (``model.py:39``, ``:52``), PyTorch's default
  initialisation, no dropout before it. Here the model's ``classifier`` linear is re-drawn
  after the rewind as ``nn.Linear`` initialises itself (weight and bias uniform in
  +-1/sqrt(hidden)) from a CPU generator seeded with the job seed (weight, then bias), and
  the dropout on the pooled output is taken out for the fine-tune (put back afterwards: the
  module tree, the state dict and the pruned cache are unchanged; in evaluation it does
  nothing anyway). Defined for a pooler -> ``dropout`` -> linear ``classifier`` head (BERT,
  MiniLM); other heads (DistilBERT, RoBERTa, ELECTRA, DeBERTa) fail with a message naming
  ``pruner.head``. ``head: hf`` keeps the Hugging Face head (dropout ``hidden_dropout_prob``,
  weight N(0, 0.02), bias 0): the previous behaviour.
- Window length (``window_updates: official``): the code updates scores and masks while
  ``iter < t_i + iter_num - 1`` (``utils.py:214``, ``:248``): ``window_length - 1`` updates
  (3,999 on SST-2) with ``window_length`` as the cubic schedule's denominator
  (``strategies/pruner.py:79``). The last update keeps keep + (1 - keep)/window_length^3 of
  the weights and the masks never change again, so the final sparsity is below the target by
  (1 - keep)/window_length^3 of the scope, rounded to whole weights (none for bert-base at
  4,000; for MiniLM-L6 at 200, ``budget=reduced``, none at 30% and one at 50%);
  ``sparsity_actual`` is measured on those masks, as the code logs its "true remain ratio"
  (``utils.py:252-258``).
  ``window_updates: exact`` makes ``window_length`` updates ending exactly at the target:
  the previous behaviour.

Differences from the official code (docs/methods/training_based.md, SEVEN):
- Masks are enforced by ``torch.nn.utils.prune`` pre-hooks (so pruned weights get zero
  gradient) instead of zeroing weights after each step; the score of a pruned weight is
  therefore 0 anyway, and selection never re-admits a pruned weight (masks shrink
  monotonically; the official code could in principle re-grow a weight with a tied score).
- Keep count: the code keeps ``int(remain * N)`` weights (floor, ``strategies/utils.py:29``)
  plus any tied with the threshold (``:49``); here ``N - round(N (1 - remain))`` (the
  project's ``base.keep_count``), ties broken by position: at most one weight apart,
  ties aside.
- Only the per-dataset window values for SST-2 are known to us; other datasets must set
  ``window_start`` / ``window_length`` (the run fails loudly if the window does not fit).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from benchmark.errors import UserError
from benchmark.models.structure import prunable_linears
from benchmark.pruners.base import (
    Masks,
    PruneData,
    apply_masks,
    check_sparsity,
    full_masks,
    prunable_params,
    remove_mask_hooks,
)
from benchmark.pruners.imp import pretrained_state, rewind
from benchmark.pruners.magnitude import global_topk_masks
from benchmark.training.loop import TrainConfig, train

log = logging.getLogger(__name__)


def cubic_remain(i: int, length: int, keep: float) -> float:
    """Fraction of weights kept after window update ``i`` (0-based); ``length`` is the window
    length, the schedule's denominator (the official code makes ``length - 1`` updates, so its
    last is ``i = length - 2``; ``window_updates: exact`` makes ``length``)."""
    frac = min(1.0, (i + 1) / length)
    return keep + (1 - keep) * (1 - frac) ** 3


class SevenScore:
    """The cumulative SEVEN importance with its two gradient moments, per weight tensor."""

    def __init__(self, shapes: dict[str, torch.Size], device, beta1: float, beta2: float) -> None:
        """Args: weight shapes by name, device, and the moment coefficients a1, a2."""
        self.beta1, self.beta2 = beta1, beta2
        self.m = {n: torch.zeros(s, device=device) for n, s in shapes.items()}
        self.v = {n: torch.zeros(s, device=device) for n, s in shapes.items()}
        self.score = {n: torch.zeros(s, device=device) for n, s in shapes.items()}
        self.updates = 0

    @torch.no_grad()
    def update(
        self, weights: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], masks: Masks
    ) -> None:
        """One window update with the current weights and minibatch gradients."""
        t = self.updates + 1
        c1, c2 = 1 - self.beta1**t, 1 - self.beta2**t
        for n, g in grads.items():
            g = g.float()
            self.m[n].mul_(self.beta1).add_(g.abs(), alpha=1 - self.beta1)
            self.v[n].mul_(self.beta2).add_(g * g, alpha=1 - self.beta2)
            v_hat = (self.v[n] / c2).sqrt() + 1e-9
            self.score[n].add_((weights[n].float() * g * (self.m[n] / c1) / v_hat).abs())
            self.score[n].mul_(masks[n].to(self.score[n].dtype))  # pruned weights score 0
        self.updates = t

    def selection_scores(self, masks: Masks) -> dict[str, torch.Tensor]:
        """Scores for top-k: pruned weights at -1 so they are never chosen again."""
        return {
            n: torch.where(masks[n], s, torch.full_like(s, -1.0)) for n, s in self.score.items()
        }


HEADS = ("official", "hf")
WINDOW_UPDATES = ("official", "exact")
# Model families whose Hugging Face classifier is not pooler -> dropout -> linear (no pooler on
# the base model): the official head is not defined for them.
NO_POOLER_HEAD = ("distilbert", "roberta", "xlm-roberta", "electra", "deberta-v2")


def _head_error(what: str) -> UserError:
    return UserError(
        f"pruner.head=official (SEVEN's own linear on the pooler output, model.py:39, :52) "
        f"needs a BERT-style head: the base model's pooler, then `dropout` and a linear "
        f"`classifier`; {what}. Set pruner.head=hf to train the model's own head"
    )


def _head_parts(model: nn.Module) -> tuple[nn.Linear, nn.Dropout]:
    """The classifier linear and the dropout before it, or :class:`UserError` naming
    ``pruner.head`` when the model's head is not pooler -> ``dropout`` -> linear ``classifier``."""
    base = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    classifier, dropout = getattr(model, "classifier", None), getattr(model, "dropout", None)
    if getattr(base, "pooler", None) is None:
        raise _head_error(f"{type(model).__name__} has no pooler on its base model")
    if not isinstance(classifier, nn.Linear) or not isinstance(dropout, nn.Dropout):
        raise _head_error(f"{type(model).__name__}'s head is not dropout -> linear classifier")
    return classifier, dropout


def official_head(model: nn.Module, seed: int) -> Callable[[], None]:
    """Give ``model`` the official code's classifier head; returns the function that puts the
    pooled-output dropout back (call it after the fine-tune).

    The ``classifier`` linear is re-drawn as ``nn.Linear.reset_parameters`` draws it
    (kaiming-uniform with a = sqrt(5), i.e. weight and bias uniform in +-1/sqrt(in_features)),
    weight then bias, from a CPU generator seeded with ``seed``, then copied to the model's
    device; ``model.dropout`` (the dropout between pooler and classifier) is replaced by an
    identity. Raises :class:`UserError` naming ``pruner.head`` for another head layout.
    """
    classifier, dropout = _head_parts(model)
    gen = torch.Generator().manual_seed(int(seed))
    weight = torch.empty(classifier.weight.shape, dtype=classifier.weight.dtype)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    bound = 1 / math.sqrt(classifier.in_features)
    with torch.no_grad():
        classifier.weight.copy_(weight)
        if classifier.bias is not None:
            bias = torch.empty(classifier.bias.shape, dtype=classifier.bias.dtype)
            classifier.bias.copy_(bias.uniform_(-bound, bound, generator=gen))
    model.dropout = nn.Identity()

    def restore() -> None:
        model.dropout = dropout

    return restore


class SevenPruner:
    """SEVEN (see the module docstring for the procedure and every deviation)."""

    @staticmethod
    def check_model_type(kind: str, cfg: Mapping[str, Any] | None = None) -> None:
        """Refuse ``head: official`` on a family without BERT's pooler head (one line). The
        config check (:func:`benchmark.jobs.validate.check_pruner_model`) calls it before any
        work; :meth:`prune` checks the model itself (:func:`_head_parts`)."""
        if (cfg or {}).get("head", "official") == "official" and kind in NO_POOLER_HEAD:
            raise _head_error(f"model type {kind!r} has none")

    def __init__(
        self,
        window_start: int = 1000,
        window_length: int = 4000,
        beta1: float = 0.8,
        beta2: float = 0.8,
        epochs: float = 10.0,
        max_steps: int | None = None,
        lr: float = 2e-5,
        batch_size: int = 32,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.0,
        schedule: str = "constant",
        grad_clip: float | None = None,
        group_by_length: bool = False,
        max_train_examples: int | None = None,
        scope: str = "encoder_linear+pooler",
        head: str = "official",
        window_updates: str = "official",
        version: int = 1,
    ) -> None:
        """Args:
        window_start / window_length: the pruning window in optimiser steps (SST-2: 1000/4000).
        beta1 / beta2: the moment coefficients a1, a2 (0.8 / 0.8, the official command).
        epochs / max_steps / lr / batch_size / weight_decay / warmup_ratio / grad_clip /
            group_by_length / max_train_examples: the fine-tuning budget (TrainConfig fields).
        schedule: learning-rate schedule (``constant``: official; see ``make_scheduler``).
        head: ``official`` (the code's own linear on the pooler output, default init, no
            dropout: :func:`official_head`) or ``hf`` (the model's Hugging Face head).
        window_updates: ``official`` (``window_length - 1`` updates, ``utils.py:248``) or
            ``exact`` (``window_length`` updates, ending exactly at the target).
        scope / version: as for every pruner.
        """
        if head not in HEADS:
            raise UserError(f"pruner.head must be one of {HEADS}, got {head!r}")
        if window_updates not in WINDOW_UPDATES:
            raise UserError(
                f"pruner.window_updates must be one of {WINDOW_UPDATES}, got {window_updates!r}"
            )
        if window_start < 0 or window_length < (2 if window_updates == "official" else 1):
            raise ValueError(
                "window_start must be >= 0 and window_length >= 1 (>= 2 with "
                "window_updates=official, which makes window_length - 1 updates)"
            )
        self.head, self.window_updates = head, window_updates
        self.window_start, self.window_length = window_start, window_length
        self.beta1, self.beta2 = beta1, beta2
        self.train_kwargs = {
            "epochs": epochs, "max_steps": max_steps, "lr": lr, "batch_size": batch_size,
            "weight_decay": weight_decay, "warmup_ratio": warmup_ratio, "grad_clip": grad_clip,
            "group_by_length": group_by_length, "max_train_examples": max_train_examples,
        }  # fmt: skip
        self.schedule = schedule
        self.scope = scope
        self.version = version
        self.info: dict[str, Any] = {}

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Rewind to the pre-trained model, fine-tune and prune inside the window."""
        sparsity = check_sparsity(sparsity)
        cfg = TrainConfig(seed=data.seed, **self.train_kwargs)
        total = cfg.total_steps(len(data.train))
        # official: updates while step < window_start + window_length - 1 (utils.py:248)
        updates = self.window_length - (1 if self.window_updates == "official" else 0)
        end = self.window_start + updates
        if end > total:
            raise UserError(
                f"SEVEN pruning window ends at step {end} but training has {total} steps; "
                "set pruner.window_start / pruner.window_length (per-dataset values) or a "
                "larger pruner.epochs"
            )
        if self.head == "official":
            _head_parts(model)  # before the pre-trained model loads: the same architecture
        rewind(model, pretrained_state(data))
        restore_head = official_head(model, data.seed) if self.head == "official" else None
        masks = full_masks(model, self.scope)
        apply_masks(model, masks, permanent=False)
        linears = {f"{n}.weight": m for n, m in prunable_linears(model, self.scope).items()}
        params = prunable_params(model, self.scope)  # weight_orig under the hooks
        scorer = SevenScore({n: p.shape for n, p in params.items()}, data.device, self.beta1,
                            self.beta2)  # fmt: skip
        history: list[dict[str, float]] = []

        def before_zero_grad(step: int) -> None:
            if not self.window_start <= step < end:
                return
            grads = {n: p.grad for n, p in params.items() if p.grad is not None}
            scorer.update({n: p.detach() for n, p in params.items()}, grads, masks)
            i = step - self.window_start
            remain = cubic_remain(i, self.window_length, 1 - sparsity)
            new = global_topk_masks(scorer.selection_scores(masks), 1 - remain)
            for n, mask in new.items():
                masks[n] = mask
                linears[n].weight_mask.copy_(mask.to(linears[n].weight_mask.dtype))
            if i % max(1, self.window_length // 20) == 0 or step == end - 1:
                history.append({"step": step, "remain": remain})

        try:
            stats = train(
                model, data.tokenizer, data.train, cfg, data.max_length, data.device,
                before_zero_grad=before_zero_grad, schedule=self.schedule, desc="seven",
            )  # fmt: skip
        finally:
            remove_mask_hooks(model)
            if restore_head is not None:
                restore_head()
        self.info = {
            "started_from": "pretrained", "window": [self.window_start, end],
            "window_updates": updates, "head": self.head,
            "schedule": history, "checkpoint": "last", **stats,
        }  # fmt: skip
        return {n: m.clone() for n, m in masks.items()}
