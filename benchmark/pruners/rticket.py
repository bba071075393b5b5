"""RobustT: robust lottery tickets (Zheng et al., "Robust Lottery Tickets for Pre-trained
Language Models", ACL 2022; official code github.com/ruizheng20/robust_ticket).

1. Mask learning: every prunable weight gets a hard-concrete gate (Louizos et al., 2018) with
   gamma = -0.1, zeta = 1.1, beta = 2/3 and score log_alpha = ln 5 (gate value 0.9 at
   evaluation). Only the scores train (AdamW lr 0.1 on every dataset, weight decay 1e-6, 10%
   warm-up then linear decay), the weights of the fine-tuned model stay frozen. Loss: FreeLB
   adversarial loss on the word embeddings (K = 5 steps of size 0.03, per-example normalised
   gradient, init magnitude 0.05, no bound, each step's loss / K) plus lambda * L0, where
   L0 = mean over layers of mean(sigmoid(log_alpha - beta * log(-gamma / zeta))).
2. Epoch choice: after each epoch the deterministic gate (eval mode) is scored on a held-out
   part of the TRAINING split; the best epoch's scores are kept (``mask_epoch``). The
   held-out part is carved with a fixed seed (``holdout_seed``) and declared through
   :attr:`RobustTicketPruner.dense_holdout`, so the dense fine-tune that produced the starting
   model can leave exactly these examples out (``benchmark.training.dense.get_dense``).
3. Draw: one global magnitude top-k over sigmoid(log_alpha) of all masked layers.
4. Rewind all weights to the PRE-TRAINED model (``PruneData.pretrained``, with its fresh
   classifier) and fine-tune the ticket with plain cross-entropy, masks enforced, no clipping.

Official code (ruizheng20/robust_ticket @ b33bd52), reproduced by default:
- L0 ramp. ``search_ticket.py:216`` advances its counter by ``len(model_inputs)`` (3 keys for
  BERT: input_ids, token_type_ids, attention_mask) per batch, and ``:279-282`` ramps lambda
  from ``0.1 * E * L`` to ``(0.1 + 0.3) * E * L`` of that counter (E epochs, L batches each).
  In optimiser steps that is startup 0.1 / 3 and warm-up 0.3 / 3 of the run: our defaults
  ``lambda_startup = 1/30``, ``lambda_warmup = 0.1`` (full lambda at 13.3% of mask training;
  the arguments' reading 0.1 / 0.3 is a config override). The counter is advanced before
  lambda is computed, so the ramp is evaluated at the 1-based step count (as here).
- Order: the task-loss gradient is clipped to norm 1.0 (``:276``), then the L0 gradient is
  added unclipped (``:283-284``), then the optimiser steps.
- Ticket fine-tune without gradient clipping (``draw_retrain_ticket.py:418-427``), for 10
  epochs: the stage-3 script sets ``epoch=10`` ("larger epoch is better",
  ``stage3-draw-retrain_ticket.sh:9``). Its loop ``for epoch in 19 17 15 13`` (``:13``) then
  reuses the name and passes the loop value as ``--epochs`` (``:30``), so as written the tickets
  retrain 13-19 epochs; the loop was meant to pick the search epoch's checkpoint
  (``masked_model_path=${model_path}${epoch}``, ``:17``, computed but never passed), a script
  defect not reproduced. ``ticket_epochs: 3`` (the argparse default,
  ``draw_retrain_ticket.py:61``) is the previous default. At ``budget=reduced`` the ticket's
  200-step cap also sets its schedule's length, so the epochs change nothing there.
- Mask learning rate per dataset: 0.05 for AG News (``stage2-search-ticket.sh:29``), 0.1 for
  IMDB and SST-2 (``:11``, ``:47``); ``mask_lr`` resolves it from the composed dataset's name
  (``protocol.rticket_mask_lr`` in ``conf/run.yaml``), 0.1 where no dataset is composed.

Differences from the official code (docs/methods/training_based.md, RobustT):
- Clip scope (``clip_scope``). The code clips ``model.parameters()`` (``:276``) but zeroes only
  the optimiser's gradients (``:214``), which are the mask scores' alone (``:186-191``), and the
  BERT weights keep ``requires_grad`` (``freeze_bert``, ``masked_bert.py:199-202``, is never
  called), so every weight's gradient is summed over the whole run inside the clipped norm;
  the L0 gradient is added after the clip, unclipped (``:283-284``). Under AdamW a factor
  common to all gradients largely cancels (each score's step is divided by its own gradient
  RMS), so the lasting effect is on the mix: the clipped task part of each score's gradient
  shrinks step after step against the full-size L0 part, and L0 drives the scores more and more.
  A defect, not reproduced by default: ``clip_scope: scores`` clips the score gradients only
  (L0 still added after the clip). ``clip_scope: official`` reproduces the accumulation (all
  parameters get gradients, never zeroed, clipped together; slower and needs memory for every
  weight's gradient). Effect not measured.
- Selection data. The code selects the epoch on GLUE validation for SST-2 (the attacked split;
  ``search_ticket.py:140-145``) and on a random 10% of the training split for IMDB / AG News
  (``:122-129``), which the dense model was fine-tuned on. Here: a seeded held-out part of the
  training split that the dense model did not see (when the caller honours ``dense_holdout``).
  The authors then pick the ticket from a grid of epochs x sparsities by attack results on the
  evaluation set; we choose only the epoch and record it in ``self.info``.
- Ticket fine-tune, other: weight decay applies to all parameters (the code exempts biases and
  LayerNorm); the last checkpoint (the code attacks every epoch's checkpoint).
- The mask covers ``scope``; the paper and code mask the pooler too (``encoder_linear+pooler``,
  our default), so the recorded sparsity includes the pooler.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from benchmark.models.structure import prunable_linears
from benchmark.pruners.base import Masks, PruneData, check_sparsity
from benchmark.pruners.imp import (
    IterativeMagnitudePruner,
    masked_finetune,
    pretrained_state,
    rewind,
)
from benchmark.pruners.magnitude import global_topk_masks
from benchmark.training.freelb import FreeLBStep
from benchmark.training.loop import (
    TrainConfig,
    accuracy,
    default_step,
    holdout_split,
    report_metrics,
    train,
)

log = logging.getLogger(__name__)

GAMMA, ZETA, BETA = -0.1, 1.1, 2.0 / 3.0
LOG_ALPHA_INIT = math.log(5.0)  # gate 0.9 at eval: (0.9 - gamma) / (zeta - gamma) = 5/6


class HardConcreteGate(nn.Module):
    """A per-weight hard-concrete gate used as a ``torch.nn.utils.parametrize`` module.

    Training mode samples ``s = sigmoid((log u - log(1 - u) + log_alpha) / beta)`` with
    ``u ~ U(1e-4, 1 - 1e-4)``; eval mode uses ``s = sigmoid(log_alpha)``. The gate is
    ``clamp(s * (zeta - gamma) + gamma, 0, 1)`` and multiplies the weight.
    """

    def __init__(
        self,
        shape: torch.Size,
        init: float = LOG_ALPHA_INIT,
        gamma: float = GAMMA,
        zeta: float = ZETA,
        beta: float = BETA,
        generator: torch.Generator | None = None,
    ) -> None:
        """Args: weight shape, initial log_alpha, the stretch (gamma, zeta), temperature beta
        and an optional generator for the noise (must live on the scores' device)."""
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full(tuple(shape), float(init)))
        self.gamma, self.zeta, self.beta = gamma, zeta, beta
        self.generator = generator

    def gate(self) -> torch.Tensor:
        """The gate values (stochastic in training mode, deterministic in eval mode)."""
        if self.training:
            u = torch.rand(
                self.log_alpha.shape, generator=self.generator, device=self.log_alpha.device
            ).clamp(1e-4, 1 - 1e-4)
            s = torch.sigmoid((u.log() - (1 - u).log() + self.log_alpha) / self.beta)
        else:
            s = torch.sigmoid(self.log_alpha)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def l0(self) -> torch.Tensor:
        """Expected fraction of non-zero gates: mean P(gate > 0) (closed form)."""
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.gamma / self.zeta)).mean()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The gated weight."""
        return weight * self.gate()


def attach_gates(
    model: nn.Module, scope: str, init: float, generator: torch.Generator | None
) -> dict[str, HardConcreteGate]:
    """Freeze the model and parametrise every prunable weight with a gate; name -> gate."""
    for p in model.parameters():
        p.requires_grad_(False)
    gates = {}
    for name, lin in prunable_linears(model, scope).items():
        gate = HardConcreteGate(lin.weight.shape, init, generator=generator).to(lin.weight.device)
        parametrize.register_parametrization(lin, "weight", gate, unsafe=True)
        gates[f"{name}.weight"] = gate
    return gates


def detach_gates(model: nn.Module, scope: str) -> None:
    """Remove the gates, restoring the original (un-gated) weights."""
    for lin in prunable_linears(model, scope).values():
        if parametrize.is_parametrized(lin, "weight"):
            parametrize.remove_parametrizations(lin, "weight", leave_parametrized=False)


def l0_penalty(gates: dict[str, HardConcreteGate]) -> torch.Tensor:
    """Mean over layers of each layer's expected L0 fraction."""
    return torch.stack([g.l0() for g in gates.values()]).mean()


def lambda_schedule(step: int, total: int, startup: float, warmup: float, amp: float) -> float:
    """0 for ``startup * total`` steps, linear to 1 over ``warmup * total`` steps, times amp."""
    ratio = (step - startup * total) / max(1.0, warmup * total)
    return amp * min(1.0, max(0.0, ratio))


class RobustTicketPruner:
    """RobustT (see the module docstring for the procedure and every deviation)."""

    def __init__(
        self,
        adversarial: bool = True,
        mask_learning: bool = True,
        mask_epochs: float = 20.0,
        mask_max_steps: int | None = None,
        mask_lr: float = 0.1,
        mask_weight_decay: float = 1e-6,
        mask_init: float = LOG_ALPHA_INIT,
        lambda_amp: float = 0.5,
        lambda_startup: float = 1.0 / 30.0,
        lambda_warmup: float = 0.1,
        mask_epoch: str = "best",
        holdout_examples: int = 1000,
        holdout_seed: int = 0,
        holdout_before_dense: bool = True,
        grad_clip: float | None = 1.0,
        clip_scope: str = "scores",
        ticket_grad_clip: float | None = None,
        group_by_length: bool = False,
        adv_steps: int = 5,
        adv_lr: float = 0.03,
        adv_init_mag: float = 0.05,
        adv_norm: str = "example",
        imp_rate_per_round: float = 0.1,
        imp_epochs: float = 3.0,
        imp_max_steps: int | None = None,
        imp_lr_schedule: str = "whole_run",
        ticket_epochs: float = 10.0,
        ticket_max_steps: int | None = None,
        ticket_lr: float = 2e-5,
        batch_size: int = 32,
        max_train_examples: int | None = None,
        scope: str = "encoder_linear+pooler",
        version: int = 1,
    ) -> None:
        """Args:
        adversarial: FreeLB loss for mask learning (False: cross-entropy; ablation).
        mask_learning: learn masks (False: IMP masks instead; ablation).
        mask_epochs / mask_max_steps: mask-learning budget (paper: 20 epochs).
        mask_lr / mask_weight_decay: AdamW on the scores (1e-6 weight decay; the rate 0.1, 0.05
            for AG News as the official scripts, resolved by the config from the dataset).
        mask_init: initial log_alpha (ln 5).
        lambda_amp / lambda_startup / lambda_warmup: the L0 weight schedule (fractions of the
            mask-learning steps; 1/30 and 0.1 reproduce the official ramp).
        mask_epoch: ``best`` (held-out accuracy) or ``last`` mask-learning epoch.
        holdout_examples / holdout_seed: the held-out part carved from the training split.
        holdout_before_dense: declare the held-out part as :attr:`dense_holdout` (the dense
            fine-tune then leaves it out); False: no declaration (the old behaviour).
        grad_clip: clip norm of the mask-learning task loss (1.0; None: no clipping).
        clip_scope: ``scores`` (default) or ``official`` (the code's accumulated-gradient norm).
        ticket_grad_clip: clip norm of the ticket fine-tune (None: none, as the code).
        group_by_length: length-grouped batches (False: random batches, as the code).
        adv_steps / adv_lr / adv_init_mag / adv_norm: FreeLB settings.
        imp_rate_per_round / imp_epochs / imp_max_steps / imp_lr_schedule: IMP budget and
            round schedule when mask_learning=False (IMP's ``rate_per_round``, ``epochs``,
            ``max_steps``, ``lr_schedule``).
        ticket_epochs / ticket_max_steps / ticket_lr: the ticket's fine-tune (10 epochs, the
            stage-3 script's ``epoch=10``; 3 is the previous default; lr 2e-5).
        batch_size: batch size of every stage (32).
        max_train_examples: subsample the training split (smoke runs).
        scope / version: as for every pruner.
        """
        if mask_epoch not in ("best", "last"):
            raise ValueError(f"mask_epoch must be 'best' or 'last', got {mask_epoch!r}")
        if clip_scope not in ("scores", "official"):
            raise ValueError(f"clip_scope must be 'scores' or 'official', got {clip_scope!r}")
        self.holdout_seed = int(holdout_seed)
        self.holdout_before_dense = bool(holdout_before_dense)
        self.grad_clip, self.clip_scope = grad_clip, clip_scope
        self.ticket_grad_clip = ticket_grad_clip
        self.group_by_length = bool(group_by_length)
        self.adversarial = adversarial
        self.mask_learning = mask_learning
        self.mask_epochs, self.mask_max_steps = mask_epochs, mask_max_steps
        self.mask_lr, self.mask_weight_decay, self.mask_init = mask_lr, mask_weight_decay, mask_init
        self.lambda_amp, self.lambda_startup = lambda_amp, lambda_startup
        self.lambda_warmup = lambda_warmup
        self.mask_epoch = mask_epoch
        self.holdout_examples = holdout_examples
        self.adv = {
            "adv_steps": adv_steps,
            "adv_lr": adv_lr,
            "init_mag": adv_init_mag,
            "norm": adv_norm,
        }
        self.imp = {
            "rate_per_round": imp_rate_per_round,
            "epochs": imp_epochs,
            "max_steps": imp_max_steps,
            "lr_schedule": imp_lr_schedule,
        }
        self.ticket = {"epochs": ticket_epochs, "max_steps": ticket_max_steps, "lr": ticket_lr}
        self.batch_size = batch_size
        self.max_train_examples = max_train_examples
        self.scope = scope
        self.version = version
        self.info: dict[str, Any] = {}

    @property
    def dense_holdout(self) -> dict[str, int] | None:
        """The training examples the dense fine-tune must leave out (RobustT's selection data)."""
        if not (self.mask_learning and self.holdout_before_dense):
            return None
        return {"n_holdout": int(self.holdout_examples), "seed": self.holdout_seed}

    # -- stage 1: mask learning -------------------------------------------------------------
    def learn_scores(self, model: nn.Module, data: PruneData) -> dict[str, torch.Tensor]:
        """Train the gate scores; return the chosen epoch's log_alpha per weight name."""
        rest, held = holdout_split(data.train, self.holdout_examples, self.holdout_seed)
        gen = torch.Generator(device=data.device).manual_seed(data.seed)
        gates = attach_gates(model, self.scope, self.mask_init, gen)
        scores = [g.log_alpha for g in gates.values()]
        if self.clip_scope == "official":  # every weight gets a gradient that is never zeroed
            for p in model.parameters():
                p.requires_grad_(True)
        cfg = TrainConfig(
            epochs=self.mask_epochs, max_steps=self.mask_max_steps, batch_size=self.batch_size,
            lr=self.mask_lr, weight_decay=self.mask_weight_decay, warmup_ratio=0.1,
            grad_clip=self.grad_clip, max_train_examples=self.max_train_examples,
            group_by_length=self.group_by_length, seed=data.seed,
        )  # fmt: skip
        n_train = min(len(rest), self.max_train_examples or len(rest))
        total = cfg.total_steps(len(rest))
        per_epoch = max(1, math.ceil(n_train / self.batch_size))
        state = {"step": 0, "lambda": 0.0}

        def add_l0(step: int) -> None:
            """L0 gradient after the clip (search_ticket.py:276-284), ramp at step + 1."""
            state["lambda"] = lambda_schedule(
                step + 1, total, self.lambda_startup, self.lambda_warmup, self.lambda_amp
            )
            (state["lambda"] * l0_penalty(gates)).backward()

        step_fn = FreeLBStep(**self.adv) if self.adversarial else default_step
        clip_params = list(model.parameters()) if self.clip_scope == "official" else scores

        history: list[dict[str, float]] = []
        best: dict[str, Any] = {"acc": -1.0, "scores": None, "epoch": None}

        def after_step(step: int) -> None:
            state["step"] = step + 1
            if (step + 1) % per_epoch and step + 1 != total:
                return
            acc = accuracy(model, data.tokenizer, held, data.max_length, data.device)
            model.train()  # accuracy() leaves the model in eval mode
            epoch = math.ceil((step + 1) / per_epoch)
            l0 = float(l0_penalty(gates).detach())
            history.append({"epoch": epoch, "step": step + 1, "heldout_acc": acc, "l0": l0})
            report_metrics({"heldout_acc": acc, "epoch": epoch})
            if self.mask_epoch == "last" or acc > best["acc"]:
                snap = {n: g.log_alpha.detach().clone() for n, g in gates.items()}
                best.update(acc=acc, scores=snap, epoch=epoch)

        try:
            stats = train(
                model, data.tokenizer, rest, cfg, data.max_length, data.device,
                params=scores, step_fn=step_fn, after_step=after_step, after_clip=add_l0,
                clip_params=clip_params, desc="rticket mask learning",
                metrics=lambda: {"sparsity": 1.0 - float(l0_penalty(gates)),
                                 "l0_lambda": state["lambda"]},
            )  # fmt: skip
        finally:
            detach_gates(model, self.scope)
            for p in model.parameters():
                p.grad = None
        self.info["mask_learning"] = {
            "steps": stats["steps"], "seconds": stats["seconds"], "final_loss": stats["final_loss"],
            "loss": "freelb" if self.adversarial else "cross_entropy", "epochs": history,
            "selected_epoch": best["epoch"], "selected_heldout_acc": best["acc"],
            "selection": f"{self.mask_epoch} held-out accuracy of the eval-mode gates",
            "selection_split": {"from": "train", "n_heldout": len(held), "n_train": len(rest),
                                "seed": self.holdout_seed,
                                "declared_to_dense": self.dense_holdout is not None},
            "lambda_final": state["lambda"], "clip_scope": self.clip_scope,
        }  # fmt: skip
        return best["scores"]

    # -- the whole method ---------------------------------------------------------------------
    def prune(self, model: nn.Module, data: PruneData, sparsity: float) -> Masks:
        """Learn (or IMP-find) the masks, draw the ticket, rewind and fine-tune it."""
        sparsity = check_sparsity(sparsity)
        self.info = {"adversarial": self.adversarial, "mask_learning": self.mask_learning}
        pre = pretrained_state(data)
        if self.mask_learning:
            scores = self.learn_scores(model, data)
            masks = global_topk_masks({n: torch.sigmoid(s) for n, s in scores.items()}, sparsity)
        else:
            imp = IterativeMagnitudePruner(
                rewind=False, batch_size=self.batch_size, adversarial=self.adversarial,
                adv_steps=self.adv["adv_steps"], adv_lr=self.adv["adv_lr"],
                adv_init_mag=self.adv["init_mag"], adv_norm=self.adv["norm"],
                max_train_examples=self.max_train_examples, scope=self.scope, **self.imp,
            )  # fmt: skip
            masks = imp.prune(model, data, sparsity)  # IMP's defaults otherwise
            self.info["imp"] = imp.info
        for p in model.parameters():
            p.requires_grad_(True)
        rewind(model, pre)
        cfg = TrainConfig(
            batch_size=self.batch_size, max_train_examples=self.max_train_examples,
            grad_clip=self.ticket_grad_clip, group_by_length=self.group_by_length,
            seed=data.seed, **self.ticket,
        )  # fmt: skip
        stats = masked_finetune(model, data, masks, cfg, desc="rticket ticket fine-tune")
        self.info["ticket"] = {
            "rewound_to": "pretrained", "checkpoint": "last", "draw": "global top-k",
            **stats,
        }  # fmt: skip
        return masks
