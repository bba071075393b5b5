"""The pruning contract, mask application and sparsity measurement (magnitude and none)."""

from __future__ import annotations

import pytest
import torch

from benchmark.jobs.registry import build
from benchmark.pruners.base import (
    PruneData,
    apply_masks,
    measure_sparsity,
    prunable_params,
    remove_mask_hooks,
)
from benchmark.pruners.magnitude import MagnitudePruner, NoPruner, nm_mask, topk_mask

EXPECTED_LINEARS = (
    "attention.self.query", "attention.self.key", "attention.self.value",
    "attention.output.dense", "intermediate.dense", "output.dense",
)  # fmt: skip


def test_prunable_params_are_the_six_encoder_linears(tiny_model):
    model, _ = tiny_model
    names = set(prunable_params(model))
    expected = {
        f"bert.encoder.layer.{i}.{sub}.weight" for i in range(2) for sub in EXPECTED_LINEARS
    }
    assert names == expected  # embeddings, pooler and classifier are never prunable


@pytest.mark.parametrize("granularity", ["layer", "global"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_contract(tiny_model, granularity, sparsity):
    model, _ = tiny_model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pruner = MagnitudePruner(granularity=granularity)
    masks = pruner.prune(model, PruneData(), sparsity)
    params = prunable_params(model)
    assert set(masks) == set(params)
    for name, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[name].shape
    apply_masks(model, masks, permanent=True)
    assert abs(measure_sparsity(model) - sparsity) < 0.01
    for name, p in model.named_parameters():
        if name in masks:
            kept = masks[name]
            assert torch.equal(p[kept], before[name][kept])  # kept weights untouched
            assert (p[~kept] == 0).all()
        else:
            assert torch.equal(p, before[name])  # non-prunable parameters untouched
    if granularity == "layer":
        for mask in masks.values():
            assert abs((~mask).float().mean().item() - sparsity) < 0.01


def test_magnitude_drops_the_smallest():
    w = torch.tensor([[0.1, -5.0, 0.3, 2.0], [-0.05, 1.0, -3.0, 0.2]])
    mask = topk_mask(w.abs(), keep=4)
    assert mask.tolist() == [[False, True, False, True], [False, True, True, False]]


def test_nm_mask_keeps_n_per_group():
    torch.manual_seed(0)
    scores = torch.randn(8, 16).abs()
    mask = nm_mask(scores, 2, 4)
    assert (mask.view(8, 4, 4).sum(-1) == 2).all()
    for r in range(8):  # the kept ones are the largest of their group
        for g in range(4):
            grp = scores[r, 4 * g : 4 * g + 4]
            assert set(grp.topk(2).indices.tolist()) == set(
                torch.nonzero(mask[r, 4 * g : 4 * g + 4]).flatten().tolist()
            )


def test_nm_sparsity_mismatch_is_refused(tiny_model):
    model, _ = tiny_model
    with pytest.raises(ValueError, match="implies sparsity"):
        MagnitudePruner(structure="2:4").prune(model, PruneData(), 0.3)


def test_sparsity_out_of_range_is_refused(tiny_model):
    model, _ = tiny_model
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            MagnitudePruner().prune(model, PruneData(), bad)


def test_none_keeps_everything(tiny_model):
    model, _ = tiny_model
    masks = NoPruner().prune(model, PruneData(), 0.5)
    assert all(m.all() for m in masks.values())


def test_masks_stay_enforced_during_training_and_fold_permanently(tiny_model):
    model, _ = tiny_model
    masks = MagnitudePruner().prune(model, PruneData(), 0.5)
    apply_masks(model, masks, permanent=False)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    ids = torch.randint(5, 30, (4, 6))
    for _ in range(2):
        model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        opt.step()
        opt.zero_grad()
    assert abs(measure_sparsity(model) - 0.5) < 0.01  # pre-hooks re-apply the masks
    remove_mask_hooks(model)
    lin = model.bert.encoder.layer[0].attention.self.query
    assert not hasattr(lin, "weight_orig") and not hasattr(lin, "weight_mask")
    assert abs(measure_sparsity(model) - 0.5) < 0.01


def test_apply_masks_twice_combines(tiny_model):
    model, _ = tiny_model
    p = MagnitudePruner()
    apply_masks(model, p.prune(model, PruneData(), 0.3), permanent=False)
    apply_masks(model, p.prune(model, PruneData(), 0.5), permanent=False)
    assert abs(measure_sparsity(model) - 0.5) < 0.01


def test_registry_builds_configured_pruners():
    assert isinstance(build("pruner", "magnitude"), MagnitudePruner)
    assert build("pruner", "magnitude", granularity="global").granularity == "global"


def test_registry_suggests_names():
    from benchmark.errors import UserError

    with pytest.raises(UserError, match="did you mean 'magnitude'"):
        build("pruner", "magnitud")
