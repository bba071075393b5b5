"""Iterative magnitude pruning (IMP) and the lottery-ticket variant with rewinding (LTH).

IMP: Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
NeurIPS 2015; LTH for BERT: Chen et al., "The Lottery Ticket Hypothesis for Pre-trained BERT
Networks", NeurIPS 2020 (IMP with rewinding to the pre-trained weights). Both are baselines of
RobustT (Zheng et al., ACL 2022) and AKR (Li et al., EMNLP 2023).

Starting from the dense fine-tuned model, each round prunes by magnitude (globally over the
scope by default) and then fine-tunes with the masks enforced. LTH (``rewind=True``) loads the
PRE-TRAINED weights (``PruneData.pretrained``) before every round's fine-tune; IMP continues
from the current weights.

Official code (VITA-Group/BERT-Tickets @ 4d8e035, ``LT_glue.py``), reproduced by default:
- Schedule ``round_schedule: linear``: round k (0-based) removes 1/(10 - k) of the remaining
  weights (``:371``), i.e. the sparsity after round k is (k + 1) / 10 of the ORIGINAL weights:
  10%, 20%, ..., 5 rounds to 50% (``rate_per_round`` 0.1 is the step). The last round is clipped
  to the target. ``round_schedule: geometric`` is the classic 1 - (1 - rate)^r (7 rounds to 50%).
- Every round gets a fresh AdamW and a fresh linear decay with 0 warm-up (``:216-220``,
  ``:387-401``) whose length is the WHOLE run's steps (``lr_schedule: whole_run``): the code's
  ``t_total`` is all epochs (``:205``) and every round's new scheduler gets that same
  ``t_total`` (``:398-401``); the README's command trains 30 epochs and prunes every 3
  (``README.md:77``, ``:80``), and the run stops at its 10th pruning (``:408-410``), so each
  round is 1/10 of the run and ends at 0.9 lr whatever the target. Here the run is the
  ceil(1 / rate_per_round) rounds the linear schedule takes to remove every weight (10 at
  0.1, whatever ``round_schedule``): each round's decay lasts that many rounds' steps and ends
  at lr * (1 - 1 / ceil(1 / rate_per_round)). ``lr_schedule: to_target`` (the previous
  default) decays over the R rounds run to the target instead (0.8 lr at the end of every
  round at 50%, R = 5); ``per_round`` is one warm-up (``warmup_ratio``) + decay to 0 per round.
- Weight decay 0 (``:656``), gradient clipping 1.0 (``:325``, ``:658``), random batches.
- The pooler is pruned with the encoder (``:126``; scope ``encoder_linear+pooler``).
- LTH rewinds only the keys of the encoder body (``'bert' in key``, ``:180``): the classifier
  head keeps its trained weights across rounds (``reset_head: false``). ``reset_head: true``
  loads the pre-trained model's fresh head too (the previous behaviour of this module).

Options: ``adversarial=True`` replaces cross-entropy by FreeLB in every round's fine-tune
(configs ``imp_freelb`` / ``lth_freelb``).

Differences from the official code (docs/methods/training_based.md, IMP / LTH):
- It trains from the pre-trained model and prunes every ``save_steps`` inside one run; here
  round 0's training is the dense fine-tune the model arrives with.
- Weight decay, when set, applies to all parameters (the code exempts biases and LayerNorm;
  with its default 0 this does not matter). The last checkpoint of each round is kept.

The module also holds helpers shared by the training-based pruners (global top-k masks,
rewinding, masked fine-tuning).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from benchmark.pruners.base import (
    Masks,
    PruneData,
    apply_masks,
    check_sparsity,
    full_masks,
    prunable_params,
    remove_mask_hooks,
)
from benchmark.pruners.magnitude import global_topk_masks, layer_topk_masks
from benchmark.training.freelb import FreeLBStep
from benchmark.training.loop import Batch, TrainConfig, default_step, train

log = logging.getLogger(__name__)

# lengths of each IMP round's learning-rate decay (see IterativeMagnitudePruner.schedule_rounds)
LR_SCHEDULES = ("whole_run", "to_target", "per_round")

StepFn = Callable[[nn.Module, Batch], torch.Tensor]


def magnitude_scores(model: nn.Module, scope: str, masks: Masks | None = None) -> dict:
    """|w| of every prunable weight; weights already pruned by ``masks`` score -1 (never kept
    again while unpruned weights remain, so masks are nested)."""
    out = {}
    for name, p in prunable_params(model, scope).items():
        s = p.detach().abs().float()
        if masks is not None:
            s = torch.where(masks[name].to(s.device), s, torch.full_like(s, -1.0))
        out[name] = s
    return out


def pretrained_state(data: PruneData) -> dict[str, torch.Tensor]:
    """The PRE-TRAINED model's state dict (CPU copy), for rewinding."""
    if data.pretrained is None:
        raise ValueError(
            "this pruner rewinds to the pre-trained model: PruneData.pretrained is None"
        )
    net = data.pretrained()
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def rewind(model: nn.Module, state: dict[str, torch.Tensor], keep_head: bool = False) -> None:
    """Load ``state`` (a plain state dict) into ``model``; mask hooks must be removed first.

    ``keep_head``: load only the base model's keys (``model.base_model_prefix``, e.g.
    ``bert.``), so the classifier keeps its current weights (BERT-Tickets ``LT_glue.py:180``).
    """
    if keep_head:
        prefix = f"{getattr(model, 'base_model_prefix', 'bert')}."
        state = {k: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise RuntimeError(f"rewind: no key starts with {prefix!r}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if keep_head:
        missing = [k for k in missing if k.startswith(prefix)]
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise RuntimeError(f"rewind: missing {missing[:5]}, unexpected {unexpected[:5]}")


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state dict, with active pruning masks folded into the weights
    (``x_orig * x_mask`` saved as ``x``), so it loads into the unmasked model."""
    state = model.state_dict()
    out = {}
    for k, v in state.items():
        if k.endswith("_mask") and k[: -len("_mask")] + "_orig" in state:
            continue
        if k.endswith("_orig") and k[: -len("_orig")] + "_mask" in state:
            base = k[: -len("_orig")]
            out[base] = (v * state[base + "_mask"]).detach().cpu().clone()
        else:
            out[k] = v.detach().cpu().clone()
    return out


def freelb_or_ce(
    adversarial: bool, adv_steps: int, adv_lr: float, adv_init_mag: float, adv_norm: str
) -> StepFn:
    """FreeLB step with the given settings, or plain cross-entropy."""
    if not adversarial:
        return default_step
    return FreeLBStep(adv_steps=adv_steps, adv_lr=adv_lr, init_mag=adv_init_mag, norm=adv_norm)


def masked_finetune(
    model: nn.Module,
    data: PruneData,
    masks: Masks,
    cfg: TrainConfig,
    step_fn: StepFn = default_step,
    desc: str = "masked fine-tune",
    examples: Sequence | None = None,
    **train_kwargs: Any,
) -> dict[str, float]:
    """Fine-tune with ``masks`` enforced by pre-hooks, then fold them into the weights."""
    apply_masks(model, masks, permanent=False)
    try:
        stats = train(
            model, data.tokenizer, data.train if examples is None else examples, cfg,
            data.max_length, data.device, step_fn=step_fn, desc=desc, **train_kwargs,
        )  # fmt: skip
    finally:
        remove_mask_hooks(model)
    return stats


def imp_schedule(target: float, rate: float, mode: str = "linear") -> list[float]:
    """Sparsities of the IMP rounds up to the target (last one clipped to it).

    ``linear`` (BERT-Tickets ``LT_glue.py:371``, removing 1/(10 - k) of the remaining weights
    with rate 0.1): rate, 2 rate, 3 rate, ... of the original weights.
    ``geometric``: 1 - (1 - rate)^r (the same fraction of the remaining weights every round).
    """
    if not 0 < rate < 1:
        raise ValueError(f"rate_per_round must be in (0, 1), got {rate}")
    if mode not in ("linear", "geometric"):
        raise ValueError(f"round_schedule must be 'linear' or 'geometric', got {mode!r}")
    if target <= 0:
        return []
    if mode == "linear":
        rounds = max(1, math.ceil(target / rate - 1e-9))
        return [min(target, rate * r) for r in range(1, rounds)] + [target]
    rounds = max(1, math.ceil(math.log(1 - target) / math.log(1 - rate) - 1e-9))
    return [min(target, 1 - (1 - rate) ** r) for r in range(1, rounds)] + [target]


class IterativeMagnitudePruner:
    """IMP / LTH with optional FreeLB fine-tuning (see the module docstring)."""

    def __init__(
        self,
        rewind: bool = False,
        rate_per_round: float = 0.1,
        round_schedule: str = "linear",
        lr_schedule: str = "whole_run",
        reset_head: bool = False,
        granularity: str = "global",
        epochs: float = 3.0,
        max_steps: int | None = None,
        lr: float = 2e-5,
        batch_size: int = 32,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.0,
        grad_clip: float | None = 1.0,
        group_by_length: bool = False,
        max_train_examples: int | None = None,
        adversarial: bool = False,
        adv_steps: int = 5,
        adv_lr: float = 0.03,
        adv_init_mag: float = 0.05,
        adv_norm: str = "example",
        scope: str = "encoder_linear+pooler",
        version: int = 1,
    ) -> None:
        """Args:
        rewind: LTH (rewind to the pre-trained weights before each round's fine-tune) or IMP.
        rate_per_round: the step of the round schedule (0.1).
        round_schedule: ``linear`` (official: 10%, 20%, ... of the original) or ``geometric``.
        lr_schedule: the length of each round's fresh linear decay: ``whole_run`` (official:
            the steps of ceil(1 / rate_per_round) rounds, ``LT_glue.py:205``, ``:398-401``),
            ``to_target`` (the steps of the rounds run to the target; the previous default)
            or ``per_round`` (warm-up ``warmup_ratio`` and decay to 0 in each round).
        reset_head: LTH only; also rewind the classifier head (False: keep it, official).
        granularity: ``global`` (one threshold, Chen et al.) or ``layer``.
        epochs / max_steps / lr / batch_size / weight_decay / warmup_ratio / grad_clip /
            group_by_length / max_train_examples: the fine-tuning budget of EACH round.
        adversarial: fine-tune every round with FreeLB instead of cross-entropy.
        adv_steps / adv_lr / adv_init_mag / adv_norm: FreeLB settings (RobustT's by default).
        scope / version: as for every pruner.
        """
        if granularity not in ("global", "layer"):
            raise ValueError(f"granularity must be 'global' or 'layer', got {granularity!r}")
        imp_schedule(0.5, rate_per_round, round_schedule)  # validates rate and mode
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.rewind = rewind
        self.rate_per_round = rate_per_round
        self.round_schedule, self.lr_schedule = round_schedule, lr_schedule
        self.reset_head = bool(reset_head)
        self.granularity = granularity
        self.train_kwargs = {
            "epochs": epochs, "max_steps": max_steps, "lr": lr, "batch_size": batch_size,
            "weight_decay": weight_decay, "warmup_ratio": warmup_ratio, "grad_clip": grad_clip,
            "group_by_length": group_by_length, "max_train_examples": max_train_examples,
        }  # fmt: skip
        self.step_fn = freelb_or_ce(adversarial, adv_steps, adv_lr, adv_init_mag, adv_norm)
        self.adversarial = adversarial
        self.scope = scope
        self.version = version
        self.info: dict[str, Any] = {}

    def schedule_rounds(self, n_rounds: int) -> int | None:
        """How many rounds' steps each round's linear decay lasts (None: this round's own).

        ``whole_run``: the code's run, ceil(1 / rate_per_round) rounds (``t_total`` of all
        epochs given to every round's scheduler, ``LT_glue.py:205``, ``:398-401``; the README's
        30 epochs pruned every 3 = 10 rounds, ``README.md:77``, ``:80``). ``to_target``: the
        ``n_rounds`` run to the target. ``per_round``: None (decay to 0 within the round).
        """
        if self.lr_schedule == "whole_run":
            return math.ceil(1.0 / self.rate_per_round - 1e-9)
        if self.lr_schedule == "to_target":
            return n_rounds
        return None

    def find_masks(
        self, model: nn.Module, data: PruneData, sparsity: float, rewind_state: dict | None
    ) -> tuple[Masks, list[dict[str, Any]]]:
        """Run the IMP rounds; return the final masks and per-round statistics."""
        select = global_topk_masks if self.granularity == "global" else layer_topk_masks
        masks = full_masks(model, self.scope)
        schedule = imp_schedule(sparsity, self.rate_per_round, self.round_schedule)
        rounds = []
        for r, s in enumerate(schedule):
            masks = select(magnitude_scores(model, self.scope, masks), s)
            if rewind_state is not None:
                rewind(model, rewind_state, keep_head=not self.reset_head)
            cfg = TrainConfig(seed=data.seed + r, **self.train_kwargs)
            kw: dict[str, Any] = {}
            rounds_long = self.schedule_rounds(len(schedule))
            if rounds_long is not None:  # one round's steps x the rounds the decay lasts
                kw["schedule_total"] = rounds_long * cfg.total_steps(len(data.train))
            stats = masked_finetune(model, data, masks, cfg, self.step_fn, f"imp round {r + 1}",
                                    **kw)  # fmt: skip
            rounds.append({"sparsity": s, **stats})
            log.info("IMP round %d: sparsity %.4f, loss %.4f", r + 1, s, stats["final_loss"])
        return masks, rounds

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Return the IMP / LTH masks; the model ends with the last round's weights."""
        sparsity = check_sparsity(sparsity)
        state = pretrained_state(data) if self.rewind else None
        masks, rounds = self.find_masks(model, data, sparsity, state)
        self.info = {
            "method": "lth" if self.rewind else "imp", "rounds": rounds,
            "rewound_to": "pretrained" if self.rewind else None,
            "fine_tune": "freelb" if self.adversarial else "cross_entropy",
            "checkpoint": "last", "granularity": self.granularity,
            "round_schedule": self.round_schedule, "lr_schedule": self.lr_schedule,
            "head": None if not self.rewind else ("reset" if self.reset_head else "kept"),
        }  # fmt: skip
        return masks


def copy_model(model: nn.Module) -> nn.Module:
    """A frozen deep copy in eval mode (teachers)."""
    teacher = copy.deepcopy(model)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
