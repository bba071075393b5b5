"""Defining steps of the training-based pruners, each checked so that removing or replacing the
step makes a test fail (every one was broken on purpose once; see docs/methods/training_based.md):

- RobustT: the adversarial (FreeLB) loss is what changes the mask scores; the official L0 ramp.
- SEVEN: the importance scores ACCUMULATE over the window's steps.
- Randomized masks: the stage keeps the candidate with the best held-out score.
- LTH: each round rewinds the body to the PRE-TRAINED weights and keeps the trained head.
Plus the official-code settings they rest on (shared loop clipping and schedules, the dense
held-out part, soft cross-entropy reduction, dense FreeLB's frozen embeddings).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmark.data.tiny import tiny_splits
from benchmark.jobs.registry import build
from benchmark.models.loading import build_tiny_bert
from benchmark.models.structure import prunable_linears
from benchmark.pruners import imp as imp_module
from benchmark.pruners import randmask as randmask_module
from benchmark.pruners import seven as seven_module
from benchmark.pruners.base import PruneData
from benchmark.pruners.randmask import RandMaskPruner, distillation_loss
from benchmark.pruners.rticket import LOG_ALPHA_INIT, RobustTicketPruner, lambda_schedule
from benchmark.training import loop as training
from benchmark.training.dense import dense_key, dense_train_examples
from benchmark.training.loop import TrainConfig, holdout_split, make_scheduler, train

CONF = Path(__file__).resolve().parents[1] / "conf"


def _examples() -> list[tuple[str, int]]:
    return [(t, int(y)) for t, y in tiny_splits()["train"]]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """``make()`` builds a fresh copy of the same 'dense' tiny model (seed 1); PruneData
    rewinds to the 'pre-trained' one (seed 0)."""
    monkeypatch.setattr(training, "SHOW_PROGRESS", False)
    _, tok = build_tiny_bert(2, tmp_path / "dense", seed=1)
    data = PruneData(
        tokenizer=tok, train=_examples(), max_length=32, device=torch.device("cpu"), seed=0,
        pretrained=lambda: build_tiny_bert(2, tmp_path / "pre", seed=0)[0],
    )  # fmt: skip

    def make():
        return build_tiny_bert(2, tmp_path / "dense", seed=1)[0]

    return make, data


# -- RobustT -----------------------------------------------------------------------------------
def _no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Dropout off, so repeated forward passes on the same input give the same gradient."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout_prob"):
            m.dropout_prob = 0.0
    return model


def _scores(make, data, **kw) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    pruner = RobustTicketPruner(
        mask_max_steps=3, batch_size=16, mask_epoch="last", lambda_amp=0.0, mask_lr=0.5,
        scope="encoder_linear", **kw,
    )  # fmt: skip
    return pruner.learn_scores(_no_dropout(make()), data)


def test_rticket_adversarial_loss_changes_the_mask_scores(tiny):
    make, data = tiny
    # Both runs make 3 forward/backward passes per batch from delta = 0 with the same gate noise
    # (seeded generator) and no dropout; ``still`` never moves delta (step size 0), so it is
    # cross-entropy averaged over 3 gate samples. The ascent on delta is the only difference.
    adv = _scores(make, data, adversarial=True, adv_steps=3, adv_lr=0.5, adv_init_mag=0.0)
    still = _scores(make, data, adversarial=True, adv_steps=3, adv_lr=0.0, adv_init_mag=0.0)
    again = _scores(make, data, adversarial=True, adv_steps=3, adv_lr=0.0, adv_init_mag=0.0)
    ce = _scores(make, data, adversarial=False)
    for n in ce:
        assert not torch.allclose(ce[n], torch.full_like(ce[n], LOG_ALPHA_INIT))  # scores train
        assert torch.equal(still[n], again[n]), n  # deterministic: differences are real
    diff = max(float((adv[n] - still[n]).abs().max()) for n in ce)
    assert diff > 1e-3, "the adversarial perturbation did not change the mask scores"
    assert max(float((adv[n] - ce[n]).abs().max()) for n in ce) > 1e-3


def test_rticket_official_clip_scope_accumulates_frozen_gradients(tiny):
    """clip_scope=official: the BERT weights' gradients are never zeroed (search_ticket.py:214,
    :276) and enter the clipped norm, so the clipped task gradient of the scores is smaller than
    with ``scores`` (the unclipped L0 term then weighs more against it)."""
    make, data = tiny
    ours = _scores(make, data, adversarial=False, grad_clip=1e-3)
    official = _scores(make, data, adversarial=False, grad_clip=1e-3, clip_scope="official")
    moved = {k: sum(float((s[n] - LOG_ALPHA_INIT).abs().sum()) for n in s)
             for k, s in (("ours", ours), ("official", official))}  # fmt: skip
    assert 0 < moved["official"] < moved["ours"]


def test_rticket_official_l0_ramp():
    """search_ticket.py:216 adds 3 (dict keys) per batch before :279-282 compute the ratio."""
    cfg = OmegaConf.load(CONF / "pruner" / "rticket.yaml")
    epochs, per_epoch = 20, 2105
    total = epochs * per_epoch
    for i in range(0, total, 97):
        processed = 3 * (i + 1)
        official = max(
            0, min(1, (processed - 0.1 * epochs * per_epoch) / (0.3 * epochs * per_epoch))
        )
        ours = lambda_schedule(i + 1, total, cfg.lambda_startup, cfg.lambda_warmup, 1.0)
        assert ours == pytest.approx(official, abs=1e-9), i
    assert lambda_schedule(int(0.134 * total), total, cfg.lambda_startup, cfg.lambda_warmup, 1) == 1


def test_rticket_selection_data_is_left_out_of_the_dense_training(tiny):
    _make, data = tiny
    pruner = instantiate(OmegaConf.load(CONF / "pruner" / "rticket.yaml"))
    hold = pruner.dense_holdout
    assert hold == {"n_holdout": 1000, "seed": 0}
    dense_seen = dense_train_examples(data.train, hold)
    _rest, held = holdout_split(data.train, hold["n_holdout"], hold["seed"])
    assert held and not set(held) & set(dense_seen)
    assert len(dense_seen) + len(held) == len(data.train)
    assert dense_train_examples(data.train, None) == list(data.train)

    # the held-out part is part of the dense cache key; no held-out part keeps the old key
    class _Recipe:
        def cache_config(self):
            return {"recipe": "x"}

    class _Spec:
        name, max_length, train_split, num_labels = "d", 32, "train", 2

    @dataclasses.dataclass
    class _Model:
        name: str = "m"

    base = dense_key(_Model(), _Spec(), _Recipe())
    assert dense_key(_Model(), _Spec(), _Recipe(), None) == base
    assert dense_key(_Model(), _Spec(), _Recipe(), hold) != base
    assert dense_key(_Model(), _Spec(), _Recipe(), {"n_holdout": 1000, "seed": 1}) != dense_key(
        _Model(), _Spec(), _Recipe(), hold
    )


# -- SEVEN -------------------------------------------------------------------------------------
def test_seven_scores_accumulate_over_the_window(tiny, monkeypatch):
    make, data = tiny
    snapshots: list[dict[str, torch.Tensor]] = []
    increments: list[dict[str, torch.Tensor]] = []
    Base = seven_module.SevenScore

    class Recording(Base):
        def update(self, weights, grads, masks):
            before = {n: s.clone() for n, s in self.score.items()}
            super().update(weights, grads, masks)
            # this step's own increment, from the formula, for the weights kept before it
            t = self.updates
            inc = {}
            for n, g in grads.items():
                m_hat = self.m[n] / (1 - self.beta1**t)
                v_hat = (self.v[n] / (1 - self.beta2**t)).sqrt() + 1e-9
                inc[n] = (weights[n] * g * m_hat / v_hat).abs() * masks[n]
            increments.append(inc)
            snapshots.append({n: s.clone() for n, s in self.score.items()})
            for n in self.score:  # unpruned weights never lose score
                keep = masks[n]
                assert (self.score[n][keep] >= before[n][keep] - 1e-7).all()

    monkeypatch.setattr(seven_module, "SevenScore", Recording)
    pruner = seven_module.SevenPruner(max_steps=8, window_start=2, window_length=4,
                                      batch_size=16)  # fmt: skip
    pruner.prune(make(), data, 0.5)
    assert len(snapshots) == 3  # window_updates=official: window_length - 1 updates
    # the final score of a still-kept weight is the SUM of its per-step increments
    name = max(snapshots[-1], key=lambda n: int((snapshots[-1][n] > 0).sum()))
    kept = snapshots[-1][name] > 0
    assert kept.sum() > 10
    total = sum(inc[name] for inc in increments)
    assert torch.allclose(snapshots[-1][name][kept], total[kept], rtol=1e-5, atol=1e-9)
    assert not torch.allclose(snapshots[-1][name][kept], increments[-1][name][kept])


def test_seven_official_settings():
    cfg = OmegaConf.load(CONF / "pruner" / "seven.yaml")
    p = instantiate(cfg)
    assert p.beta2 == 0.8 and p.schedule == "constant" and p.scope == "encoder_linear+pooler"
    assert p.train_kwargs["grad_clip"] is None
    assert p.head == "official" and p.window_updates == "official" and p.version == 3


# -- randomized masks --------------------------------------------------------------------------
def prune_with_heldout_scores(tiny, monkeypatch, plan: dict[int, list[float]], **kw):
    """RandMask on the tiny model with its held-out "accuracy" faked: candidate ``c``'s i-th
    evaluation returns ``plan[c][i]`` (its last value once the list runs out); (pruner, masks,
    the candidates in the order they were drawn)."""
    make, data = tiny
    model = make()
    first = next(iter(prunable_linears(model).values()))
    recorded: list[dict[str, torch.Tensor]] = []
    orig_candidates = RandMaskPruner.candidates

    def candidates(self, model, sparsity, gen):
        out = orig_candidates(self, model, sparsity, gen)
        recorded.extend(out)
        return out

    calls = dict.fromkeys(plan, 0)

    def fake_accuracy(net, *args, **kwargs):
        mask = getattr(first, "weight_mask", None)
        if mask is None or len(recorded) < 3:
            return 0.5
        for c, cand in enumerate(recorded[:3]):
            if torch.equal(mask.bool(), next(iter(cand.values()))):
                i = calls[c]
                calls[c] += 1
                return plan[c][min(i, len(plan[c]) - 1)]
        return 0.5  # the full stage

    monkeypatch.setattr(RandMaskPruner, "candidates", candidates)
    monkeypatch.setattr(randmask_module, "accuracy", fake_accuracy)
    pruner = RandMaskPruner(num_candidates=3, eval_every=2, eval_last=2, dense_epochs=0,
                            batch_size=16, holdout_examples=20, **kw)  # fmt: skip
    masks = pruner.prune(model, data, 0.5)
    return pruner, masks, recorded


def test_randmask_keeps_the_candidate_with_the_best_heldout_score(tiny, monkeypatch):
    # Held-out "accuracy" by candidate (which mask the first layer has) and evaluation index:
    # candidate 0 starts best but ends worst; 2 is best over the last evaluations.
    plan = {0: [0.99, 0.99, 0.1, 0.1], 1: [0.5, 0.5, 0.5, 0.5], 2: [0.2, 0.2, 0.8, 0.8]}
    pruner, masks, recorded = prune_with_heldout_scores(
        tiny, monkeypatch, plan, candidate_max_steps=8, stage_max_steps=2
    )
    stage = pruner.info["stages"][0]
    assert stage["candidate_scores"] == pytest.approx([0.1, 0.5, 0.8])
    assert stage["chosen"] == 2
    assert all(torch.equal(masks[n], recorded[2][n]) for n in masks)


def test_randmask_soft_cross_entropy_is_mean_over_batch_and_classes():
    class Out:
        def __init__(self, logits):
            self.logits, self.hidden_states, self.attentions = logits, (), ()

    s, t = torch.randn(4, 3), torch.randn(4, 3)
    mean = distillation_loss(Out(s), Out(t), soft_ce="mean")
    summed = distillation_loss(Out(s), Out(t), soft_ce="sum")
    ref = (-torch.softmax(t, -1) * torch.log_softmax(s, -1)).mean()
    assert float(mean) == pytest.approx(float(ref)) and float(summed) == pytest.approx(
        3 * float(ref)
    )


# -- LTH ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reset_head", [False, True])
def test_lth_rewinds_the_body_to_pretrained_and_keeps_the_trained_head(tiny, monkeypatch,
                                                                       reset_head):  # fmt: skip
    make, data = tiny
    model = make()
    pre = data.pretrained().state_dict()
    dense_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("classifier")}
    starts: list[dict[str, torch.Tensor]] = []
    ends: list[dict[str, torch.Tensor]] = []
    orig = imp_module.masked_finetune

    def recording(model, data, masks, cfg, *a, **kw):
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        out = orig(model, data, masks, cfg, *a, **kw)
        ends.append({k: v.clone() for k, v in model.state_dict().items()})
        return out

    monkeypatch.setattr(imp_module, "masked_finetune", recording)
    pruner = instantiate(OmegaConf.load(CONF / "pruner" / "lth.yaml"), max_steps=3, batch_size=16,
                         rate_per_round=0.3, reset_head=reset_head)  # fmt: skip
    pruner.prune(model, data, 0.5)  # rounds 0.3, 0.5
    assert len(starts) == 2
    for r, state in enumerate(starts):
        for k, v in state.items():
            if k.startswith("bert."):
                assert torch.equal(v, pre[k]), (r, k)  # body rewound to the pre-trained model
        head = {k: v for k, v in state.items() if k.startswith("classifier")}
        if reset_head:
            expect = {k: pre[k] for k in head}
        else:  # round 1: the dense model's head; round 2: the head round 1 trained
            expect = dense_head if r == 0 else {k: ends[0][k] for k in head}
        assert all(torch.equal(head[k], expect[k]) for k in head), (r, reset_head)
    assert not torch.equal(ends[0]["classifier.weight"], dense_head["classifier.weight"])


@pytest.mark.parametrize(
    ("lr_schedule", "total"),
    [(None, 8), ("whole_run", 8), ("to_target", 4), ("per_round", None)],
)
def test_imp_round_lr_schedule_length(tiny, monkeypatch, lr_schedule, total):
    """Each round: a fresh linear decay, no warm-up (LT_glue.py:398-401). Its length, with rate
    0.25 and 2 steps per round: ``whole_run`` (the default, the code's t_total of the whole run,
    :205) 1 / 0.25 = 4 rounds = 8 steps; ``to_target`` (the previous default) the 2 rounds to
    50% = 4 steps; ``per_round`` the round's own 2 steps."""
    make, data = tiny
    seen: list[dict] = []
    orig = imp_module.masked_finetune

    def recording(model, data, masks, cfg, *a, **kw):
        seen.append({"kw": kw, "warmup": cfg.warmup_ratio, "wd": cfg.weight_decay})
        return orig(model, data, masks, cfg, *a, **kw)

    monkeypatch.setattr(imp_module, "masked_finetune", recording)
    over = {} if lr_schedule is None else {"lr_schedule": lr_schedule}
    pruner = instantiate(OmegaConf.load(CONF / "pruner" / "imp.yaml"), max_steps=2, batch_size=16,
                         rate_per_round=0.25, **over)  # fmt: skip
    pruner.prune(make(), data, 0.5)
    assert [s["kw"].get("schedule_total") for s in seen] == [total, total]
    assert all(s["warmup"] == 0 and s["wd"] == 0 for s in seen)
    assert pruner.scope == "encoder_linear+pooler"
    assert pruner.info["lr_schedule"] == (lr_schedule or "whole_run")


# -- the shared loop ---------------------------------------------------------------------------
def test_loop_grad_clip_none_keeps_raw_gradients_and_after_clip_is_unclipped(tiny):
    make, data = tiny
    model = make()
    norms: dict[str, list[float]] = {"clip": [], "noclip": []}
    for key, clip in (("clip", 1e-3), ("noclip", None)):
        net = make()

        def grab(step, net=net, key=key):
            g = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
            norms[key].append(float(g.norm()))

        cfg = TrainConfig(max_steps=1, batch_size=16, grad_clip=clip, group_by_length=False)
        train(net, data.tokenizer, data.train, cfg, 32, data.device, after_clip=grab)
    assert norms["clip"][0] == pytest.approx(1e-3, rel=1e-3)
    assert norms["noclip"][0] > 1e-2
    del model


def test_make_scheduler_uses_transformers_schedules():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lin = make_scheduler(opt, 10, 0.2, "linear")
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        lin.step()
    assert lrs[0] == 0 and lrs[2] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.125)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    const = make_scheduler(opt, 10, 0.0, "constant")
    for _ in range(5):
        opt.step()
        const.step()
    assert opt.param_groups[0]["lr"] == 1.0
    with pytest.raises(ValueError):
        make_scheduler(opt, 10, 0.1, "cosine")
    assert math.isfinite(lrs[1])


# -- dense FreeLB (AKR authors' dense code) ----------------------------------------------------
def test_dense_freelb_freezes_embeddings_and_starts_delta_at_zero(tiny):
    make, data = tiny
    model = make()
    emb = {k: v.clone() for k, v in model.bert.embeddings.state_dict().items()}
    enc = model.bert.encoder.layer[0].attention.self.query.weight.clone()
    recipe = build("dense", "freelb", max_steps=2, batch_size=16, adv_steps=2)
    assert recipe.adv["init_mag"] == 0.0 and recipe.cache_config()["freeze_embeddings"]
    recipe.fit(model, data.tokenizer, data.train, 32, data.device)
    for k, v in model.bert.embeddings.state_dict().items():
        assert torch.equal(v, emb[k]), k
    assert not torch.equal(model.bert.encoder.layer[0].attention.self.query.weight, enc)
    assert all(p.requires_grad for p in model.parameters())  # restored for later stages
