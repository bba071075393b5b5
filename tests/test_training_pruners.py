"""Training-based pruners (RobustT, SEVEN, randomized masks, IMP/LTH), FreeLB and robust dense
recipes: known-answer checks of their parts and end-to-end runs on a tiny random BERT."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmark.data.tiny import tiny_splits
from benchmark.models.loading import build_tiny_bert
from benchmark.models.structure import prunable_linears
from benchmark.pruners.base import PruneData, apply_masks, measure_sparsity, prunable_params
from benchmark.pruners.imp import imp_schedule, masked_finetune
from benchmark.pruners.randmask import sample_mask
from benchmark.pruners.rticket import BETA, GAMMA, ZETA, HardConcreteGate, lambda_schedule
from benchmark.pruners.seven import SevenScore, cubic_remain
from benchmark.training import loop as training
from benchmark.training.dense_recipes import FreeLBFineTune, WeightAverage, average_states
from benchmark.training.freelb import FreeLBStep, ascent_update
from benchmark.training.loop import TrainConfig, encode, holdout_split

CONF = Path(__file__).resolve().parents[1] / "conf"


def _examples(split: str = "train") -> list[tuple[str, int]]:
    return [(t, int(y)) for t, y in tiny_splits()[split]]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny 'dense' model (seed 1), its tokenizer and PruneData rewinding to seed 0."""
    monkeypatch.setattr(training, "SHOW_PROGRESS", False)  # no bars in the tests' output
    model, tok = build_tiny_bert(num_labels=2, workdir=tmp_path / "dense", seed=1)
    data = PruneData(
        tokenizer=tok, train=_examples(), max_length=32, device=torch.device("cpu"), seed=0,
        pretrained=lambda: build_tiny_bert(2, tmp_path / "pre", seed=0)[0],
    )  # fmt: skip
    return model, tok, data


# -- hard-concrete gates (RobustT) -------------------------------------------------------------
def test_hard_concrete_sampling_range_and_expected_l0():
    torch.manual_seed(0)
    gate = HardConcreteGate(torch.Size([200_000]), init=0.3)
    gate.log_alpha.data.uniform_(-2, 2)
    gate.train()
    samples = torch.stack([gate.gate().detach() for _ in range(8)])
    assert samples.min() >= 0 and samples.max() <= 1
    assert (samples == 0).any() and (samples == 1).any()  # the stretch reaches both ends
    # P(gate > 0) = sigmoid(log_alpha - beta * log(-gamma / zeta)) per gate (closed form).
    closed = torch.sigmoid(gate.log_alpha.detach() - BETA * math.log(-GAMMA / ZETA)).mean()
    assert float((samples > 0).float().mean()) == pytest.approx(float(closed), abs=0.005)
    assert float(gate.l0().detach()) == pytest.approx(float(closed), abs=1e-6)


def test_hard_concrete_eval_mask_is_clamp_formula():
    gate = HardConcreteGate(torch.Size([5]))
    gate.log_alpha.data = torch.tensor([-5.0, -1.0, 0.0, math.log(5.0), 4.0])
    gate.eval()
    expect = (torch.sigmoid(gate.log_alpha) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)
    assert torch.equal(gate.gate(), expect)
    assert float(gate.gate()[3].detach()) == pytest.approx(0.9)  # ln 5 init -> 0.9
    assert torch.equal(gate.gate(), gate.gate())  # deterministic


def test_lambda_schedule_ramp():
    assert lambda_schedule(0, 100, 0.1, 0.3, 0.5) == 0.0
    assert lambda_schedule(10, 100, 0.1, 0.3, 0.5) == 0.0
    assert lambda_schedule(25, 100, 0.1, 0.3, 0.5) == pytest.approx(0.25)
    assert lambda_schedule(99, 100, 0.1, 0.3, 0.5) == pytest.approx(0.5)


# -- SEVEN -------------------------------------------------------------------------------------
def test_seven_score_accumulation_known_answer():
    w = {"w": torch.tensor([2.0, 1.0])}
    masks = {"w": torch.tensor([True, False])}
    sc = SevenScore({"w": torch.Size([2])}, "cpu", beta1=0.8, beta2=0.9)
    sc.update(w, {"w": torch.tensor([1.0, 1.0])}, masks)
    sc.update(w, {"w": torch.tensor([-2.0, 1.0])}, masks)
    # step 1: m = 0.2, v = 0.1 -> m_hat = 1, v_hat = 1: I = |2 * 1 * 1 / 1| = 2
    # step 2: m = 0.56, v = 0.49 -> m_hat = 0.56/0.36, v_hat = sqrt(0.49/0.19)
    expect = 2 + abs(2 * -2 * (0.56 / 0.36) / math.sqrt(0.49 / 0.19))
    assert float(sc.score["w"][0]) == pytest.approx(expect, rel=1e-5)
    assert float(sc.score["w"][1]) == 0.0  # pruned weights score 0


def test_seven_cubic_schedule_hits_target_at_window_end():
    keep = 0.3
    assert cubic_remain(-1, 100, keep) == pytest.approx(1.0)
    assert cubic_remain(99, 100, keep) == pytest.approx(keep)
    vals = [cubic_remain(i, 100, keep) for i in range(100)]
    assert all(a >= b for a, b in itertools.pairwise(vals))


# -- randomized masks --------------------------------------------------------------------------
def test_random_mask_frequencies_follow_power_and_are_seeded():
    w = torch.linspace(0.5, 1.0, 12)
    freq = torch.zeros(12)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        freq += sample_mask(w, keep_k=6, ratio=0.2, power=5.0, generator=gen).float()
    freq /= 300
    # Keep-frequency grows with |w|: compare quartiles (robust to sampling noise).
    q = freq.view(4, 3).mean(1)
    assert q[0] < q[1] < q[2] < q[3]
    assert freq[-1] > 0.9 and freq[0] < 0.3
    a = sample_mask(w, 6, 0.2, 5.0, torch.Generator().manual_seed(7))
    b = sample_mask(w, 6, 0.2, 5.0, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and int(a.sum()) == 6
    draws = {
        tuple(sample_mask(w, 6, 0.2, 5.0, torch.Generator().manual_seed(s)).tolist())
        for s in range(10)
    }
    assert len(draws) > 1  # different seeds give different masks
    zero = torch.tensor([0.0, 0.0, 1.0, 2.0, 3.0])
    assert not sample_mask(zero, 3, 1.0, 5.0, gen)[:2].any()  # pruned weights stay pruned


# -- masked training and FreeLB ----------------------------------------------------------------
def test_masks_stay_enforced_after_optimizer_steps(tiny):
    model, _tok, data = tiny
    params = prunable_params(model)
    masks = {n: torch.rand(p.shape, generator=torch.Generator().manual_seed(1)) > 0.5
             for n, p in params.items()}  # fmt: skip
    linears = prunable_linears(model)
    seen = []

    def check(step: int) -> None:
        for name, lin in linears.items():
            seen.append(bool((lin.weight[~masks[f"{name}.weight"]] == 0).all()))

    masked_finetune(model, data, masks, TrainConfig(max_steps=3, batch_size=16, lr=1e-2),
                    after_step=check)  # fmt: skip
    assert seen and all(seen)
    for n, p in prunable_params(model).items():  # folded: plain weights, zeros where pruned
        assert not hasattr(p, "weight_orig") and (p[~masks[n]] == 0).all()


@pytest.mark.parametrize("norm", ["example", "token"])
def test_freelb_perturbation_norm_follows_step_size(tiny, norm):
    model, tok, _data = tiny
    batch = encode(tok, ["the movie was good", "bad plot and a dull boring ending"], 32, "cpu")
    batch["labels"] = torch.tensor([1, 0])
    step = FreeLBStep(adv_steps=2, adv_lr=0.07, init_mag=0.0, norm=norm)
    step(model, batch)
    delta = step.last_delta
    real = batch["attention_mask"].bool()
    if norm == "example":
        assert torch.allclose(delta.flatten(1).norm(dim=1), torch.full((2,), 0.07), atol=1e-5)
    else:
        assert torch.allclose(delta.norm(dim=-1)[real], torch.tensor(0.07), atol=1e-5)
    # one more ascent step adds exactly step_size per example (no projection)
    grad = torch.randn_like(delta)
    new = ascent_update(delta, grad, 0.05, "example")
    assert torch.allclose((new - delta).flatten(1).norm(dim=1), torch.tensor(0.05), atol=1e-6)


def test_freelb_init_and_projection():
    delta = torch.zeros(2, 3, 4)
    big = ascent_update(delta, torch.ones(2, 3, 4), 10.0, "example", max_norm=1.0)
    assert torch.allclose(big.flatten(1).norm(dim=1), torch.ones(2))


def test_holdout_split_is_seeded_and_disjoint():
    ex = _examples()
    rest, held = holdout_split(ex, 1000, seed=3)
    assert len(held) == len(ex) // 5 and len(rest) + len(held) == len(ex)
    assert holdout_split(ex, 1000, seed=3) == (rest, held)
    assert holdout_split(ex, 1000, seed=4)[1] != held


def test_imp_schedule():
    # official (LT_glue.py:371): round k removes 1/(10 - k) of the rest = 10%, 20%, ... overall
    s = imp_schedule(0.5, 0.1)
    assert s == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    remaining = 1.0
    for k, target in enumerate(s):
        remaining *= 1 - 1 / (10 - k)
        assert 1 - remaining == pytest.approx(target)
    assert imp_schedule(0.35, 0.1) == pytest.approx([0.1, 0.2, 0.3, 0.35])
    g = imp_schedule(0.5, 0.1, "geometric")
    assert len(g) == 7 and g[-1] == 0.5 and g[0] == pytest.approx(0.1)
    assert imp_schedule(0.0, 0.1) == []


# -- every new pruner end to end ---------------------------------------------------------------
TINY = {"batch_size": 16}
BUDGETS = {
    "rticket": {"mask_epochs": 2, "ticket_max_steps": 2, "adv_steps": 2, **TINY},
    "rticket_no_adv": {"mask_epochs": 1, "ticket_max_steps": 2, **TINY},
    "rticket_no_mask_learning": {"imp_rate_per_round": 0.3, "imp_max_steps": 2,
                                 "ticket_max_steps": 2, "adv_steps": 2, **TINY},
    "seven": {"max_steps": 8, "window_start": 2, "window_length": 4, **TINY},
    "randmask": {"num_candidates": 2, "candidate_max_steps": 4, "eval_every": 2,
                 "stage_max_steps": 4, "patience": 1, **TINY},
    "imp": {"rate_per_round": 0.3, "max_steps": 2, **TINY},
    "lth": {"rate_per_round": 0.3, "max_steps": 2, **TINY},
    "imp_freelb": {"rate_per_round": 0.3, "max_steps": 2, "adv_steps": 2, **TINY},
    "lth_freelb": {"rate_per_round": 0.3, "max_steps": 2, "adv_steps": 2, **TINY},
}  # fmt: skip


def _build(name: str, **extra):
    cfg = OmegaConf.load(CONF / "pruner" / f"{name}.yaml")
    return instantiate(cfg, **{**BUDGETS[name], **extra})


def _check_contract(model, pruner, masks, sparsity):
    params = prunable_params(model, pruner.scope)
    assert set(masks) == set(params)
    kept = total = 0
    for n, m in masks.items():
        assert m.dtype == torch.bool and m.shape == params[n].shape
        kept, total = kept + int(m.sum()), total + m.numel()
    assert abs((1 - kept / total) - sparsity) <= 0.01
    apply_masks(model, masks, permanent=True)
    assert measure_sparsity(model, pruner.scope) >= sparsity - 0.01


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_pruner_end_to_end(tiny, name):
    model, _tok, data = tiny
    pruner = _build(name)
    masks = pruner.prune(model, data, 0.5)
    _check_contract(model, pruner, masks, 0.5)
    assert isinstance(pruner.info, dict) and pruner.info


def test_rticket_records_selection_on_train_split(tiny):
    model, _tok, data = tiny
    pruner = _build("rticket_no_adv")
    pruner.prune(model, data, 0.5)
    sel = pruner.info["mask_learning"]["selection_split"]
    assert sel["from"] == "train" and sel["n_heldout"] == len(data.train) // 5


def test_randmask_stages_and_deterministic_baseline(tiny):
    model, _tok, data = tiny
    pruner = _build("randmask", deterministic=True)
    masks = pruner.prune(model, data, 0.6)  # stages 0.54 -> 0.6
    assert [s["sparsity"] for s in pruner.info["stages"]] == [0.54, 0.6]
    for n, m in masks.items():  # per matrix, uniform sparsity
        assert abs(1 - m.float().mean().item() - 0.6) < 0.01, n
    _check_contract(model, pruner, masks, 0.6)


@pytest.mark.parametrize("updates,step,remain", [("official", 4, 0.5 + 0.5 / 4**3),
                                                 ("exact", 5, 0.5)])  # fmt: skip
def test_seven_masks_are_final_at_window_end(tiny, updates, step, remain):
    """Window 2 + 4: the official code's 3 updates stop short of the target (utils.py:248),
    ``exact`` makes 4 and ends on it."""
    model, _tok, data = tiny
    pruner = _build("seven", window_updates=updates)
    pruner.prune(model, data, 0.5)
    assert pruner.info["schedule"][-1]["remain"] == pytest.approx(remain)
    assert pruner.info["schedule"][-1]["step"] == step


# -- dense recipes -----------------------------------------------------------------------------
def test_freelb_dense_recipe(tiny):
    model, tok, _data = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = instantiate(OmegaConf.load(CONF / "dense" / "freelb.yaml"), seed=0, max_steps=2,
                         batch_size=16, adv_steps=2)  # fmt: skip
    assert isinstance(recipe, FreeLBFineTune) and recipe.cache_config()["norm"] == "token"
    stats = recipe.fit(model, tok, _examples(), 32, torch.device("cpu"))
    assert stats["steps"] == 2
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("mode", ["uniform", "pairwise"])
def test_weight_average_recipe(tiny, mode):
    model, tok, _data = tiny
    recipe = WeightAverage(
        ingredients=[{"lr": 1e-3}, {"lr": 1e-4, "adversarial": True}, {"lr": 5e-4}],
        mode=mode, max_steps=2, batch_size=16, adv_steps=2, holdout_examples=20,
    )  # fmt: skip
    info = recipe.fit(model, tok, _examples(), 32, torch.device("cpu"))
    scores = [i["score"] for i in info["ingredients"]]
    assert info["kept"][0] == max(range(3), key=lambda i: scores[i])
    assert info["soup_score"] >= max(scores)
    assert info["selection_split"] == {"from": "train", "n_heldout": 19, "n_train": 77, "seed": 0}
    assert recipe.cache_config()["mode"] == mode


def test_average_states_uniform():
    a = {"w": torch.tensor([1.0, 3.0]), "ids": torch.tensor([1, 2])}
    b = {"w": torch.tensor([3.0, 5.0]), "ids": torch.tensor([1, 2])}
    out = average_states([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and torch.equal(out["ids"], a["ids"])
