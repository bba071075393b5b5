"""Robust dense starting models: FreeLB fine-tuning and weight averaging (``conf/dense/``).

Both implement the :class:`benchmark.training.dense.DenseRecipe` protocol (``cache_config`` +
``fit``), so the dense stage caches them by key like the plain fine-tune.

- :class:`FreeLBFineTune` (Zhu et al., ICLR 2020; the AKR paper's "FreeLB" row): the shared
  loop with :class:`benchmark.training.freelb.FreeLBStep`; K = 5 ascent steps of size 0.03, no
  bound, per-token gradient normalisation, grad clip 1.0, as the AKR authors' dense code
  (mexiQQ/robust_dense_bert, ``dense/sst2/run_glue_freelb_norm_for_each_word.py``): the
  embedding layer is frozen (``:265-266``, ``freeze_embeddings``), delta starts at 0 (the random
  start is disabled by ``if False:`` at ``:316``, ``adv_init_mag: 0``), per-token norm
  (``:351``), clipping over all parameters (``:362``), random batches. Its 40 epochs at 2e-5
  (``dense/sst2/run_freelb.sh``) are not our CPU budget (conf/dense/freelb.yaml).
- :class:`WeightAverage` (AKR, Li et al. EMNLP 2023, Sec. "robust and dense"; Wortsman et al.
  2022 greedy soup): several ingredients are fine-tuned from the same start with different
  hyper-parameters, sorted by a score (descending), and greedily added to the average only if
  the average's score does not drop. ``mode="uniform"`` averages all kept ingredients (paper);
  ``mode="pairwise"`` keeps a running ``(w + w_new) / 2`` (official code).

Differences from AKR: the paper sorts and selects by accuracy under attack (Aua) on the
evaluation data. Attacks are not part of this stage, so the default score is clean accuracy on
a seeded held-out part of the TRAINING split (the ingredients train on the rest); the score is
pluggable (``score``: a dotted path to ``f(model, tokenizer, examples, max_length, device)``).
AKR Table 8's ingredients vary the optimiser (Adam / AdamW / SGD); the shared loop only has
AdamW, so our default grid varies lr, epochs, weight decay and adversarial training only.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from benchmark.data.loading import Example
from benchmark.training.freelb import FreeLBStep
from benchmark.training.loop import TrainConfig, accuracy, holdout_split, report_metrics, train

log = logging.getLogger(__name__)

ScoreFn = Callable[[nn.Module, Any, Sequence[Example], int, torch.device], float]


class FreeLBFineTune:
    """FreeLB adversarial fine-tuning of the dense model."""

    def __init__(
        self,
        version: int = 1,
        adv_steps: int = 5,
        adv_lr: float = 0.03,
        adv_init_mag: float = 0.0,
        adv_norm: str = "token",
        adv_max_norm: float = 0.0,
        freeze_embeddings: bool = True,
        **train_kwargs: Any,
    ) -> None:
        """Args: ``version``, the FreeLB settings (K, step size, init magnitude 0 = start at
        zero, ``token`` or ``example`` normalisation, projection radius 0 = none),
        ``freeze_embeddings`` (the whole embedding block gets no updates) and TrainConfig
        fields."""
        self.version = version
        self.freeze_embeddings = bool(freeze_embeddings)
        self.adv = {
            "adv_steps": adv_steps, "adv_lr": adv_lr, "init_mag": adv_init_mag,
            "norm": adv_norm, "max_norm": adv_max_norm,
        }  # fmt: skip
        FreeLBStep(**self.adv)  # validate early
        self.cfg = TrainConfig(**train_kwargs)

    def cache_config(self) -> dict[str, Any]:
        """The recipe's name, version, FreeLB settings and budget."""
        return {"recipe": "freelb", "version": self.version, **self.adv,
                "freeze_embeddings": self.freeze_embeddings, **asdict(self.cfg)}  # fmt: skip

    def fit(self, model, tokenizer, train_set, max_length, device) -> dict[str, Any]:
        """Fine-tune with FreeLB in the shared loop (embeddings frozen if configured)."""
        if self.freeze_embeddings:
            for p in model.base_model.embeddings.parameters():
                p.requires_grad_(False)
        try:
            stats = train(
                model, tokenizer, train_set, self.cfg, max_length, device,
                step_fn=FreeLBStep(**self.adv), desc="dense FreeLB",
            )  # fmt: skip
        finally:
            for p in model.parameters():
                p.requires_grad_(True)
        return {**stats, "frozen": "embeddings" if self.freeze_embeddings else None}


def heldout_accuracy(
    model: nn.Module, tokenizer, examples: Sequence[Example], max_length: int, device
) -> float:
    """Default soup score: clean accuracy on the held-out examples."""
    return accuracy(model, tokenizer, examples, max_length, device)


def resolve_score(path: str) -> ScoreFn:
    """Import ``package.module.function`` (the pluggable score)."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot import score function {path!r}") from exc


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of floating-point tensors; other tensors are taken from the first."""
    out = {}
    for k, v in states[0].items():
        out[k] = torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
    return out


# Default ingredients: our own grid over the ranges AKR Table 8 reports (lr 1e-5..5e-5, 3..30
# epochs would be too long here: 3..5; weight decay 1e-2 / 1e-3; with or without FreeLB).
DEFAULT_INGREDIENTS: tuple[dict[str, Any], ...] = (
    {"lr": 2e-5, "epochs": 3, "weight_decay": 0.01},
    {"lr": 3e-5, "epochs": 3, "weight_decay": 0.01},
    {"lr": 5e-5, "epochs": 3, "weight_decay": 0.001},
    {"lr": 1e-5, "epochs": 5, "weight_decay": 0.01},
    {"lr": 2e-5, "epochs": 5, "weight_decay": 0.001},
    {"lr": 2e-5, "epochs": 3, "weight_decay": 0.01, "adversarial": True},
    {"lr": 3e-5, "epochs": 3, "weight_decay": 0.001, "adversarial": True},
    {"lr": 1e-5, "epochs": 5, "weight_decay": 0.01, "adversarial": True},
    {"lr": 4e-5, "epochs": 4, "weight_decay": 0.01},
    {"lr": 5e-5, "epochs": 4, "weight_decay": 0.01, "adversarial": True},
)


class WeightAverage:
    """Greedy weight averaging of several fine-tuned ingredients (see the module docstring)."""

    def __init__(
        self,
        version: int = 1,
        ingredients: Sequence[dict[str, Any]] = DEFAULT_INGREDIENTS,
        mode: str = "uniform",
        score: str = "benchmark.training.dense_recipes.heldout_accuracy",
        holdout_examples: int = 1000,
        seed: int = 0,
        adv_steps: int = 5,
        adv_lr: float = 0.03,
        adv_init_mag: float = 0.05,
        adv_norm: str = "token",
        **train_kwargs: Any,
    ) -> None:
        """Args:
        version: bumped whenever the numbers can change.
        ingredients: TrainConfig overrides per ingredient, plus ``adversarial: bool``.
        mode: ``uniform`` (paper) or ``pairwise`` (official code) averaging.
        score: dotted path of the score function (higher is better).
        holdout_examples: size of the held-out part of the training split (seeded).
        seed: the held-out split's and the ingredients' base seed.
        adv_*: FreeLB settings of adversarial ingredients.
        train_kwargs: TrainConfig defaults shared by all ingredients.
        """
        if mode not in ("uniform", "pairwise"):
            raise ValueError(f"mode must be 'uniform' or 'pairwise', got {mode!r}")
        self.version = version
        self.ingredients = [dict(i) for i in ingredients]
        if not self.ingredients:
            raise ValueError("WeightAverage needs at least one ingredient")
        self.mode = mode
        self.score_path = score
        self.score_fn = resolve_score(score)
        self.holdout_examples = holdout_examples
        self.seed = seed
        self.adv = {"adv_steps": adv_steps, "adv_lr": adv_lr, "init_mag": adv_init_mag,
                    "norm": adv_norm}  # fmt: skip
        self.train_kwargs = dict(train_kwargs)
        self.configs = [self._ingredient_config(i, ing) for i, ing in enumerate(self.ingredients)]

    def _ingredient_config(self, i: int, ing: dict[str, Any]) -> TrainConfig:
        kwargs = {"seed": self.seed + i, **self.train_kwargs}
        kwargs.update({k: v for k, v in ing.items() if k != "adversarial"})
        return TrainConfig(**kwargs)

    def cache_config(self) -> dict[str, Any]:
        """Everything that changes the soup: ingredients, mode, score, split, FreeLB."""
        return {
            "recipe": "weight_average", "version": self.version, "mode": self.mode,
            "score": self.score_path, "holdout_examples": self.holdout_examples,
            "seed": self.seed, "adv": self.adv,
            "ingredients": [
                {**asdict(c), "adversarial": bool(ing.get("adversarial", False))}
                for c, ing in zip(self.configs, self.ingredients, strict=True)
            ],
        }  # fmt: skip

    def fit(self, model, tokenizer, train_set, max_length, device) -> dict[str, Any]:
        """Train the ingredients, build the greedy soup and load it into ``model``."""
        rest, held = holdout_split(train_set, self.holdout_examples, self.seed)
        init = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

        def score() -> float:
            return float(self.score_fn(model, tokenizer, held, max_length, device))

        states, scores, stats = [], [], []
        for i, (cfg, ing) in enumerate(zip(self.configs, self.ingredients, strict=True)):
            model.load_state_dict(init)
            step = FreeLBStep(**self.adv) if ing.get("adversarial") else None
            kw = {"step_fn": step} if step is not None else {}
            st = train(
                model, tokenizer, rest, cfg, max_length, device, desc=f"ingredient {i}", **kw
            )
            states.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
            scores.append(score())
            report_metrics({"heldout_acc": scores[-1]})
            stats.append({**st, "score": scores[-1]})
            log.info("ingredient %d: score %.4f", i, scores[-1])
        order = sorted(range(len(states)), key=lambda i: -scores[i])
        kept, soup, best = [order[0]], states[order[0]], scores[order[0]]
        for i in order[1:]:
            if self.mode == "uniform":
                cand = average_states([states[j] for j in [*kept, i]])
            else:
                cand = average_states([soup, states[i]])
            model.load_state_dict(cand)
            s = score()
            if s >= best:
                kept.append(i)
                soup, best = cand, s
        model.load_state_dict(soup)
        model.eval()
        report_metrics({"soup_heldout_acc": best, "soup_size": len(kept)})
        return {
            "ingredients": stats, "order": order, "kept": kept, "soup_score": best,
            "mode": self.mode, "score": self.score_path,
            "selection_split": {"from": "train", "n_heldout": len(held), "n_train": len(rest),
                                "seed": self.seed},
        }  # fmt: skip
