"""RobustT: robust lottery tickets (Zheng et al., "Robust Lottery Tickets for Pre-trained
Language Models", ACL 2022; official code github.com/ruizheng20/robust_ticket).

1. Mask learning: every prunable weight gets a hard-concrete gate (Louizos et al., 2018) with
   gamma = -0.1, zeta = 1.1, beta = 2/3 and score log_alpha = ln 5 (gate value 0.9 at
   evaluation). Only the scores train (AdamW lr 0.1, weight decay 1e-6, 10% warm-up then
   linear decay), the weights of the fine-tuned model stay frozen. Loss: FreeLB adversarial
   loss on the word embeddings (K = 5 steps of size 0.03, per-example normalised gradient,
   init magnitude 0.05, no bound, each step's loss / K) plus lambda * L0, where
   L0 = mean over layers of mean(sigmoid(log_alpha - beta * log(-gamma / zeta))) and lambda is
   0 for the first 10% of steps, ramps linearly to 1 over the next 30% and is scaled by 0.5.
2. Epoch choice: after each epoch the deterministic gate (eval mode) is scored on a held-out
   part of the TRAINING split (seeded); the best epoch's scores are kept (``mask_epoch``).
3. Draw: one global magnitude top-k over sigmoid(log_alpha) of all masked layers.
4. Rewind all weights to the PRE-TRAINED model (``PruneData.pretrained``, with its fresh
   classifier) and fine-tune the ticket with plain cross-entropy, masks enforced.

Ablations (RobustT Table 3): ``adversarial=False`` (plain cross-entropy for the mask scores,
config ``rticket_no_adv``) and ``mask_learning=False`` (masks from IMP on the fine-tuned model
with the same FreeLB loss, then the same rewind and retrain; config
``rticket_no_mask_learning``).

Differences from the paper / official code, all deliberate:
- The code's lambda ramp counts ``len(model_inputs)`` (the number of dict keys, 2-3) per batch
  instead of batches, so its ramp runs 2-3x faster than its arguments say; we ramp in
  optimiser steps with the arguments' fractions (startup 0.1, warm-up 0.3).
- The code back-propagates the L0 term after gradient clipping; here it joins the gradient
  before the shared loop clips (clip 1.0). The L0 gradient is ~1/numel per score, negligible.
- The code selects the epoch on the GLUE dev split (= the attacked evaluation split for SST-2)
  and the authors then pick the ticket from a grid of epochs x sparsities by attack results on
  the evaluation set. We choose only the epoch, on a held-out part of the training split, and
  record it in ``self.info``; no selection ever touches the evaluation split.
- Ticket fine-tune: weight decay applies to all parameters (the code exempts biases and
  LayerNorm) and the last checkpoint is kept (the code attacks every epoch's checkpoint).
- The mask covers ``scope``; the paper masks the pooler too (``encoder_linear+pooler``, our
  config default), so the recorded sparsity includes the pooler.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from benchmark.training.freelb import FreeLBStep
from benchmark.models.structure import prunable_linears
from benchmark.pruners.base import Masks, PruneData, check_sparsity
from benchmark.pruners.imp import (
    IterativeMagnitudePruner,
    masked_finetune,
    pretrained_state,
    rewind,
)
from benchmark.pruners.magnitude import global_topk_masks
from benchmark.training.loop import Batch, TrainConfig, accuracy, holdout_split, train

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
        lambda_startup: float = 0.1,
        lambda_warmup: float = 0.3,
        mask_epoch: str = "best",
        holdout_examples: int = 1000,
        adv_steps: int = 5,
        adv_lr: float = 0.03,
        adv_init_mag: float = 0.05,
        adv_norm: str = "example",
        imp_rate_per_round: float = 0.1,
        imp_epochs: float = 3.0,
        imp_max_steps: int | None = None,
        ticket_epochs: float = 3.0,
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
        mask_lr / mask_weight_decay: AdamW on the scores (paper: 0.1 / 1e-6; AG News 0.05).
        mask_init: initial log_alpha (ln 5).
        lambda_amp / lambda_startup / lambda_warmup: the L0 weight schedule.
        mask_epoch: ``best`` (held-out accuracy) or ``last`` mask-learning epoch.
        holdout_examples: size of the held-out part carved from the training split (seeded).
        adv_steps / adv_lr / adv_init_mag / adv_norm: FreeLB settings.
        imp_rate_per_round / imp_epochs / imp_max_steps: IMP budget when mask_learning=False.
        ticket_epochs / ticket_max_steps / ticket_lr: the ticket's fine-tune (3 epochs, 2e-5).
        batch_size: batch size of every stage (32).
        max_train_examples: subsample the training split (smoke runs).
        scope / version: as for every pruner.
        """
        if mask_epoch not in ("best", "last"):
            raise ValueError(f"mask_epoch must be 'best' or 'last', got {mask_epoch!r}")
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
        }
        self.ticket = {"epochs": ticket_epochs, "max_steps": ticket_max_steps, "lr": ticket_lr}
        self.batch_size = batch_size
        self.max_train_examples = max_train_examples
        self.scope = scope
        self.version = version
        self.info: dict[str, Any] = {}

    # -- stage 1: mask learning -------------------------------------------------------------
    def learn_scores(self, model: nn.Module, data: PruneData) -> dict[str, torch.Tensor]:
        """Train the gate scores; return the chosen epoch's log_alpha per weight name."""
        rest, held = holdout_split(data.train, self.holdout_examples, data.seed)
        gen = torch.Generator(device=data.device).manual_seed(data.seed)
        gates = attach_gates(model, self.scope, self.mask_init, gen)
        cfg = TrainConfig(
            epochs=self.mask_epochs, max_steps=self.mask_max_steps, batch_size=self.batch_size,
            lr=self.mask_lr, weight_decay=self.mask_weight_decay, warmup_ratio=0.1,
            max_train_examples=self.max_train_examples, seed=data.seed,
        )  # fmt: skip
        n_train = min(len(rest), self.max_train_examples or len(rest))
        total = cfg.total_steps(len(rest))
        per_epoch = max(1, math.ceil(n_train / self.batch_size))
        state = {"step": 0, "lambda": 0.0}

        def reg(_model: nn.Module) -> torch.Tensor:
            state["lambda"] = lambda_schedule(
                state["step"], total, self.lambda_startup, self.lambda_warmup, self.lambda_amp
            )
            return state["lambda"] * l0_penalty(gates)

        if self.adversarial:
            step_fn = FreeLBStep(**self.adv, extra_loss=reg)
        else:

            def step_fn(m: nn.Module, batch: Batch) -> torch.Tensor:
                loss = m(**batch).loss + reg(m)
                loss.backward()
                return loss.detach()

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
            if self.mask_epoch == "last" or acc > best["acc"]:
                scores = {n: g.log_alpha.detach().clone() for n, g in gates.items()}
                best.update(acc=acc, scores=scores, epoch=epoch)

        try:
            stats = train(
                model, data.tokenizer, rest, cfg, data.max_length, data.device,
                params=[g.log_alpha for g in gates.values()], step_fn=step_fn,
                after_step=after_step, desc="rticket mask learning",
            )  # fmt: skip
        finally:
            detach_gates(model, self.scope)
        self.info["mask_learning"] = {
            "steps": stats["steps"], "seconds": stats["seconds"], "final_loss": stats["final_loss"],
            "loss": "freelb" if self.adversarial else "cross_entropy", "epochs": history,
            "selected_epoch": best["epoch"], "selected_heldout_acc": best["acc"],
            "selection": f"{self.mask_epoch} held-out accuracy of the eval-mode gates",
            "selection_split": {"from": "train", "n_heldout": len(held), "n_train": len(rest),
                                "seed": data.seed},
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
            masks = imp.prune(model, data, sparsity)
            self.info["imp"] = imp.info
        for p in model.parameters():
            p.requires_grad_(True)
        rewind(model, pre)
        cfg = TrainConfig(
            batch_size=self.batch_size, max_train_examples=self.max_train_examples,
            seed=data.seed, **self.ticket,
        )  # fmt: skip
        stats = masked_finetune(model, data, masks, cfg, desc="rticket ticket fine-tune")
        self.info["ticket"] = {
            "rewound_to": "pretrained", "checkpoint": "last", "draw": "global top-k",
            **stats,
        }  # fmt: skip
        return masks
