"""Pruners beyond the seeds: RIA, OWL (over Wanda, SparseGPT, AKR), DSnoT, structured.

Known answers on single layers where the method's defining step gives a different answer
from Wanda or magnitude, then the tiny 2-layer BERT end to end through each config.
"""

from __future__ import annotations

import copy

import pytest
import torch

from benchmark.data.tiny import tiny_splits
from benchmark.jobs.registry import build
from benchmark.models.loading import build_tiny_bert
from benchmark.pruners.base import PruneData, apply_masks, prunable_params
from benchmark.pruners.dsnot import DSnoTPruner, dsnot_refine
from benchmark.pruners.owl import outlier_ratio, owl_sparsities
from benchmark.pruners.ria import (
    RIAPruner,
    reallocation_index,
    relative_importance,
    ria_mask,
    ria_score,
)
from benchmark.pruners.structured import (
    damped_solve,
    greedy_rearrange,
    kept_mac_fraction,
    mac_per_head,
    mac_per_neuron,
    remove_structures,
    scaled_structures,
    search_mac,
)
from benchmark.pruners.wanda import wanda_mask


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok = build_tiny_bert(num_labels=2, workdir=tmp_path_factory.mktemp("tiny"))
    model.eval()
    splits = tiny_splits()
    train = [(t, int(y)) for t, y in splits["train"]]
    val = tok([t for t, _ in splits["validation"]], padding=True, return_tensors="pt")
    return model, tok, train, val


def _data(tiny, seed: int = 0) -> PruneData:
    _, tok, train, _ = tiny
    return PruneData(tokenizer=tok, train=train, max_length=64, seed=seed)


def _pruned(tiny, pruner, sparsity: float, seed: int = 0):
    model = copy.deepcopy(tiny[0])
    masks = pruner.prune(model, _data(tiny, seed), sparsity)
    apply_masks(model, masks, permanent=True)
    return model, masks


def _sparsity(masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int((~m).sum()) for m in masks.values()) / total


def _check_contract(tiny, model, masks, sparsity: float, tol: float = 0.01) -> None:
    params = prunable_params(model)
    assert set(masks) == set(params)
    for n, mask in masks.items():
        assert mask.dtype == torch.bool and mask.shape == params[n].shape
    assert abs(_sparsity(masks) - sparsity) <= tol
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------- RIA


def test_relative_importance_known_answer() -> None:
    w = torch.tensor([[1.0, -2.0], [0.1, 100.0]])
    ri = relative_importance(w)
    expected = torch.tensor(
        [[1 / 1.1 + 1 / 3, 2 / 102 + 2 / 3], [0.1 / 1.1 + 0.1 / 100.1, 100 / 102 + 100 / 100.1]],
        dtype=torch.float64,
    )
    torch.testing.assert_close(ri, expected)
    # the column term makes RIA keep w00 where Wanda (same ||X||, per row) keeps w01
    xnorm = torch.ones(2)
    keep_ria, _ = ria_mask(ria_score(w, xnorm), 0.5, granularity="row")
    assert keep_ria[0].tolist() == [True, False]
    assert wanda_mask(w, xnorm, 0.5)[0].tolist() == [False, True]


def test_ria_activation_exponent() -> None:
    w = torch.ones(2, 2)
    xnorm = torch.tensor([4.0, 9.0])
    torch.testing.assert_close(
        ria_score(w, xnorm, 0.5), torch.tensor([[2.0, 3.0], [2.0, 3.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(
        ria_score(w, xnorm, 1.0)[0], torch.tensor([4.0, 9.0], dtype=torch.float64)
    )


def test_ria_layer_threshold_differs_from_per_row() -> None:
    score = torch.tensor([[9.0, 8.0, 7.0, 6.0], [1.0, 2.0, 3.0, 4.0]])
    layer, _ = ria_mask(score, 0.5)
    row, _ = ria_mask(score, 0.5, granularity="row")
    assert layer.tolist() == [[True] * 4, [False] * 4]
    assert row.sum(1).tolist() == [2, 2]


def test_ria_channel_reallocation_known_answer() -> None:
    score = torch.tensor([[9.0, 9.0, 9.0, 9.0, 1.0, 1.0, 1.0, 1.0]])
    index = reallocation_index(score, 4)
    assert index.tolist() == [4, 7, 0, 3, 5, 6, 1, 2]
    plain, none = ria_mask(score, 0.5, nm=(2, 4))
    assert none is None
    realloc, perm = ria_mask(score, 0.5, nm=(2, 4), reallocation=True)
    assert torch.equal(perm, index)
    assert float(score[plain].sum()) == 20.0
    assert float(score[realloc].sum()) == 36.0  # the four strong channels all survive
    assert realloc[0].tolist() == [True] * 4 + [False] * 4
    # N:M holds in the permuted order
    assert bool((realloc[:, index].reshape(1, -1, 4).sum(-1) == 2).all())


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_ria_tiny_bert_via_config(tiny, sparsity: float) -> None:
    pruner = build("pruner", "ria")
    assert isinstance(pruner, RIAPruner) and pruner.a == 0.5 and pruner.granularity == "layer"
    before = {n: p.detach().clone() for n, p in tiny[0].named_parameters()}
    model, masks = _pruned(tiny, pruner, sparsity)
    _check_contract(tiny, model, masks, sparsity)
    for n, p in model.named_parameters():
        if n not in masks:
            assert torch.equal(p, before[n]), n
    assert pruner.info["method"] == "ria"
    _, again = _pruned(tiny, build("pruner", "ria"), sparsity)
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    if sparsity:
        # RIA's masks are not Wanda's on the real model
        wanda = build("pruner", "wanda")
        _, wmasks = _pruned(tiny, wanda, sparsity)
        assert any(not torch.equal(masks[n], wmasks[n]) for n in masks)


@pytest.mark.parametrize("reallocation", [False, True])
def test_ria_tiny_bert_nm(tiny, reallocation: bool) -> None:
    pruner = build("pruner", "ria", structure="2:4", reallocation=reallocation)
    model, masks = _pruned(tiny, pruner, 0.5)
    _check_contract(tiny, model, masks, 0.5)
    perms = pruner.info.get("permutations", {})
    assert bool(perms) == reallocation
    for name, mask in masks.items():
        cols = torch.tensor(perms[name[: -len(".weight")]]) if reallocation else None
        m = mask[:, cols] if reallocation else mask
        assert bool((m.reshape(m.shape[0], -1, 4).sum(-1) == 2).all())


def test_ria_refuses_reallocation_without_nm() -> None:
    with pytest.raises(ValueError, match="N:M"):
        RIAPruner(reallocation=True)


# ---------------------------------------------------------------- OWL


def test_owl_outlier_ratio_known_answer() -> None:
    scores = [torch.tensor([1.0, 1.0, 1.0]), torch.tensor([[1.0, 10.0]])]  # mean 2.8
    assert outlier_ratio(scores, 3.0) == pytest.approx(20.0)  # only 10 > 8.4
    assert outlier_ratio(scores, 0.3) == pytest.approx(100.0)  # all > 0.84
    assert outlier_ratio(scores, 4.0) == pytest.approx(0.0)  # none > 11.2


def test_owl_sparsities_known_answer() -> None:
    got = owl_sparsities([1.0, 2.0, 3.0], 0.5, 0.08)
    assert got == pytest.approx([0.58, 0.5, 0.42])  # more outliers -> pruned less
    assert sum(got) / 3 == pytest.approx(0.5)
    # the spread follows the ratios' min-max normalisation, not their absolute values
    # normalised [0, 1/3, 1] * 0.2 = [0, 0.0667, 0.2], mean 0.0889
    assert owl_sparsities([10.0, 20.0, 40.0], 0.6, 0.1) == pytest.approx(
        [0.6 + 0.2 * 4 / 9, 0.6 + 0.2 * 4 / 9 - 0.2 / 3, 0.6 + 0.2 * 4 / 9 - 0.2]
    )
    assert owl_sparsities([5.0, 5.0], 0.5, 0.08) == [0.5, 0.5]  # no spread: uniform
    # lambda capped at s: no block below 0, mean still s (official: clamp to 0.01)
    assert owl_sparsities([0.0, 1.0], 0.05, 0.1) == pytest.approx([0.1, 0.0])
    assert owl_sparsities([0.0, 1.0], 0.0, 0.1) == [0.0, 0.0]
    with pytest.raises(ValueError, match=">= 1"):
        owl_sparsities([0.0, 1.0], 0.95, 0.1)


def _with_outliers(tiny, block: int = 1, frac: float = 0.05, scale: float = 50.0):
    """The tiny BERT with a few large weights in every prunable linear of one block."""
    model = copy.deepcopy(tiny[0])
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in prunable_params(model).items():
            if f"layer.{block}." in name:
                pick = torch.rand(p.shape, generator=gen) < frac
                p[pick] *= scale
    return model


def _block_sparsity(masks, block: int) -> float:
    sel = {n: m for n, m in masks.items() if f"layer.{block}." in n}
    return _sparsity(sel)


@pytest.mark.parametrize("name", ["owl_wanda", "owl_sparsegpt", "owl_akr"])
def test_owl_prunes_the_outlier_block_less(tiny, name: str) -> None:
    model = _with_outliers(tiny)
    pruner = build("pruner", name)
    masks = pruner.prune(model, _data(tiny), 0.5)
    info = pruner.info
    ratios = list(info["outlier_ratio"].values())
    assert ratios[1] > ratios[0]
    assert list(info["layer_sparsity"].values()) == pytest.approx([0.58, 0.42])
    # each block is pruned at its ratio (per row int(d_in * s_l): within 1/d_in, d_in >= 32;
    # AKR counts its prunable bias column in the per-row quota, so its weights sit lower)
    tol = 1 / 32 if name != "owl_akr" else 0.06
    assert _block_sparsity(masks, 0) == pytest.approx(0.58, abs=tol)
    assert _block_sparsity(masks, 1) == pytest.approx(0.42, abs=tol)
    assert _block_sparsity(masks, 0) - _block_sparsity(masks, 1) > 0.1
    assert info["actual_sparsity"] == pytest.approx(_sparsity(masks))
    apply_masks(model, masks, permanent=True)
    _check_contract(tiny, model, masks, 0.5, tol=tol)
    # the uniform base prunes both blocks at 0.5
    base_masks = build("pruner", name.removeprefix("owl_")).prune(
        _with_outliers(tiny), _data(tiny), 0.5
    )
    assert _block_sparsity(base_masks, 1) == pytest.approx(0.5, abs=1 / 32)


@pytest.mark.parametrize("name", ["owl_wanda", "owl_sparsegpt", "owl_akr"])
def test_owl_lambda_zero_is_the_base(tiny, name: str) -> None:
    _, owl = _pruned(tiny, build("pruner", name, lamda=0.0), 0.5)
    _, base = _pruned(tiny, build("pruner", name.removeprefix("owl_")), 0.5)
    assert all(torch.equal(owl[n], base[n]) for n in base)


def test_owl_sparsity_zero_and_refusals(tiny) -> None:
    _, masks = _pruned(tiny, build("pruner", "owl_wanda"), 0.0)
    assert all(bool(m.all()) for m in masks.values())
    with pytest.raises(Exception, match="N:M variant"):  # hydra wraps the ValueError
        build("pruner", "owl_wanda", base_overrides={"structure": "2:4"})


# ---------------------------------------------------------------- DSnoT


def _one_row(dm, var=(1.0, 1.0, 1.0, 1.0), **kw):
    init = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # Wanda/initial: prune inputs 0 and 1
    keep, info = dsnot_refine(init, init, torch.tensor([dm]), torch.tensor(var), 0.5,
                              **{"update_threshold": 0.15, **kw})  # fmt: skip
    return keep[0].tolist(), info


def test_dsnot_known_answers() -> None:
    # error +0.8: regrow the largest positive (0), prune the least important negative (2)
    keep, info = _one_row([0.5, 0.3, -0.2, 0.1])
    assert keep == [True, False, False, True] and info["swaps"] == 1
    assert info["initial_keep"][0].tolist() == [False, False, True, True]  # = Wanda's
    # error -0.8: regrow the most negative (0), prune the least important positive (2)
    keep, _ = _one_row([-0.5, -0.3, 0.2, -0.1])
    assert keep == [True, False, False, True]
    # regrowing ranks by dm / var: input 0's variance sends it behind input 1
    keep, info = _one_row([0.5, 0.3, -0.2, 0.1], var=(10.0, 1.0, 1.0, 1.0))
    assert keep == [True, True, False, False] and info["swaps"] == 2
    keep, _ = _one_row([0.5, 0.3, -0.2, 0.1], var=(10.0, 1.0, 1.0, 1.0),
                       pow_of_var_regrowing=0.0)  # fmt: skip
    assert keep == [True, False, False, True]
    # below the threshold, or no cycles: the initial mask stays
    assert _one_row([0.05, 0.05, 0.3, 0.3])[0] == [False, False, True, True]
    assert _one_row([0.5, 0.3, -0.2, 0.1], max_cycle_time=0)[0] == [False, False, True, True]


def test_dsnot_keeps_the_count_when_candidates_run_out() -> None:
    gen = torch.Generator().manual_seed(0)
    init = torch.rand(64, 8, generator=gen)
    dm = torch.randn(64, 8, generator=gen) * 10
    keep, info = dsnot_refine(init, init, dm, torch.ones(8), 0.5, update_threshold=0.0,
                              max_cycle_time=50)  # fmt: skip
    assert (keep.sum(1) == 4).all() and info["swaps"] > 0


def _row_errors(masks, model_stats, name):
    w, mu = model_stats[name]
    return (w * mu[None, :] * (~masks[name + ".weight"]).double()).sum(1).abs()


def test_dsnot_tiny_bert_via_config(tiny) -> None:
    pruner = build("pruner", "dsnot")
    assert isinstance(pruner, DSnoTPruner) and pruner.initial_method == "wanda"
    before = {n: p.detach().clone() for n, p in tiny[0].named_parameters()}
    model, masks = _pruned(tiny, pruner, 0.5)
    _check_contract(tiny, model, masks, 0.5)
    for mask in masks.values():
        assert bool((mask.shape[1] - mask.sum(1) == mask.shape[1] // 2).all())
    for n, p in model.named_parameters():
        if n not in masks:
            assert torch.equal(p, before[n]), n
    info = pruner.info
    assert info["layers"]["bert.encoder.layer.0.intermediate.dense"]["skipped"]
    _, wanda = _pruned(tiny, build("pruner", "wanda"), 0.5)
    b0 = "bert.encoder.layer.0."
    # block 0 sees the same statistics under both: skipped MLP linears keep Wanda's mask,
    # refined attention linears differ from it
    for sub in ("intermediate.dense", "output.dense"):
        assert torch.equal(masks[b0 + sub + ".weight"], wanda[b0 + sub + ".weight"])
    refined = [b0 + s for s in ("attention.self.query", "attention.self.key",
                                "attention.self.value", "attention.output.dense")]  # fmt: skip
    assert sum(info["layers"][n]["changed_pairs"] for n in refined) > 0
    # ... and their expected reconstruction error |sum_pruned W_ij mu_j| is smaller
    dense = tiny[0]
    data = _data(tiny)
    from benchmark.pruners.base import calibration_batches

    batches = calibration_batches(data, 128, 64, 32)
    stats = {}
    inp = {}
    hooks = [dense.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: inp.setdefault(n, []).append(i[0])) for n in refined]  # fmt: skip
    with torch.no_grad():
        for b in batches:
            dense(**b)
    for h in hooks:
        h.remove()
    for n in refined:
        xs = torch.cat(
            [x[b["attention_mask"].bool()] for x, b in zip(inp[n], batches, strict=True)]
        )
        mu = xs.double().sum(0) / sum(int(b["input_ids"].shape[0]) for b in batches)
        stats[n] = (dense.get_submodule(n).weight.detach().double(), mu)
    e_dsnot = torch.cat([_row_errors(masks, stats, n) for n in refined]).mean()
    e_wanda = torch.cat([_row_errors(wanda, stats, n) for n in refined]).mean()
    assert e_dsnot < e_wanda
    _, again = _pruned(tiny, build("pruner", "dsnot"), 0.5)
    assert all(torch.equal(masks[n], again[n]) for n in masks)


@pytest.mark.parametrize("initial", ["magnitude", "sparsegpt"])
def test_dsnot_other_initial_methods(tiny, initial: str) -> None:
    pruner = build("pruner", "dsnot", initial_method=initial, skip=[])
    model, masks = _pruned(tiny, pruner, 0.5)
    _check_contract(tiny, model, masks, 0.5)
    assert not any(v.get("skipped") for v in pruner.info["layers"].values())


def test_dsnot_sparsity_zero_and_refusals(tiny) -> None:
    _, masks = _pruned(tiny, build("pruner", "dsnot"), 0.0)
    assert all(bool(m.all()) for m in masks.values())
    with pytest.raises(ValueError, match="N:M"):
        DSnoTPruner(structure="2:4")


# ---------------------------------------------------------------- structured (Kwon et al.)


def test_structured_mac_known_answer() -> None:
    assert mac_per_head(10, 32, 16) == 3 * 10 * 32 * 16 + 2 * 100 * 16 + 10 * 16 * 32  # 23680
    assert mac_per_neuron(10, 32) == 640
    heads = torch.tensor([[True, False]])
    neurons = torch.tensor([[True, True, False, False]])
    # T=1, d=2, dh=1: 10 MACs per head, 4 per neuron; kept (10 + 8) / (20 + 16)
    assert kept_mac_fraction(heads, neurons, 1, 2, 1) == pytest.approx(18 / 36)


def test_search_mac_known_answer() -> None:
    # budget 0.5 * 36 = 18: one head (10) leaves room for 2 neurons (8); two heads for none
    neuron_imp = torch.tensor([[3.0, 3.0, 0.1, 0.1]])
    head, neuron = search_mac(torch.tensor([[5.0, 1.0]]), neuron_imp, 1, 2, 1, 0.5)
    assert head.tolist() == [[True, False]] and neuron.tolist() == [[True, True, False, False]]
    head, _ = search_mac(torch.tensor([[5.0, 7.0]]), neuron_imp, 1, 2, 1, 0.5)
    assert head.tolist() == [[False, True]]
    # budget 0.6 * 36 = 21.6: heads worth more than the neurons they displace: both, no neuron
    head, neuron = search_mac(torch.tensor([[5.0, 7.0]]), neuron_imp / 10, 1, 2, 1, 0.6)
    assert head.tolist() == [[True, True]] and not bool(neuron.any())


def test_greedy_rearrange_known_answer() -> None:
    # per-mini-batch gradients of 3 neurons; the diagonal Fisher (1, 1, 1.44) prunes {0, 1},
    # whose gradients add up (||[1, 1]||^2 = 2); {0, 2} nearly cancel (0.04)
    grads = torch.tensor([[1.0, 0.0, -1.2], [0.0, 1.0, 0.0]])
    mask = torch.tensor([False, False, True])
    assert greedy_rearrange(mask, grads).tolist() == [False, True, False]
    assert greedy_rearrange(torch.ones(3, dtype=torch.bool), grads).all()


def test_damped_solve_matches_official_lsmr() -> None:
    from scipy.sparse.linalg import lsmr

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    ata, atb = x.T @ x, x.T @ torch.randn(50, generator=gen, dtype=torch.float64)
    ours = damped_solve(ata, atb)
    ref = lsmr(ata.numpy(), (atb - ata.sum(1)).numpy(), damp=1, atol=1e-14, btol=1e-14)[0] + 1
    torch.testing.assert_close(ours, torch.from_numpy(ref), rtol=1e-8, atol=1e-8)


def test_physical_removal_equals_masked_model(tiny) -> None:
    dense, _, _, val = tiny
    model = copy.deepcopy(dense)
    head = torch.tensor([[0.0, 0.0], [1.3, 0.0]])  # layer 0 loses every head
    neuron = torch.ones(2, 64)
    neuron[0, ::3] = 0.0
    neuron[0, 1::3] = 0.7
    neuron[1] = 0.0  # layer 1 loses its whole FFN
    with torch.no_grad(), scaled_structures(dense, head, neuron):
        ref = dense(**val).logits
    before = sum(p.numel() for p in model.parameters())
    remove_structures(model, head, neuron)
    layer0, layer1 = model.bert.encoder.layer
    assert layer0.attention.self.query.weight.shape == (0, 32)
    assert layer1.attention.self.query.weight.shape == (16, 32)
    assert layer0.intermediate.dense.weight.shape == (42, 32)
    assert layer0.output.dense.weight.shape == (32, 42)
    assert layer1.intermediate.dense.weight.shape == (0, 32)
    with torch.no_grad():
        out = model(**val).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) < before
    assert set(prunable_params(model)) == set(prunable_params(dense))


def _structured(tiny, sparsity: float, **kw):
    model = copy.deepcopy(tiny[0])
    pruner = build("pruner", "structured", **kw)
    masks = pruner.prune(model, _data(tiny), sparsity)
    apply_masks(model, masks, permanent=True)
    return model, masks, pruner.info


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_structured_tiny_bert_via_config(tiny, sparsity: float) -> None:
    dense, _, _, val = tiny
    before = sum(p.numel() for p in dense.parameters())
    model, masks, info = _structured(tiny, sparsity)
    params = prunable_params(model)
    assert set(masks) == set(params) and all(bool(m.all()) for m in masks.values())
    assert all(masks[n].shape == params[n].shape for n in masks)
    after = sum(p.numel() for p in model.parameters())
    assert info["params_removed"] == before - after
    if sparsity == 0.0:
        assert after == before and info["kept_mac_fraction"] == 1.0
        return
    assert info["params_removed"] > 0 and info["prunable_params_removed"] > 0
    assert 0.45 <= info["kept_mac_fraction"] <= 0.5  # at most the constraint c = 1 - s
    kept = [blk.attention.self.num_attention_heads for blk in model.bert.encoder.layer]
    assert kept == info["heads_kept"]
    assert [blk.intermediate.dense.out_features for blk in model.bert.encoder.layer] == info[
        "neurons_kept"
    ]
    with torch.no_grad():
        assert torch.isfinite(model(**val).logits).all()
    again, _, info2 = _structured(tiny, sparsity)
    assert (
        info2["heads_kept"] == info["heads_kept"] and info2["neurons_kept"] == info["neurons_kept"]
    )
    for (n, p), (_, q) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_structured_tuning_matches_the_teacher_better(tiny) -> None:
    dense, _, _, val = tiny
    keep = val["attention_mask"].bool()

    def err(m):
        with torch.no_grad():
            ref = dense(**val, output_hidden_states=True).hidden_states[-1][keep]
            out = m(**val, output_hidden_states=True).hidden_states[-1][keep]
        return float(((out - ref) ** 2).mean())

    tuned, _, info = _structured(tiny, 0.5)
    plain, _, info_plain = _structured(tiny, 0.5, tune=False)
    assert info["heads_kept"] == info_plain["heads_kept"]
    assert info["tuning_stopped_at_layer"] is None
    assert err(tuned) < err(plain)


def test_structured_info_replays_the_removal(tiny) -> None:
    model, _, info = _structured(tiny, 0.5)
    replay = copy.deepcopy(tiny[0])
    head = torch.ones(2, 2)
    neuron = torch.zeros(2, 64)
    for i in range(2):
        head[i, info["heads_removed"][i]] = 0.0
        neuron[i, info["neurons_kept_index"][i]] = 1.0
    remove_structures(replay, head, neuron)
    replay.load_state_dict(model.state_dict())  # same shapes: a cached state dict loads
    _, _, _, val = tiny
    with torch.no_grad():
        torch.testing.assert_close(replay(**val).logits, model(**val).logits)


def test_search_mac_respects_the_budget() -> None:
    # budget 0.25 * 36 = 9 < one head (10): the official loop still returns a head
    head_imp, neuron_imp = torch.tensor([[50.0, 40.0]]), torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    head, neuron = search_mac(head_imp, neuron_imp, 1, 2, 1, 0.25)
    assert not bool(head.any()) and neuron.sum() == 2  # 8 MACs <= 9
    assert kept_mac_fraction(head, neuron, 1, 2, 1) <= 0.25
    head, neuron = search_mac(head_imp, neuron_imp, 1, 2, 1, 0.25, overshoot=True)
    assert head.sum() == 2 and kept_mac_fraction(head, neuron, 1, 2, 1) > 0.25  # official
    # c = 0.5: at most one head (10) fits with 2 neurons; the official takes both heads (20)
    head, _ = search_mac(head_imp, neuron_imp, 1, 2, 1, 0.5)
    assert head.sum() == 1
    head, _ = search_mac(head_imp, neuron_imp, 1, 2, 1, 0.5, overshoot=True)
    assert head.sum() == 2
