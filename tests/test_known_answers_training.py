"""Known answers for the training-based pruners' defining steps that a broken implementation
could still pass (issue 27, "Tests that notice a broken step"):

- IMP continues every round from the weights the previous round trained (it never rewinds:
  rewinding every round would silently make it LTH);
- IMP's learning rate in every round: a fresh linear decay over the whole run's 10 rounds, as
  BERT-Tickets (``LT_glue.py:205``, ``:398-401``), so every round ends at 0.9 lr;
- RobustT's ticket fine-tunes 10 epochs (``stage3-draw-retrain_ticket.sh:9``), and under a step
  cap (``budget=reduced``) 10 or 3 epochs are the same computation;
- RobustT rewinds ALL weights, the classifier included, to the PRE-TRAINED model before the
  ticket's fine-tune;
- SEVEN's cubic schedule between its end points, in the function and in the masks it prunes;
  its official window (``window_length - 1`` updates, stopping short of the target) and its
  official classifier head (default ``nn.Linear`` init from the job seed, no dropout before
  it), which must round-trip through the pruned cache and be refused for other head layouts;
- randomized masks: the number of draws ``max(1, int((N - k) * ratio))``, the order of tied
  draw counts (larger |w| first), and the candidate score (mean of the last ``eval_last``
  held-out evaluations); and the official code's training: the Adam state carried from the
  previous phase's best checkpoint, distillation over sentences padded to ``max_length``,
  the ``val`` split of 20 x |dev| training examples, the last of tied checkpoints kept.

Every expected value is worked out by hand or from the PRE-TRAINED / trained states the test
records itself. Each test was checked by breaking its step on purpose and seeing it fail.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from test_defining_steps_training import prune_with_heldout_scores

from benchmark.data.tiny import tiny_splits
from benchmark.models.loading import build_tiny_bert
from benchmark.models.structure import prunable_linears
from benchmark.pruners import imp as imp_module
from benchmark.pruners import randmask as randmask_module
from benchmark.pruners import rticket as rticket_module
from benchmark.pruners import seven as seven_module
from benchmark.pruners.base import PruneData, apply_masks, measure_sparsity, prunable_params
from benchmark.pruners.randmask import RandMaskPruner, sample_mask
from benchmark.pruners.rticket import RobustTicketPruner
from benchmark.pruners.seven import SevenPruner, cubic_remain
from benchmark.training import loop as training
from benchmark.training.loop import set_metrics_sink

CONF = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """``make()`` builds the 'dense' tiny model (seed 1); PruneData's ``pretrained`` builds the
    'pre-trained' one (seed 0), so the two are told apart in every weight."""
    monkeypatch.setattr(training, "SHOW_PROGRESS", False)
    _, tok = build_tiny_bert(2, tmp_path / "dense", seed=1)
    data = PruneData(
        tokenizer=tok, train=[(t, int(y)) for t, y in tiny_splits()["train"]], max_length=32,
        device=torch.device("cpu"), seed=0,
        pretrained=lambda: build_tiny_bert(2, tmp_path / "pre", seed=0)[0],
    )  # fmt: skip

    def make():
        return build_tiny_bert(2, tmp_path / "dense", seed=1)[0]

    return make, data


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _record_finetunes(monkeypatch, module) -> dict[str, list]:
    """Wraps ``module.masked_finetune``: the model's state entering and leaving each call and
    the masks it was given."""
    seen: dict[str, list] = {"starts": [], "ends": [], "masks": []}
    orig = module.masked_finetune

    def recording(model, data, masks, cfg, *a, **kw):
        seen["starts"].append(_state(model))
        seen["masks"].append({n: m.clone() for n, m in masks.items()})
        out = orig(model, data, masks, cfg, *a, **kw)
        seen["ends"].append(_state(model))
        return out

    monkeypatch.setattr(module, "masked_finetune", recording)
    return seen


# ---------------------------------------------------------------- IMP (no rewinding)


def test_imp_continues_from_the_previous_rounds_weights(tiny, monkeypatch) -> None:
    make, data = tiny
    model = make()
    dense = _state(model)
    pre = data.pretrained().state_dict()
    seen = _record_finetunes(monkeypatch, imp_module)
    pruner = instantiate(OmegaConf.load(CONF / "pruner" / "imp.yaml"), max_steps=2, batch_size=16,
                         rate_per_round=0.3)  # fmt: skip
    masks = pruner.prune(model, data, 0.5)  # rounds at 30% and 50%
    assert len(seen["starts"]) == 2 and pruner.info["rewound_to"] is None
    # round 1 starts from the dense model as given, round 2 from what round 1 trained
    assert all(torch.equal(seen["starts"][0][k], v) for k, v in dense.items())
    assert all(torch.equal(seen["starts"][1][k], v) for k, v in seen["ends"][0].items())
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(seen["starts"][1][key], pre[key])  # not the pre-trained weights
    assert not torch.equal(seen["ends"][0][key], dense[key])  # round 1 really trained
    # round 2's masks: global magnitude over round 1's trained weights (its zeros lowest)
    trained = {f"{n}.weight": seen["ends"][0][f"{n}.weight"].abs()
               for n in prunable_linears(model, pruner.scope)}  # fmt: skip
    flat = torch.cat([w.flatten() for w in trained.values()])
    keep = flat.numel() - round(flat.numel() * 0.5)
    threshold = torch.sort(flat, descending=True).values[keep - 1]
    assert threshold > 0
    for n, w in trained.items():
        assert torch.equal(masks[n], w >= threshold), n
        assert torch.equal(seen["masks"][1][n], masks[n])


def _step_lrs(run) -> dict[str, list[float]]:
    """The learning rate of every optimiser step of ``run()``, by training phase (the loop
    reports every step of a loop under 500 steps; points without ``lr`` are a method's own)."""
    lrs: dict[str, list[float]] = {}

    def sink(metrics: dict[str, float], step: int, phase: str) -> None:
        if "lr" in metrics:
            lrs.setdefault(phase, []).append(metrics["lr"])

    set_metrics_sink(sink)
    try:
        run()
    finally:
        set_metrics_sink(None)
    return lrs


@pytest.mark.parametrize(("lr_schedule", "run_steps"), [(None, 30), ("to_target", 6)])
def test_imp_round_lr_decays_over_the_whole_run(tiny, lr_schedule, run_steps) -> None:
    """BERT-Tickets gives every round's fresh scheduler the whole run's t_total (10 rounds of
    ``save_steps``; ``LT_glue.py:205``, ``:398-401``), no warm-up: with 3 steps per round the
    decay spans 30 steps, so round steps 0, 1, 2 run at lr x 1, 29/30, 28/30 in EVERY round (and
    the next step would be 0.9 lr). ``to_target`` (the previous default): the 2 rounds to 20%,
    6 steps: lr x 1, 5/6, 4/6."""
    make, data = tiny
    over = {} if lr_schedule is None else {"lr_schedule": lr_schedule}
    pruner = instantiate(OmegaConf.load(CONF / "pruner" / "imp.yaml"), max_steps=3, batch_size=16,
                         **over)  # fmt: skip
    assert pruner.rate_per_round == 0.1 and pruner.train_kwargs["warmup_ratio"] == 0
    lrs = _step_lrs(lambda: pruner.prune(make(), data, 0.2))  # rounds at 10% and 20%
    assert sorted(lrs) == ["imp round 1", "imp round 2"]
    lr = pruner.train_kwargs["lr"]
    expected = [lr * (run_steps - i) / run_steps for i in range(3)]
    for phase, got in lrs.items():
        assert got == pytest.approx(expected, rel=1e-9, abs=0), phase


# ---------------------------------------------------------------- RobustT's ticket


def test_rticket_ticket_is_rewound_to_the_pretrained_model(tiny, monkeypatch) -> None:
    make, data = tiny
    model = make()
    pre = _state(data.pretrained())
    dense = _state(model)
    seen = _record_finetunes(monkeypatch, rticket_module)
    pruner = RobustTicketPruner(adversarial=False, mask_max_steps=2, ticket_max_steps=1,
                                batch_size=16, holdout_examples=16, mask_epoch="last",
                                lambda_amp=0.0)  # fmt: skip
    masks = pruner.prune(model, data, 0.5)
    (start,) = seen["starts"]
    assert set(start) == set(pre)
    for k, v in pre.items():  # every weight, the classifier head included
        assert torch.equal(start[k], v), k
    assert not torch.equal(dense["classifier.weight"], pre["classifier.weight"])
    assert all(torch.equal(seen["masks"][0][n], m) for n, m in masks.items())


def _rticket(**over):
    """The ``rticket`` option file with a cheap mask search (CE, 1 step) on the tiny data."""
    cheap = {"adversarial": False, "mask_max_steps": 1, "holdout_examples": 16,
             "mask_epoch": "last", "max_train_examples": 24, "batch_size": 8}  # fmt: skip
    return instantiate(OmegaConf.load(CONF / "pruner" / "rticket.yaml"), **{**cheap, **over})


def test_rticket_ticket_fine_tunes_ten_epochs(tiny) -> None:
    """``epoch=10`` of the stage-3 script (stage3-draw-retrain_ticket.sh:9): 24 examples in
    batches of 8 are 3 steps an epoch, so 30 ticket steps, and the schedule spans them: 10%
    warm-up (3 steps: lr x 0, 1/3, 2/3), then lr x (30 - i) / 27 down to lr / 27 at step 29.
    The previous default, 3 epochs, would be 9 steps."""
    make, data = tiny
    pruner = _rticket()
    assert pruner.ticket["epochs"] == 10 and pruner.ticket["max_steps"] is None
    lrs = _step_lrs(lambda: pruner.prune(make(), data, 0.5))
    ticket = lrs["rticket ticket fine-tune"]
    assert pruner.info["ticket"]["steps"] == len(ticket) == 30
    lr = pruner.ticket["lr"]
    expected = [lr * i / 3 for i in range(3)] + [lr * (30 - i) / 27 for i in range(3, 30)]
    assert ticket == pytest.approx(expected, rel=1e-9, abs=1e-20)


def test_rticket_ticket_epochs_change_nothing_under_a_step_cap(tiny) -> None:
    """``budget=reduced`` caps the ticket at ``ticket_max_steps``, which is also its schedule's
    length: 10 epochs (official) and 3 (the previous default) give the same weights and masks,
    bit for bit."""
    make, data = tiny
    out = {}
    for epochs in (10, 3):
        model = make()
        torch.manual_seed(0)  # dropout draws from the global generator (a job seeds it once)
        pruner = _rticket(ticket_epochs=epochs, ticket_max_steps=4)
        masks = pruner.prune(model, data, 0.5)
        out[epochs] = (masks, _state(model), pruner.info["ticket"]["steps"])
    (m10, s10, n10), (m3, s3, n3) = out[10], out[3]
    assert n10 == n3 == 4
    assert all(torch.equal(m10[n], m3[n]) for n in m10)
    assert set(s10) == set(s3) and all(torch.equal(s10[k], s3[k]) for k in s10)


# ---------------------------------------------------------------- SEVEN's cubic schedule


def test_seven_cubic_schedule_between_the_end_points() -> None:
    # remain(i) = keep + (1 - keep) (1 - (i + 1) / L)^3, by hand
    assert cubic_remain(0, 4, 0.5) == pytest.approx(0.5 + 0.5 * 27 / 64)  # 0.7109375
    assert cubic_remain(1, 4, 0.5) == pytest.approx(0.5625)
    assert cubic_remain(2, 4, 0.5) == pytest.approx(0.5078125)
    assert cubic_remain(4, 10, 0.2) == pytest.approx(0.3)  # halfway: 0.2 + 0.8 / 8
    assert cubic_remain(1, 10, 0.2) == pytest.approx(0.2 + 0.8 * 0.512)


def _record_topk(monkeypatch) -> list[tuple[float, int]]:
    """Wraps SEVEN's global top-k: (sparsity asked, weights kept) of every mask update."""
    kept: list[tuple[float, int]] = []
    orig = seven_module.global_topk_masks

    def recording(scores, sparsity):
        out = orig(scores, sparsity)
        kept.append((sparsity, sum(int(m.sum()) for m in out.values())))
        return out

    monkeypatch.setattr(seven_module, "global_topk_masks", recording)
    return kept


def test_seven_prunes_along_the_cubic_schedule(tiny, monkeypatch) -> None:
    make, data = tiny
    kept = _record_topk(monkeypatch)
    pruner = SevenPruner(max_steps=8, window_start=2, window_length=4, batch_size=16,
                         window_updates="exact")  # fmt: skip
    model = make()
    n = sum(p.numel() for p in prunable_params(model, pruner.scope).values())
    masks = pruner.prune(model, data, 0.5)
    # after window update i the kept fraction is remain(i): 0.7109375, 0.5625, 0.5078125, 0.5
    remain = [0.7109375, 0.5625, 0.5078125, 0.5]
    assert [s for s, _ in kept] == pytest.approx([1 - r for r in remain])
    assert [k for _, k in kept] == [n - round(n * (1 - r)) for r in remain]
    assert sum(int(m.sum()) for m in masks.values()) == n // 2


def test_seven_official_window_stops_one_update_short(tiny, monkeypatch) -> None:
    """``window_updates: official`` (utils.py:248): window_length 4 -> 3 updates (steps 2, 3,
    4), the schedule's denominator still 4, so the masks end at remain(2) = 0.5 + 0.5 / 4^3
    and stay there: the recorded sparsity is below the target."""
    make, data = tiny
    kept = _record_topk(monkeypatch)
    pruner = SevenPruner(max_steps=8, window_start=2, window_length=4, batch_size=16)
    assert pruner.window_updates == "official"
    model = make()
    n = sum(p.numel() for p in prunable_params(model, pruner.scope).values())
    masks = pruner.prune(model, data, 0.5)
    remain = [0.5 + 0.5 * 27 / 64, 0.5 + 0.5 * 8 / 64, 0.5 + 0.5 / 64]  # by hand
    assert [s for s, _ in kept] == pytest.approx([1 - r for r in remain])
    assert [k for _, k in kept] == [n - round(n * (1 - r)) for r in remain]
    final = n - round(n * (1 - 0.5078125))
    assert final > n // 2  # never reaches the target
    assert sum(int(m.sum()) for m in masks.values()) == final
    assert pruner.info["window"] == [2, 5] and pruner.info["window_updates"] == 3
    assert [h["step"] for h in pruner.info["schedule"]][-1] == 4
    apply_masks(model, masks, permanent=True)  # what the pipeline records as sparsity_actual
    assert measure_sparsity(model, pruner.scope) == pytest.approx(1 - final / n)


def _expected_official_head(seed: int, n_out: int, hidden: int):
    """nn.Linear's default draw, written out: weight then bias, each uniform in
    +-1/sqrt(hidden), from a CPU generator seeded with the job seed."""
    gen = torch.Generator().manual_seed(seed)
    bound = 1 / math.sqrt(hidden)
    weight = (torch.rand(n_out, hidden, generator=gen) * 2 - 1) * bound
    bias = (torch.rand(n_out, generator=gen) * 2 - 1) * bound
    return weight, bias


def test_seven_official_head(tiny, monkeypatch) -> None:
    """``head: official`` (model.py:39, :52): the classifier entering the fine-tune is a fresh
    default-initialised linear drawn from the job seed (0 here), and it reads the pooler output
    itself (no dropout) at every training step; the dropout module is back afterwards."""
    make, data = tiny
    model = make()
    dropout = model.dropout
    assert isinstance(dropout, torch.nn.Dropout) and dropout.p > 0
    seen: dict[str, object] = {}
    pooled: list[torch.Tensor] = []
    fed: list[torch.Tensor] = []
    orig_train = seven_module.train

    def recording(net, *args, **kwargs):
        seen["weight"] = net.classifier.weight.detach().clone()
        seen["bias"] = net.classifier.bias.detach().clone()
        hooks = [
            net.bert.pooler.register_forward_hook(lambda m, i, o: pooled.append(o.detach())),
            net.classifier.register_forward_hook(lambda m, i, o: fed.append(i[0].detach())),
        ]
        try:
            return orig_train(net, *args, **kwargs)
        finally:
            for h in hooks:
                h.remove()

    monkeypatch.setattr(seven_module, "train", recording)
    pruner = SevenPruner(max_steps=3, window_start=0, window_length=3, batch_size=16)
    assert pruner.head == "official"
    pruner.prune(model, data, 0.5)
    weight, bias = _expected_official_head(data.seed, 2, 32)
    assert torch.allclose(seen["weight"], weight, rtol=0, atol=1e-6)
    assert torch.allclose(seen["bias"], bias, rtol=0, atol=1e-6)
    assert float(seen["bias"].abs().min()) > 0  # not the Hugging Face head (bias 0)
    assert len(fed) == len(pooled) == 3
    assert all(torch.equal(a, b) for a, b in zip(fed, pooled, strict=True))  # no dropout
    assert model.dropout is dropout  # the module tree as it was


def test_seven_official_head_round_trips_through_the_pruned_cache(tiny, tmp_path) -> None:
    """The pruned model with the official head stores and loads as the pipeline does
    (pruned/<key>/weights.pt) into a fresh model of the same class, with the same logits."""
    from benchmark.jobs.pipeline import _load_pruned, _store_pruned

    make, data = tiny
    model = make()
    pruner = SevenPruner(max_steps=4, window_start=1, window_length=3, batch_size=16)
    masks = pruner.prune(model, data, 0.5)
    apply_masks(model, masks, permanent=True)
    model.eval()
    folder = tmp_path / "pruned" / "key"
    _store_pruned(folder, model, {"seconds": 1.0, "method": pruner.info})
    fresh = make()
    assert _load_pruned(folder, fresh, torch.device("cpu")) is not None
    assert set(fresh.state_dict()) == set(model.state_dict())
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    enc = data.tokenizer(["the movie was good", "bad"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(fresh.eval()(**enc).logits, model(**enc).logits)


@pytest.mark.parametrize("kind", ["distilbert", "roberta", "deberta"])
def test_seven_official_head_is_refused_for_other_heads(kind, tmp_path) -> None:
    """No pooler -> dropout -> linear classifier: ``head: official`` stops with the key named,
    before the pre-trained model loads, in ``prune`` and in the config check; ``hf`` passes."""
    from benchmark.errors import UserError
    from benchmark.jobs.validate import check_pruner_model
    from benchmark.models.loading import build_tiny

    model, tok = build_tiny(kind, 2, tmp_path)

    def never():
        raise AssertionError("the pre-trained model must not load")

    data = PruneData(tokenizer=tok, train=[("good", 1)] * 64, max_length=32,
                     device=torch.device("cpu"), seed=0, pretrained=never)  # fmt: skip
    with pytest.raises(UserError, match=r"pruner\.head=official .*pruner\.head=hf"):
        SevenPruner(max_steps=2, window_start=0, window_length=2).prune(model, data, 0.5)
    target = {"_target_": "benchmark.pruners.seven.SevenPruner"}
    resolved = {"model": {"pretrained": f"tiny:{kind}"}, "pruner": {**target, "head": "official"}}
    with pytest.raises(UserError, match=r"pruner\.head=official"):
        check_pruner_model(resolved)
    check_pruner_model({**resolved, "pruner": {**target, "head": "hf"}})
    check_pruner_model({**resolved, "model": {"pretrained": "tiny"}})


# ---------------------------------------------------------------- randomized masks


# (N - k) * ratio with N = 200, k = 100, and the number of draws max(1, int(.)), by hand
DRAWS = {0.035: 3, 1e-4: 1, 0.047: 4}  # 3.5 -> 3, 0.01 -> 1, 4.7 -> 4


@pytest.mark.parametrize("ratio", sorted(DRAWS))
def test_randmask_number_of_draws(ratio: float) -> None:
    """Each draw takes one uniform vector of N numbers from the generator: the generator's
    state after the call tells how many draws were made."""
    weight = torch.linspace(0.1, 2.0, 200).reshape(10, 20)
    gen = torch.Generator().manual_seed(11)
    sample_mask(weight, 100, ratio, generator=gen)
    ref = torch.Generator().manual_seed(11)
    for _ in range(DRAWS[ratio]):
        torch.rand(200, generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())


def test_randmask_candidates_cycle_through_the_ratios(tiny) -> None:
    """Candidate c draws with ratio ``ratios[c % len(ratios)]`` in every matrix."""
    make, _ = tiny
    model = make()
    pruner = RandMaskPruner(num_candidates=3, ratios=(0.01, 0.02))
    gen = torch.Generator().manual_seed(5)
    pruner.candidates(model, 0.5, gen)
    ref = torch.Generator().manual_seed(5)
    for ratio in (0.01, 0.02, 0.01):
        for p in prunable_params(model, pruner.scope).values():
            n = p.numel()
            k = n - round(n * 0.5)
            for _ in range(max(1, int((n - k) * ratio))):
                torch.rand(n, generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())


def test_randmask_most_drawn_first_ties_by_larger_magnitude(monkeypatch) -> None:
    """Two draws of 3 of 6 weights, fixed by the uniforms: draw 1 takes {0, 4, 5}, draw 2
    {0, 1, 3}. Counts: weight 0 twice, 1, 3, 4, 5 once, 2 never. Keep 0, then the two largest
    |w| among the once-drawn (4: 0.8, 5: 0.7), not the first by position (1, 3) nor weight 2,
    the largest |w| but never drawn."""
    weight = torch.tensor([0.5, 0.55, 0.9, 0.6, 0.8, 0.7])
    high, low = 1 - 1e-7, 1e-12  # Gumbel noise +16.1 / -3.3: far beyond 5 log|w| differences
    draws = iter([[high if i in chosen else low for i in range(6)]
                  for chosen in ({0, 4, 5}, {0, 1, 3})])  # fmt: skip

    def fake_rand(n, generator=None, device=None):
        return torch.tensor(next(draws), device=device)

    monkeypatch.setattr(torch, "rand", fake_rand)
    mask = sample_mask(weight, 3, 0.7)  # int((6 - 3) * 0.7) = 2 draws
    assert mask.tolist() == [True, False, False, False, True, True]


def test_randmask_candidate_score_is_the_mean_of_the_last_evaluations(tiny, monkeypatch) -> None:
    """Three held-out evaluations per candidate, score = mean of the last two: 0.4, 0.5, 0.45,
    so candidate 1 is chosen (the last evaluation alone would choose 0, the mean of all three
    0, the best of the last two 2)."""
    plan = {0: [0.9, 0.2, 0.6], 1: [0.1, 0.5, 0.5], 2: [0.3, 0.7, 0.2]}
    pruner, masks, recorded = prune_with_heldout_scores(
        tiny, monkeypatch, plan, candidate_max_steps=6, stage_max_steps=1
    )
    stage = pruner.info["stages"][0]
    assert stage["candidate_scores"] == pytest.approx([0.4, 0.5, 0.45])
    assert stage["chosen"] == 1
    assert all(torch.equal(masks[n], recorded[1][n]) for n in masks)


# ---------------------------------------------------------------- randomized masks: official
# code's training (issue 27, "official-code differences"; docs/methods/training_based.md)

QUERY = "bert.encoder.layer.0.attention.self.query.weight"  # prunable: masked in the stage


def _scripted_accuracy(monkeypatch, values: list[float], default: float = 0.5) -> list[dict]:
    """Held-out "accuracy" taken from ``values`` in order (then ``default``); returns the list
    of (the model's state, the examples evaluated) at each evaluation."""
    seen: list[dict] = []
    queue = list(values)

    def fake_accuracy(model, tokenizer, examples, *args, **kwargs):
        seen.append({"state": _state(model), "examples": list(examples)})
        return queue.pop(0) if queue else default

    monkeypatch.setattr(randmask_module, "accuracy", fake_accuracy)
    return seen


def test_randmask_candidates_and_stage_continue_the_best_checkpoints_adam_state(
    tiny, monkeypatch
) -> None:
    """Dense distillation 2 steps, evaluated after each: 0.6 then 0.5, so its best checkpoint
    is step 1. Each candidate (2, one step each) and the full stage (one step) start from that
    checkpoint's Adam state (utils_randomness.py:185; experiment_soups_quickcall.py:176-179,
    :233-236), so their first step is Adam's SECOND: step count 2, m = 0.9 m1 + 0.1 g and
    v = 0.999 v1 + 0.001 g^2 with (m1, v1) the state after dense step 1 (not after step 2,
    the last, and not a fresh optimiser's m = 0.1 g at step 1)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    make, data = tiny
    model = make()
    _scripted_accuracy(monkeypatch, [0.6, 0.5])
    after: list[dict[str, torch.Tensor]] = []  # Adam's state of QUERY after every step

    def post(opt, args, kwargs):
        for n, p in model.named_parameters():
            if n.removesuffix("_orig") == QUERY:
                st = opt.state[p]
                after.append({"step": float(st["step"]), "m": st["exp_avg"].clone(),
                              "v": st["exp_avg_sq"].clone(), "g": p.grad.clone()})  # fmt: skip

    handle = register_optimizer_step_post_hook(post)
    try:
        pruner = RandMaskPruner(num_candidates=2, candidate_max_steps=1, stage_max_steps=1,
                                dense_max_steps=2, eval_every=1, batch_size=16,
                                holdout_examples=20, warmup_ratio=0.0)  # fmt: skip
        pruner.prune(model, data, 0.5)  # one stage: dense 2 steps, 2 candidates, stage
    finally:
        handle.remove()
    assert pruner.info["dense_distillation"]["best_step"] == 1
    assert len(after) == 5
    assert [a["step"] for a in after[:2]] == [1.0, 2.0]
    best = after[0]
    for later in after[2:]:  # candidate 0, candidate 1, the full stage
        g = later["g"]
        assert later["step"] == 2.0
        torch.testing.assert_close(later["m"], 0.9 * best["m"] + 0.1 * g)
        torch.testing.assert_close(later["v"], 0.999 * best["v"] + 0.001 * g * g)
        assert not torch.allclose(later["m"], 0.1 * g)  # what a fresh optimiser would hold


def test_randmask_fresh_optimiser_state_is_the_previous_behaviour(tiny, monkeypatch) -> None:
    """``optimizer_state: fresh``: every phase's first step is Adam's first (m = 0.1 g)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    make, data = tiny
    model = make()
    _scripted_accuracy(monkeypatch, [0.6, 0.5])
    steps: list[float] = []
    handle = register_optimizer_step_post_hook(
        lambda opt, a, k: steps.append(float(next(iter(opt.state.values()))["step"]))
    )
    try:
        RandMaskPruner(num_candidates=2, candidate_max_steps=1, stage_max_steps=1,
                       dense_max_steps=2, eval_every=1, batch_size=16, holdout_examples=20,
                       optimizer_state="fresh").prune(model, data, 0.5)  # fmt: skip
    finally:
        handle.remove()
    assert steps == [1.0, 2.0, 1.0, 1.0, 1.0]


def _manual_distillation(student, teacher, enc) -> float:
    """The loss by hand: per layer sum((s - t)^2) / numel for hidden states and attention maps,
    plus sum(-p log q) / (batch x classes)."""
    with torch.no_grad():
        s = student(**enc, output_hidden_states=True, output_attentions=True)
        t = teacher(**enc, output_hidden_states=True, output_attentions=True)
    total = 0.0
    pairs = [*zip(s.hidden_states, t.hidden_states, strict=True),
             *zip(s.attentions, t.attentions, strict=True)]  # fmt: skip
    for a, b in pairs:
        total += float(((a - b) ** 2).sum()) / a.numel()
    p = torch.softmax(t.logits, -1)
    total += float((-p * torch.log_softmax(s.logits, -1)).sum()) / s.logits.numel()
    return total


def test_randmask_distillation_pads_every_sentence_to_max_length(tiny) -> None:
    """The code pads every sentence to the task's fixed length (data_processing.py:480-483)
    and its MSEs average over all those positions (utils_randomness.py:89-95): the step's
    loss on a batch padded to its longest equals the hand-computed loss on the same sentences
    tokenized to 32 positions, and differs from the loss over the longest's positions (the
    previous ``distill_padding: longest``, reproduced by that option)."""
    make, data = tiny
    teacher, student = make().eval(), make().eval()
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    texts = [t for t, _ in data.train[:6]]
    tok = data.tokenizer
    longest = training.encode(tok, texts, 32, torch.device("cpu"))
    assert longest["input_ids"].shape[1] < 32  # the fixture pads less than max_length
    fixed = tok(texts, padding="max_length", max_length=32, truncation=True, return_tensors="pt")
    expect_fixed = _manual_distillation(student, teacher, dict(fixed))
    expect_longest = _manual_distillation(student, teacher, dict(longest))
    assert abs(expect_fixed - expect_longest) > 1e-3 * expect_longest
    batch = {**longest, "labels": torch.zeros(len(texts), dtype=torch.long)}
    for padding, expect in (("max_length", expect_fixed), ("longest", expect_longest)):
        step = RandMaskPruner(distill_padding=padding)._step_fn(teacher, data)
        student.zero_grad()
        assert float(step(student, batch)) == pytest.approx(expect, rel=1e-5), padding


def test_randmask_official_val_split_and_its_config(tiny, monkeypatch) -> None:
    """The code keeps 20 x |dev| training examples out as ``val`` (SST-2: 20 x 872 = 17,440,
    experiment_soups_quickcall.py:360-363) and trains on the rest. On the 96 tiny training
    examples ``val_examples: 40`` keeps 40 out (not the previous fifth, 19): training sees
    only the other 56, evaluations only held-out ones (``heldout_eval_examples: 10`` of
    them). At most half the split is kept out (60 -> 48)."""
    from collections import Counter

    from test_budgets import _compose

    sst2 = _compose("pruner=randmask").pruner
    assert sst2.val_examples == 20 * 872 and sst2.heldout_eval_examples is None
    reduced = _compose("pruner=randmask", "budget=reduced").pruner
    assert reduced.val_examples == 17440 and reduced.heldout_eval_examples == 256
    assert _compose("pruner=randmask", "dataset=agnews").pruner.val_examples is None

    make, data = tiny
    train = list(data.train)
    assert len(train) == 96
    rest, held, evaluated, split = RandMaskPruner(
        val_examples=40, heldout_eval_examples=10
    ).selection_split(train, 0)
    assert (len(rest), len(held), len(evaluated)) == (56, 40, 10)
    assert Counter(rest) + Counter(held) == Counter(train)  # a partition of the split
    assert not Counter(evaluated) - Counter(held)
    assert split["n_heldout"] == 40 and split["n_train"] == 56
    assert len(RandMaskPruner(val_examples=60).selection_split(train, 0)[1]) == 48
    assert len(RandMaskPruner(val_examples=None).selection_split(train, 0)[1]) == 96 // 5

    # end to end: what the loops train on and what the evaluations look at
    seen = _scripted_accuracy(monkeypatch, [])
    trained: list[list] = []
    orig_train, orig_finetune = randmask_module.train, randmask_module.masked_finetune

    def train_spy(model, tokenizer, examples, *a, **kw):
        trained.append(list(examples))
        return orig_train(model, tokenizer, examples, *a, **kw)

    def finetune_spy(model, data_, masks, cfg, step_fn, desc, examples, **kw):
        trained.append(list(examples))
        return orig_finetune(model, data_, masks, cfg, step_fn, desc, examples, **kw)

    monkeypatch.setattr(randmask_module, "train", train_spy)
    monkeypatch.setattr(randmask_module, "masked_finetune", finetune_spy)
    pruner = RandMaskPruner(num_candidates=2, candidate_max_steps=2, stage_max_steps=2,
                            dense_max_steps=2, eval_every=1, batch_size=16, val_examples=40,
                            heldout_eval_examples=10)  # fmt: skip
    pruner.prune(make(), data, 0.5)
    assert len(trained) == 4 and all(Counter(t) == Counter(rest) for t in trained)
    assert seen and all(Counter(s["examples"]) == Counter(evaluated) for s in seen)
    assert pruner.info["selection_split"]["n_heldout"] == 40


@pytest.mark.parametrize(
    ("patience", "tie_rule", "best_step", "steps"),
    [(3, "last", 4, 5), (3, "first", 2, 5), (2, "last", 2, 4)],
)
def test_randmask_ties_keep_the_last_checkpoint(tiny, monkeypatch, patience, tie_rule,
                                                best_step, steps) -> None:  # fmt: skip
    """Held-out accuracies 0.5, 0.7, 0.6, 0.7, 0.7, 0.65 after steps 1-6. The code saves
    whenever an evaluation equals the best after ``EarlyStopping.step`` (utils_randomness.py
    :164-185), which counts a tie as bad (:404-408) and stops at ``patience`` bad ones without
    saving. Patience 3: bad at steps 3, 4, 5, stop at 5; the tie at step 4 is saved, the one
    at 5 (the stop) is not: step 4 kept (``first``: step 2). Patience 2: stop at step 4, the
    tie there not saved: step 2."""
    make, data = tiny
    model = make()
    seen = _scripted_accuracy(monkeypatch, [0.5, 0.7, 0.6, 0.7, 0.7, 0.65])
    pruner = RandMaskPruner(dense_max_steps=6, eval_every=1, patience=patience, batch_size=16,
                            tie_rule=tie_rule)  # fmt: skip
    info = pruner.distill_dense(model, data, imp_module.copy_model(model), data.train[:60],
                                data.train[60:80])  # fmt: skip
    assert (info["best_step"], info["train_steps"]) == (best_step, steps)
    assert info["best_heldout_acc"] == pytest.approx(0.7)
    kept = seen[best_step - 1]["state"]
    assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())
    assert not torch.equal(seen[1]["state"][QUERY], seen[3]["state"][QUERY])  # really differ
