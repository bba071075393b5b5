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
2. Early mask evaluation: each candidate trains one epoch from the previous stage's weights
   (lr 2e-4, 10% warm-up then linear decay, distillation loss), is evaluated every 50 steps on
   a held-out part of the TRAINING split (seeded), and scores the mean of its last 10
   evaluations.
3. The best candidate is trained again from the previous stage's weights for ``stage_epochs``
   (10) with the distillation loss, lr 5e-5, ``constant_with_warmup`` (10% warm-up; the last
   stage ``linear``), with early stopping on the held-out accuracy (patience 100
   evaluations; best checkpoint kept).
Distillation loss: MSE of all hidden states + MSE of all attention maps + soft cross-entropy
of the logits (temperature ``temperature``) averaged over batch x classes, against the dense
model as it entered ``prune``. ``deterministic=True`` is the paper's deterministic baseline:
one candidate, per-matrix magnitude top-k, no early evaluation, same training.

Official code (mexiQQ/Pruning-with-randomness @ 9c9aea5), reproduced by default:
- Stage budget 10 epochs (``mrpc/run_experiment_mrpc_random_quickcall.sh:20``), early stopping
  with patience 100 evaluations every 50 steps (``utils_randomness.py:49``, ``:146-165``).
- Full stage: the saved optimizer state is reloaded (``experiment_soups_quickcall.py:233-236``),
  which restores the run's lr 5e-5 (candidates had set 2e-4, ``:192-193``); schedule
  ``constant_with_warmup`` (script ``:25``) with 10% warm-up, ``linear`` for the last stage
  (``:253-258``).
- Batch 64 (script ``:15``), weight decay 0 (``parameters.py:111``), no gradient clipping
  (``utils_randomness.py:117-121``: backward, step, zero_grad), random batches.
- Soft cross-entropy ``(-p * log q).mean()`` over batch x classes (``utils_randomness.py:432-435``;
  ``soft_ce: sum`` sums over classes, the textbook form, C times larger).
- One dense distillation epoch before the first stage (``experiment_soups_quickcall.py:138``),
  lr 5e-5 with the run's schedule and 10% warm-up (``:119-126``), best checkpoint kept.

Differences from the official code (docs/methods/training_based.md, randmask):
- Selection data: the code early-stops every phase and scores the LAST stage's candidates on
  the evaluation split (``:138``, ``:217``, ``:260``); here every evaluation uses a held-out
  part of the TRAINING split (a defect not reproduced: the attacked split is never looked at).
- Optimiser state: the code saves it with each best checkpoint (``utils_randomness.py:185``)
  and reloads it with the weights before every candidate (``experiment_soups_quickcall.py``
  ``:176-179``, lr then set to 2e-4, ``:191-193``) and before the full stage (``:233-236``);
  here each candidate and each full stage starts a fresh AdamW (Adam moments not carried over).
- Distillation padding: the code pads every sentence to the fixed length (SST-2: 64;
  ``data_processing.py:480-483``, ``experiment_soups_quickcall.py:321``) and its hidden and
  attention MSEs average over all positions, padding included (``utils_randomness.py:89-95``);
  here batches are padded to their longest sentence (:func:`distillation_loss`), which changes
  the MSE terms' weight against the soft cross-entropy.
- Training split: the code keeps 20 x |dev| examples out of training (17,440 on SST-2,
  ``train_test_split``, ``experiment_soups_quickcall.py:363``); here ``holdout_examples``
  (1,000).
- Best checkpoint on ties: the code saves on an evaluation equal to the best
  (``utils_randomness.py:169``), keeping the last of tied evaluations; here only a strict
  improvement is kept (the first).
- Precision: the code trains in fp16 mixed precision (``experiment_soups_quickcall.py:64``);
  here float32 (arithmetic, not a method behaviour).
- The code trains on TinyBERT-augmented data (``--aug_train``, script ``:13``); the augmented
  sets are not available offline, so the original training split is used.
- The three distillation terms have weight 1 (as the code); temperature 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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


class DistillStep:
    """A ``step_fn``: distillation loss against a frozen teacher, back-propagated."""

    def __init__(self, teacher: nn.Module, temperature: float = 1.0, soft_ce: str = "mean") -> None:
        """Args: the frozen teacher, the logit temperature and the soft-CE reduction."""
        self.teacher = teacher
        self.temperature = temperature
        self.soft_ce = soft_ce

    def __call__(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Compute and back-propagate the distillation loss (labels are not used)."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=True, output_attentions=True)
        s_out = model(**inputs, output_hidden_states=True, output_attentions=True)
        loss = distillation_loss(s_out, t_out, self.temperature, self.soft_ce)
        loss.backward()
        return loss.detach()


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
        holdout_examples: held-out part of the training split for all evaluations (seeded).
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
        self.scope = scope
        self.version = version
        self.info: dict[str, Any] = {}

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

    def _evaluator(self, model, data, held, record: list[float], seed_state: dict | None = None):
        """An ``after_step`` that evaluates every ``eval_every`` steps (and early-stops)."""

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
                seed_state.update(best=acc, state=cpu_state(model), since=0, step=step + 1)
                return False
            seed_state["since"] += 1
            return seed_state["since"] >= self.patience

        return after_step

    def select_candidate(self, scores: Sequence[float]) -> int:
        """Index of the candidate with the best held-out score (first on ties)."""
        return max(range(len(scores)), key=lambda c: scores[c]) if scores else 0

    def run_stage(
        self, model, data, sparsity, teacher, rest, held, gen, last: bool = False
    ) -> tuple[Masks, dict]:
        """One stage: candidates, early evaluation, full training with early stopping."""
        base = cpu_state(model)
        cands = self.candidates(model, sparsity, gen)
        step_fn = DistillStep(teacher, self.temperature, self.soft_ce)
        scores: list[float] = []
        if len(cands) > 1:
            for c, masks in enumerate(cands):
                rewind(model, base)
                evals: list[float] = []
                cfg = TrainConfig(seed=data.seed + c, **self.candidate_budget,
                                  **{**self.opt, "lr": self.candidate_lr})  # fmt: skip
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
        stats = masked_finetune(
            model, data, cands[best], cfg, step_fn, f"stage {sparsity:g}", rest,
            after_step=self._evaluator(model, data, held, evals, es), schedule=schedule,
        )  # fmt: skip
        if es["state"] is not None:
            rewind(model, es["state"])
        info = {
            "sparsity": sparsity, "candidate_scores": scores, "chosen": best,
            "ratio": None if self.deterministic else self.ratios[best % len(self.ratios)],
            "train_steps": stats["steps"], "best_step": es["step"], "schedule": schedule,
            "best_heldout_acc": None if es["state"] is None else es["best"],
        }  # fmt: skip
        return cands[best], info

    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Run the stages; the model ends with the last stage's best weights."""
        sparsity = check_sparsity(sparsity)
        rest, held = holdout_split(data.train, self.holdout_examples, data.seed)
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
            "selection_split": {"from": "train", "n_heldout": len(held), "n_train": len(rest),
                                "seed": data.seed},
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
        stats = train(
            model, data.tokenizer, rest, cfg, data.max_length, data.device,
            step_fn=DistillStep(teacher, self.temperature, self.soft_ce),
            after_step=self._evaluator(model, data, held, evals, es),
            schedule=self.stage_schedule, desc="randmask dense distillation",
        )  # fmt: skip
        if es["state"] is not None:
            rewind(model, es["state"])
        return {"train_steps": stats["steps"], "best_step": es["step"],
                "best_heldout_acc": None if es["state"] is None else es["best"]}  # fmt: skip
