"""Every ``conf/pruner/*.yaml`` on the tiny model: masks cover exactly the prunable weights of
the pruner's scope, the actual sparsity is within tolerance of the target, and (post-training
pruners) the weights outside the prunable linears are untouched.

Training-based pruners run with their reduced budgets (``conf/pruner_budget/<name>_reduced``)
and are marked ``slow``; they fine-tune, so only the mask and sparsity parts apply to them.
"""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from benchmark.jobs.registry import CONF_DIR, build, options
from benchmark.pruners.base import PruneData, apply_masks, measure_sparsity, prunable_params

SPARSITY = 0.5
TRAINING = {p.stem.removesuffix("_reduced") for p in (CONF_DIR / "pruner_budget").glob("*.yaml")}
SMALL = {"nsamples": 16}  # calibration sentences, where a pruner has the key


def _overrides(name: str) -> dict:
    cfg = OmegaConf.load(CONF_DIR / "pruner" / f"{name}.yaml")
    out = {k: v for k, v in SMALL.items() if k in cfg}
    budget = CONF_DIR / "pruner_budget" / f"{name}_reduced.yaml"
    if budget.is_file():
        reduced = OmegaConf.to_container(OmegaConf.load(budget))
        out.update(reduced.get("pruner", reduced))
    return out


CASES = [pytest.param(n, marks=pytest.mark.slow) if n in TRAINING else n
         for n in options("pruner") if n not in ("none", "structured")]  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_every_pruner_config_keeps_the_contract(name, tmp_path, tiny_model, tiny_examples):
    from benchmark.models.loading import build_tiny_bert

    model, tok = tiny_model
    pruner = build("pruner", name, **_overrides(name))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = PruneData(
        tokenizer=tok, train=tiny_examples["train"], max_length=32, seed=0,
        pretrained=lambda: build_tiny_bert(2, tmp_path / "pre")[0], cache_dir=tmp_path / "m",
    )  # fmt: skip
    masks = pruner.prune(model, data, SPARSITY)
    scope = getattr(pruner, "scope", "encoder_linear")
    params = prunable_params(model, scope)
    assert set(masks) == set(params), name
    assert all(masks[k].shape == params[k].shape and masks[k].dtype == torch.bool for k in masks)
    apply_masks(model, masks, permanent=True)
    min_d = min(p.shape[1] for p in params.values())
    tol = max(0.02, 2 / min_d)  # per-row rounding (and AKR's prunable bias column)
    assert abs(measure_sparsity(model, scope) - SPARSITY) <= tol, name
    if name not in TRAINING:
        prunable_layers = {k.rsplit(".", 1)[0] for k in params}
        for key, value in model.state_dict().items():
            if key.rsplit(".", 1)[0] not in prunable_layers:
                assert torch.equal(value, before[key]), f"{name} changed {key}"


def test_structured_and_none_keep_their_own_contract(tmp_path, tiny_model, tiny_examples):
    """``none`` keeps every weight; ``structured`` removes heads and neurons (its sparsity is
    the share of prunable parameters removed, recorded in ``info``)."""
    model, tok = tiny_model
    data = PruneData(tokenizer=tok, train=tiny_examples["train"], max_length=32, seed=0)
    dense = copy.deepcopy(model)
    masks = build("pruner", "none").prune(dense, data, 0.0)
    assert all(m.all() for m in masks.values())
    pruner = build("pruner", "structured", **_overrides("structured"))
    pruner.prune(model, data, SPARSITY)
    info = pruner.info
    assert info["prunable_params_removed"] > 0
    share = info["prunable_params_removed"] / info["prunable_params_before"]
    assert 0.2 < share < 0.8
