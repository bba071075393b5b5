"""Randomized pruning mask generation and selection (Li, Gao, Lei, Xu, "Breaking through
Deterministic Barriers: Randomized Pruning Mask Generation and Selection", Findings of EMNLP
2023).

Iterative pruning with knowledge distillation from the dense model, through sparsity stages
(paper: 0.54 -> 0.83 -> 0.92 -> 0.9375; stages at or above the target are dropped and the
target is appended). First the dense model gets one distillation epoch without masks
(``dense_epochs``). Then, in each stage:
1. Mask generation per matrix: ``p_i ~ |w_i|^power`` (power 5); draw ``keep_k`` indices
   without replacement ``T = max(1, int((N - keep_k) * ratio))`` times (Gumbel top-k, exact for
   sampling without replacement) and keep the ``keep_k`` most drawn (ties: larger |w|). The
   ratio cycles through 5e-5, 1e-4, 8e-5, 3e-4 across the 8 candidates. Weights pruned in an
   earlier stage are zero, have probability 0 and stay pruned.
2. Early mask evaluation: each candidate trains one epoch from the previous phase's best
   checkpoint (weights and, with ``optimizer_state: carried``, Adam state; lr 2e-4, 10% warm-up
   then linear decay, distillation loss), is evaluated every 50 steps on a held-out part of the
   TRAINING split (seeded), and scores the mean of its last 10 evaluations.
3. The best candidate is trained again from the same checkpoint for ``stage_epochs`` (10) with
   the distillation loss, lr 5e-5, ``constant_with_warmup`` (10% warm-up; the last stage
   ``linear``), with early stopping on the held-out accuracy (patience 100 evaluations; best
   checkpoint kept, of tied evaluations the last).
Distillation loss over sentences padded to ``max_length``: MSE of all hidden states + MSE of
all attention maps + soft cross-entropy of the logits (temperature ``temperature``) averaged
over batch x classes, against the dense model as it entered ``prune``. ``deterministic=True``
is the paper's deterministic baseline: one candidate, per-matrix magnitude top-k, no early
evaluation, same training.

Official code (mexiQQ/Pruning-with-randomness @ 9c9aea5), reproduced by default:
- Stage budget 10 epochs (``mrpc/run_experiment_mrpc_random_quickcall.sh:20``), early stopping
  with patience 100 evaluations every 50 steps (``utils_randomness.py:49``, ``:146-165``).
- Schedule ``constant_with_warmup`` (script ``:25``) with 10% warm-up, ``linear`` for the last
  stage (``experiment_soups_quickcall.py:253-258``); candidates lr 2e-4 (``:191-193``).
- Batch 64 (script ``:15``), weight decay 0 (``parameters.py:111``), no gradient clipping
  (``utils_randomness.py:117-121``: backward, step, zero_grad), random batches.
- Soft cross-entropy ``(-p * log q).mean()`` over batch x classes (``utils_randomness.py:432-435``;
  ``soft_ce: sum`` sums over classes, the textbook form, C times larger).
- One dense distillation epoch before the first stage (``experiment_soups_quickcall.py:138``),
  lr 5e-5 with the run's schedule and 10% warm-up (``:119-126``), best checkpoint kept.
- ``optimizer_state: carried``: the optimiser state saved with each best checkpoint
  (``utils_randomness.py:185``) is reloaded with the weights before every candidate
  (``experiment_soups_quickcall.py:176-179``) and before the full stage (``:233-236``; its new
  scheduler restarts from the saved base lr 5e-5), so both continue the Adam moments and step
  counts of the previous phase's best checkpoint (:class:`AdamCarry`). ``fresh``: a new AdamW
  each time (the previous behaviour).
- ``distill_padding: max_length``: distillation batches padded to the task's length (SST-2: 64;
  ``data_processing.py:480-483``, ``experiment_soups_quickcall.py:321``), so the hidden and
  attention MSEs average over all positions, padding included (``utils_randomness.py:89-95``).
  ``longest``: padded to the batch's longest sentence (the previous behaviour).
- ``val_examples``: 20 x |dev| training examples kept out as ``val`` (SST-2: 17,440;
  ``experiment_soups_quickcall.py:360-363``), read per dataset from
  ``protocol.randmask_val_examples``; every evaluation uses them, training the rest. None (the
  datasets without an official rule, or the previous behaviour): ``holdout_examples`` (1,000),
  capped at a fifth. ``heldout_eval_examples`` evaluates a seeded sample of them (reduced
  budget: 256).
- ``tie_rule: last``: the checkpoint is saved whenever an evaluation equals the best after
  the early-stopping step (``utils_randomness.py:164-185``), which counts a tie as no
  improvement and stops at ``patience`` of them without saving (``:404-410``): of tied
  evaluations the last is kept, the stopping one excepted. ``first``: strict improvement only
  (the previous behaviour).

Differences from the official code (docs/methods/training_based.md, randmask):
- Selection data: the code early-stops every phase and scores the LAST stage's candidates on
  the evaluation split (``:138``, ``:217``, ``:260``); here every evaluation uses a held-out
  part of the TRAINING split (a defect not reproduced: the attacked split is never looked at).
- Precision: the code trains in fp16 mixed precision (``experiment_soups_quickcall.py:64``);
  here float32 (arithmetic, not a method behaviour).
- The code trains on TinyBERT-augmented data (``--aug_train``, script ``:13``); the augmented
  sets are not available offline, so the original training split is used.
- The three distillation terms have weight 1 (as the code); temperature 1.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.data.loading import sample_indices
from benchmark.pruners.base import Masks, PruneData, check_sparsity, keep_count, prunable_params
from benchmark.pruners.imp import copy_model, cpu_state, masked_finetune, rewind
from benchmark.pruners.magnitude import layer_topk_masks
from benchmark.training.loop import (
    Batch,
    TrainConfig,
    accuracy,
    holdout_split,
    report_metrics,
    train,
)

log = logging.getLogger(__name__)

PAPER_STAGES = (0.54, 0.83, 0.92, 0.9375)
PAPER_RATIOS = (5e-5, 1e-4, 8e-5, 3e-4)


def sample_mask(
    weight: torch.Tensor,
    keep_k: int,
    ratio: float,
    power: float = 5.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A randomized keep-mask of ``weight`` (see step 1 of the module docstring)."""
    flat = weight.detach().flatten().float()
    n = flat.numel()
    if keep_k >= n:
        return torch.ones_like(weight, dtype=torch.bool)
    if keep_k <= 0:
        return torch.zeros_like(weight, dtype=torch.bool)
    draws = max(1, int((n - keep_k) * ratio))
    logp = power * flat.abs().log()  # |w| = 0 -> -inf: never drawn
    counts = torch.zeros(n, device=flat.device)
    for _ in range(draws):
        u = torch.rand(n, generator=generator, device=flat.device).clamp_(1e-12, 1 - 1e-7)
        gumbel = -torch.log(-torch.log(u))
        counts[torch.topk(logp + gumbel, keep_k).indices] += 1
    # Most drawn first; ties between counts broken by |w| (then by position).
    by_mag = torch.sort(flat.abs(), descending=True, stable=True).indices
    order = by_mag[torch.sort(counts[by_mag], descending=True, stable=True).indices]
    mask = torch.zeros(n, dtype=torch.bool, device=flat.device)
    mask[order[:keep_k]] = True
    return mask.view_as(weight)


def distillation_loss(
    student_out, teacher_out, temperature: float = 1.0, soft_ce: str = "mean"
) -> torch.Tensor:
    """Hidden-state MSE + attention MSE + soft cross-entropy on the logits (``soft_ce``:
    ``mean`` over batch x classes, official; ``sum`` over classes, mean over the batch)."""
    hid = sum(
        F.mse_loss(s, t)
        for s, t in zip(student_out.hidden_states, teacher_out.hidden_states, strict=True)
    )
    att = sum(
        F.mse_loss(s, t)
        for s, t in zip(student_out.attentions, teacher_out.attentions, strict=True)
    )
    t_prob = F.softmax(teacher_out.logits / temperature, dim=-1)
    cross = -(t_prob * F.log_softmax(student_out.logits / temperature, dim=-1))
    if soft_ce == "mean":  # utils_randomness.py:432-435: mean over batch x classes
        soft = cross.mean()
    elif soft_ce == "sum":
        soft = cross.sum(-1).mean()
    else:
        raise ValueError(f"soft_ce must be 'mean' or 'sum', got {soft_ce!r}")
    return hid + att + soft


def pad_to_length(batch: Batch, length: int, pad_id: int, side: str = "right") -> Batch:
    """``batch`` (padded to its longest sentence) padded further to ``length`` positions:
    ``input_ids`` with ``pad_id``, every other per-token tensor (attention mask, token types)
    with 0, on the tokenizer's padding ``side``; what a tokenizer gives with
    ``padding="max_length"``. Tensors already ``length`` long are returned as they are."""
    out = {}
    for key, value in batch.items():
        extra = length - value.shape[-1] if value.dim() == 2 else 0
        if extra <= 0:
            out[key] = value
            continue
        fill = pad_id if key == "input_ids" else 0
        pad = value.new_full((value.shape[0], extra), fill)
        out[key] = torch.cat([pad, value] if side == "left" else [value, pad], dim=1)
    return out


class DistillStep:
    """A ``step_fn``: distillation loss against a frozen teacher, back-propagated."""

    def __init__(
        self, teacher: nn.Module, temperature: float = 1.0, soft_ce: str = "mean",
        pad_to: int | None = None, pad_id: int = 0, pad_side: str = "right",
    ) -> None:  # fmt: skip
        """Args: the frozen teacher, the logit temperature and the soft-CE reduction;
        ``pad_to``: pad every batch to this many positions before the forward passes (the
        official fixed-length padding; None: the batch as it comes, padded to its longest),
        with the tokenizer's ``pad_id`` and padding side."""
        self.teacher = teacher
        self.temperature = temperature
        self.soft_ce = soft_ce
        self.pad_to, self.pad_id, self.pad_side = pad_to, pad_id, pad_side

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Compute and back-propagate the distillation loss (labels are not used)."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if self.pad_to:
            inputs = pad_to_length(inputs, self.pad_to, self.pad_id, self.pad_side)
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s_out = model(**inputs, output_hidden_states=True, output_attentions=True)
        loss = distillation_loss(s_out, t_out, self.temperature, self.soft_ce)
        loss.backward()
        return loss.detach()


def _param_names(model: nn.Module) -> dict[int, str]:
    """Parameter id -> name, with a masked weight (``weight_orig`` under a pruning hook) under
    its plain name, so one parameter keeps its name across masked and unmasked phases."""
    return {id(p): n[: -len("_orig")] if n.endswith("_orig") else n
            for n, p in model.named_parameters()}  # fmt: skip


class AdamCarry:
    """Carries the optimiser's per-parameter state (Adam moments and step counts) from one
    training phase into the next, as the official code does by saving the optimiser with each
    best checkpoint and loading it with the weights (see the module docstring).

    Used as a context around one call of the shared training loop, which builds its own AdamW:
    a global optimiser step pre-hook finds that optimiser at its first step (the one whose
    parameters are all ``model``'s), loads ``state`` into it by parameter name (the loop's
    parameter order changes when masks are put on or taken off), and keeps it, so
    :meth:`snapshot` can copy its state at a best checkpoint. The learning rate and its
    schedule stay the loop's (the code sets lr 2e-4 for a candidate, and a full stage's
    scheduler restarts from the reloaded base lr 5e-5, the value the loop is given)."""

    def __init__(self, model: nn.Module, state: dict[str, dict] | None = None) -> None:
        """Args: the model being trained; the state to start from (a :meth:`snapshot`; None:
        a fresh optimiser)."""
        self.model, self.state = model, state
        self.opt: torch.optim.Optimizer | None = None
        self._handle = None

    def __enter__(self) -> AdamCarry:
        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self._handle = register_optimizer_step_pre_hook(self._first_step)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _first_step(self, opt, args, kwargs) -> None:
        if self.opt is not None:
            return
        names = _param_names(self.model)
        params = [p for group in opt.param_groups for p in group["params"]]
        if not params or any(id(p) not in names for p in params):
            return  # another optimiser
        self.opt = opt
        for group in opt.param_groups:
            # step counts where torch keeps them: on the device for fused or capturable
            # optimisers, a CPU scalar otherwise
            on_device = bool(group.get("fused") or group.get("capturable"))
            for p in group["params"]:
                saved = (self.state or {}).get(names[id(p)])
                if saved is not None:
                    opt.state[p] = {
                        k: v.to(p.device, copy=True) if k != "step" or on_device else v.clone()
                        for k, v in saved.items()
                    }  # fmt: skip

    def snapshot(self) -> dict[str, dict] | None:
        """A CPU copy of the optimiser's per-parameter state by parameter name (None before
        the first step)."""
        if self.opt is None:
            return None
        names = _param_names(self.model)
        return {names[id(p)]: {k: v.detach().cpu().clone() for k, v in st.items()}
                for p, st in self.opt.state.items() if id(p) in names}  # fmt: skip


class RandMaskPruner:
    """Randomized mask generation and selection (see the module docstring)."""

    def __init__(
        self,
        stages: Sequence[float] = PAPER_STAGES,
        num_candidates: int = 8,
        ratios: Sequence[float] = PAPER_RATIOS,
        power: float = 5.0,
        deterministic: bool = False,
        candidate_epochs: float = 1.0,
        candidate_max_steps: int | None = None,
        candidate_lr: float = 2e-4,
        candidate_schedule: str = "linear",
        eval_every: int = 50,
        eval_last: int = 10,
        dense_epochs: float = 1.0,
        dense_max_steps: int | None = None,
        stage_epochs: float = 10.0,
        stage_max_steps: int | None = None,
        stage_schedule: str = "constant_with_warmup",
        last_stage_schedule: str = "linear",
        patience: int = 100,
        lr: float = 5e-5,
        batch_size: int = 64,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.1,
        grad_clip: float | None = None,
        group_by_length: bool = False,
        temperature: float = 1.0,
        soft_ce: str = "mean",
        holdout_examples: int = 1000,
        val_examples: int | None = None,
        heldout_eval_examples: int | None = None,
        optimizer_state: str = "carried",
        distill_padding: str = "max_length",
        tie_rule: str = "last",
        max_train_examples: int | None = None,
        scope: str = "encoder_linear",
        version: int = 1,
    ) -> None:
        """Args:
        stages: intermediate sparsities (those below the target are used, then the target).
        num_candidates / ratios / power: mask generation (8; 5e-5, 1e-4, 8e-5, 3e-4; 5).
        deterministic: the magnitude baseline (one candidate, no early evaluation).
        candidate_epochs / candidate_max_steps: early-evaluation budget per candidate (1 epoch).
        candidate_lr / candidate_schedule: the candidates' optimiser (2e-4, linear).
        eval_every / eval_last: evaluate every 50 steps; score = mean of the last 10.
        dense_epochs / dense_max_steps: the initial dense distillation (1 epoch; 0: none).
        stage_epochs / stage_max_steps / patience: full stage training with early stopping
            (10 epochs, patience 100 evaluations).
        stage_schedule / last_stage_schedule: the full stages' schedule (constant_with_warmup;
            the last stage linear).
        lr / batch_size / weight_decay / warmup_ratio / grad_clip / group_by_length: the
            optimiser of the dense epoch and the full stages (5e-5, 64, 0, 0.1, none, False).
        temperature / soft_ce: distillation temperature and soft-CE reduction (``mean``).
        holdout_examples / val_examples: the held-out part of the training split that every
            evaluation uses (seeded). ``val_examples``: the official code's ``val`` split,
            that many examples kept out of training (20 x |dev|; the config reads it per
            dataset from ``protocol.randmask_val_examples``: SST-2 17,440), at most half the
            split; None: ``holdout_examples`` (capped at a fifth; the previous split).
        heldout_eval_examples: evaluate on a seeded sample of this many of the held-out
            examples (None: all of them; the reduced budget's 256 keeps evaluation cheap).
        optimizer_state: ``carried`` (official): every candidate and every full stage starts
            from the Adam moments and step counts saved with the previous phase's best
            checkpoint; ``fresh``: a new AdamW each time.
        distill_padding: ``max_length`` (official): distillation batches padded to the task's
            ``max_length``, the MSEs averaging over every position; ``longest``: padded to the
            batch's longest sentence.
        tie_rule: ``last`` (official): an evaluation equal to the best so far also replaces the
            kept checkpoint (the stopping evaluation excepted); ``first``: strict improvement.
        max_train_examples: subsample the training split (smoke runs).
        scope / version: as for every pruner.
        """
        if num_candidates < 1 or not ratios:
            raise ValueError("num_candidates must be >= 1 and ratios non-empty")
        self.stages = tuple(float(s) for s in stages)
        self.num_candidates = 1 if deterministic else int(num_candidates)
        self.ratios = tuple(float(r) for r in ratios)
        self.power = power
        self.deterministic = deterministic
        self.candidate_budget = {"epochs": candidate_epochs, "max_steps": candidate_max_steps}
        self.candidate_lr, self.candidate_schedule = candidate_lr, candidate_schedule
        self.dense_budget = {"epochs": dense_epochs, "max_steps": dense_max_steps}
        self.stage_budget = {"epochs": stage_epochs, "max_steps": stage_max_steps}
        self.stage_schedule, self.last_stage_schedule = stage_schedule, last_stage_schedule
        self.eval_every, self.eval_last, self.patience = eval_every, eval_last, patience
        self.opt = {
            "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay,
            "warmup_ratio": warmup_ratio, "grad_clip": grad_clip,
            "group_by_length": group_by_length, "max_train_examples": max_train_examples,
        }  # fmt: skip
        if soft_ce not in ("mean", "sum"):
            raise ValueError(f"soft_ce must be 'mean' or 'sum', got {soft_ce!r}")
        self.temperature, self.soft_ce = temperature, soft_ce
        self.holdout_examples = holdout_examples
        for key, count in (("val_examples", val_examples),
                           ("heldout_eval_examples", heldout_eval_examples)):  # fmt: skip
            if count is not None and int(count) < 1:
                raise ValueError(f"{key} must be a positive count or null, got {count!r}")
        self.val_examples, self.heldout_eval_examples = val_examples, heldout_eval_examples
        for key, value, allowed in (("optimizer_state", optimizer_state, ("carried", "fresh")),
                                    ("distill_padding", distill_padding, ("max_length", "longest")),
                                    ("tie_rule", tie_rule, ("last", "first"))):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
        self.optimizer_state, self.distill_padding = optimizer_state, distill_padding
        self.tie_rule = tie_rule
        self.scope = scope
        self.version = version
        self.info: dict[str, Any] = {}
        self._carried: dict[str, dict] | None = None

    def stage_targets(self, sparsity: float) -> list[float]:
        """The stages run for a target sparsity."""
        if sparsity <= 0:
            return []
        return [s for s in self.stages if s < sparsity - 1e-9] + [sparsity]

    def candidates(self, model: nn.Module, sparsity: float, gen: torch.Generator) -> list[Masks]:
        """The stage's candidate masks (per matrix, uniform sparsity)."""
        params = prunable_params(model, self.scope)
        if self.deterministic:
            return [layer_topk_masks({n: p.detach().abs() for n, p in params.items()}, sparsity)]
        out = []
        for c in range(self.num_candidates):
            ratio = self.ratios[c % len(self.ratios)]
            out.append({
                n: sample_mask(p, keep_count(p.numel(), sparsity), ratio, self.power, gen)
                for n, p in params.items()
            })  # fmt: skip
        return out

    def _evaluator(
        self, model, data, held, record: list[float], seed_state: dict | None = None,
        carry: AdamCarry | None = None,
    ):  # fmt: skip
        """An ``after_step`` that evaluates every ``eval_every`` steps and, with
        ``seed_state``, keeps the best checkpoint (with the optimiser state of ``carry``) and
        early-stops: the official ``EarlyStopping`` (``utils_randomness.py:396-414``) counts
        an evaluation that does not beat the best as bad and stops at ``patience`` of them;
        the checkpoint is saved when the evaluation equals the best after that step
        (``:164-185``), so with ``tie_rule: last`` a tie replaces it unless it stopped."""

        def keep(acc: float, step: int) -> None:
            seed_state.update(best=acc, state=cpu_state(model), step=step + 1)
            if carry is not None:
                seed_state["opt"] = carry.snapshot()

        def after_step(step: int) -> bool:
            if (step + 1) % self.eval_every:
                return False
            acc = accuracy(model, data.tokenizer, held, data.max_length, data.device)
            model.train()
            record.append(acc)
            report_metrics({"heldout_acc": acc})
            if seed_state is None:
                return False
            if acc > seed_state["best"]:
                keep(acc, step)
                seed_state["since"] = 0
                return False
            seed_state["since"] += 1
            if seed_state["since"] >= self.patience:
                return True
            if self.tie_rule == "last" and acc == seed_state["best"]:
                keep(acc, step)
            return False

        return after_step

    def _carry(self, model, state: dict | None):
        """The optimiser-state context of one training phase (``optimizer_state``)."""
        if self.optimizer_state == "fresh":
            return contextlib.nullcontext(None)
        return AdamCarry(model, state)

    def _step_fn(self, teacher, data) -> DistillStep:
        """The distillation step, padded as ``distill_padding`` says."""
        if self.distill_padding == "longest":
            return DistillStep(teacher, self.temperature, self.soft_ce)
        tok = data.tokenizer
        return DistillStep(teacher, self.temperature, self.soft_ce, pad_to=data.max_length,
                           pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
                           pad_side=getattr(tok, "padding_side", "right"))  # fmt: skip

    def selection_split(self, train, seed: int) -> tuple[list, list, list, dict[str, Any]]:
        """(training part, held-out part, the held-out examples evaluated, a summary).

        ``val_examples`` set (official, ``experiment_soups_quickcall.py:360-363``): that many
        examples, a seeded sample, leave the training split (at most half of it);
        otherwise :func:`holdout_split` with ``holdout_examples`` (the previous split)."""
        n = len(train)
        if self.val_examples is None:
            rest, held = holdout_split(train, self.holdout_examples, seed)
            rule = f"holdout_examples={self.holdout_examples} (capped at a fifth)"
        else:
            k = max(1, min(int(self.val_examples), n // 2))
            if k < int(self.val_examples):
                log.warning("randmask: val_examples=%d is more than half of the %d training "
                            "examples; %d kept out", self.val_examples, n, k)  # fmt: skip
            chosen = set(sample_indices(n, k, seed))
            rest = [train[i] for i in range(n) if i not in chosen]
            held = [train[i] for i in sorted(chosen)]
            rule = f"val_examples={self.val_examples} (official: 20 x |dev|)"
        evaluated = held
        m = self.heldout_eval_examples
        if m is not None and int(m) < len(held):
            evaluated = [held[i] for i in sample_indices(len(held), int(m), seed)]
        summary = {"from": "train", "rule": rule, "n_heldout": len(held),
                   "n_evaluated": len(evaluated), "n_train": len(rest), "seed": seed}  # fmt: skip
        return rest, held, evaluated, summary

    def select_candidate(self, scores: Sequence[float]) -> int:
        """Index of the candidate with the best held-out score (first on ties)."""
        return max(range(len(scores)), key=lambda c: scores[c]) if scores else 0

    def run_stage(
        self, model, data, sparsity, teacher, rest, held, gen, last: bool = False
    ) -> tuple[Masks, dict]:
        """One stage: candidates, early evaluation, full training with early stopping."""
        base, base_opt = cpu_state(model), self._carried
        cands = self.candidates(model, sparsity, gen)
        step_fn = self._step_fn(teacher, data)
        scores: list[float] = []
        if len(cands) > 1:
            for c, masks in enumerate(cands):
                rewind(model, base)
                evals: list[float] = []
                cfg = TrainConfig(seed=data.seed + c, **self.candidate_budget,
                                  **{**self.opt, "lr": self.candidate_lr})  # fmt: skip
                with self._carry(model, base_opt):  # :176-179, lr 2e-4 (:191-193)
                    masked_finetune(model, data, masks, cfg, step_fn, f"candidate {c}", rest,
                                    after_step=self._evaluator(model, data, held, evals),
                                    schedule=self.candidate_schedule)  # fmt: skip
                if not evals:  # budget shorter than eval_every: evaluate once at the end
                    evals.append(
                        accuracy(model, data.tokenizer, held, data.max_length, data.device)
                    )
                scores.append(sum(evals[-self.eval_last :]) / len(evals[-self.eval_last :]))
        best = self.select_candidate(scores)
        rewind(model, base)
        es: dict[str, Any] = {"best": -math.inf, "state": None, "since": 0, "step": None}
        cfg = TrainConfig(seed=data.seed, **self.stage_budget, **self.opt)
        evals = []
        schedule = self.last_stage_schedule if last else self.stage_schedule
        with self._carry(model, base_opt) as carry:  # :233-236
            stats = masked_finetune(
                model, data, cands[best], cfg, step_fn, f"stage {sparsity:g}", rest,
                after_step=self._evaluator(model, data, held, evals, es, carry),
                schedule=schedule,
            )  # fmt: skip
        self._keep_best(model, es, carry)
        info = {
            "sparsity": sparsity, "candidate_scores": scores, "chosen": best,
            "ratio": None if self.deterministic else self.ratios[best % len(self.ratios)],
            "train_steps": stats["steps"], "best_step": es["step"], "schedule": schedule,
            "best_heldout_acc": None if es["state"] is None else es["best"],
        }  # fmt: skip
        return cands[best], info

    def _keep_best(self, model, es: dict[str, Any], carry: AdamCarry | None) -> None:
        """Back to the phase's best checkpoint (when one was kept), and the optimiser state
        saved with it becomes the next phase's start (without a kept checkpoint the weights
        stay the last ones, and so does the optimiser state)."""
        if es["state"] is not None:
            rewind(model, es["state"])
        if carry is not None:
            self._carried = es.get("opt") if es["state"] is not None else carry.snapshot()

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Run the stages; the model ends with the last stage's best weights."""
        sparsity = check_sparsity(sparsity)
        rest, _, held, split = self.selection_split(data.train, data.seed)
        self._carried = None  # the optimiser state the next phase starts from (carried)
        teacher = copy_model(model)
        gen = torch.Generator(device=data.device).manual_seed(data.seed)
        masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in
                 prunable_params(model, self.scope).items()}  # fmt: skip
        dense_info = self.distill_dense(model, data, teacher, rest, held)
        stages = []
        targets = self.stage_targets(sparsity)
        for i, s in enumerate(targets):
            last = i == len(targets) - 1
            masks, info = self.run_stage(model, data, s, teacher, rest, held, gen, last)
            stages.append(info)
            log.info("randmask stage %.4f: candidate %d chosen (%s)", s, info["chosen"],
                     info["candidate_scores"])  # fmt: skip
        self.info = {
            "stages": stages, "deterministic": self.deterministic,
            "selection_split": split, "optimizer_state": self.optimizer_state,
            "distill_padding": self.distill_padding, "tie_rule": self.tie_rule,
            "teacher": "dense model as given", "checkpoint": "best held-out accuracy per stage",
            "dense_distillation": dense_info,
        }  # fmt: skip
        return masks

    def distill_dense(self, model, data, teacher, rest, held) -> dict[str, Any] | None:
        """The official code's dense distillation epoch before the first stage
        (``experiment_soups_quickcall.py:138``): no masks, early stopping, best kept."""
        if not (self.dense_budget["epochs"] or self.dense_budget["max_steps"]):
            return None
        es: dict[str, Any] = {"best": -math.inf, "state": None, "since": 0, "step": None}
        cfg = TrainConfig(seed=data.seed, **self.dense_budget, **self.opt)
        evals: list[float] = []
        with self._carry(model, None) as carry:  # a fresh optimiser (:112)
            stats = train(
                model, data.tokenizer, rest, cfg, data.max_length, data.device,
                step_fn=self._step_fn(teacher, data),
                after_step=self._evaluator(model, data, held, evals, es, carry),
                schedule=self.stage_schedule, desc="randmask dense distillation",
            )  # fmt: skip
        self._keep_best(model, es, carry)
        return {"train_steps": stats["steps"], "best_step": es["step"],
                "best_heldout_acc": None if es["state"] is None else es["best"]}  # fmt: skip
