"""Calibration pruners (AKR, SparseGPT, Wanda) and the shared layer-wise engine.

Offline and fast: single layers with random calibration inputs, and a random 2-layer BERT
built in-process with the tiny synthetic task.
"""

from __future__ import annotations

import copy

import pytest
import torch

from benchmark.data.tiny import tiny_splits
from benchmark.models.loading import build_tiny_bert
from benchmark.pruners.akr import AKRPruner, RidgeCollector, obs_prune
from benchmark.pruners.base import PruneData, apply_masks, prunable_params
from benchmark.pruners.magnitude import MagnitudePruner, topk_mask
from benchmark.pruners.sparsegpt import SparseGPTPruner, sparsegpt_prune
from benchmark.pruners.wanda import WandaPruner, wanda_mask


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- single-layer known answers


def _correlated_inputs(n: int, d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    mix = torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5
    return z @ (torch.eye(d, dtype=torch.float64) + mix) + 0.3


def _brute_force_greedy(w: torch.Tensor, h: torch.Tensor, k: int) -> tuple[torch.Tensor, list]:
    """Greedy by exhaustive search: at each step try every removal with an exact LS refit."""
    d = w.shape[0]
    kept = list(range(d))
    order = []
    current = w.clone()
    for _ in range(k):
        best = None
        for j in kept:
            s = [i for i in kept if i != j]
            v = torch.zeros(d, dtype=torch.float64)
            # min_v (v - w)^T H (v - w) over v supported on s
            v[s] = torch.linalg.solve(h[s][:, s], h[s] @ w)
            err = float((v - w) @ h @ (v - w))
            if best is None or err < best[0]:
                best = (err, j, v)
        _, j, current = best
        kept.remove(j)
        order.append(j)
    return current, order


@pytest.mark.parametrize("impl", ["full", "lowrank"])
def test_greedy_obs_equals_brute_force(impl: str) -> None:
    d_in, d_out = 10, 4
    x = _correlated_inputs(200, d_in, seed=0)
    h = x.T @ x / x.shape[0]
    w = torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pruned, keep, damping = obs_prune(w, h, 0.6, impl=impl, dtype=torch.float64, min_pivot=0.0)
    assert damping == 0.0
    k = int(d_in * 0.6)
    for r in range(d_out):
        ref, order = _brute_force_greedy(w[r], h, k)
        assert set(torch.nonzero(~keep[r]).flatten().tolist()) == set(order)
        torch.testing.assert_close(pruned[r], ref, rtol=1e-8, atol=1e-8)


def test_obs_implementations_agree_and_keep_bias() -> None:
    x = _correlated_inputs(300, 16, seed=2)
    xb = torch.cat([x, torch.ones(300, 1, dtype=x.dtype)], 1)
    h = xb.T @ xb / 300
    w = torch.randn(6, 17, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a, ka, _ = obs_prune(w, h, 0.5, protect_last=True, impl="full", dtype=torch.float64)
    b, kb, _ = obs_prune(w, h, 0.5, protect_last=True, impl="lowrank", dtype=torch.float64)
    assert torch.equal(ka, kb)
    torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    assert bool(ka[:, -1].all())  # the bias column is never pruned
    assert (~ka[:, :16]).sum(1).tolist() == [8] * 6


def _layer_error(x, w, b, y) -> float:
    return float(((x @ w.T.to(x.dtype) + b.to(x.dtype) - y) ** 2).mean())


def test_layer_reconstruction_ordering() -> None:
    d_in, d_out = 32, 16
    x = _correlated_inputs(600, d_in, seed=4)
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    b = torch.randn(d_out, generator=gen, dtype=torch.float64)
    y = x @ w.T + b

    coll = RidgeCollector(d_in, d_out, torch.device("cpu"), bias=True)
    for chunk in range(0, 600, 128):  # several batches, like the engine
        coll.add_batch(x[chunk : chunk + 128], y[chunk : chunk + 128])
    w_akr, b_akr, keep_akr, _ = coll.solve(w, b, 0.5)
    w_sgpt, _ = sparsegpt_prune(w, x.T @ x / 600, 0.5)
    w_mag = w * topk_mask(w.abs(), w.numel() // 2)

    e_akr = _layer_error(x, w_akr, b_akr, y)
    e_sgpt = _layer_error(x, w_sgpt.double(), b, y)
    e_mag = _layer_error(x, w_mag, b, y)
    assert e_akr <= e_sgpt < e_mag
    assert int((~keep_akr).sum()) == d_out * d_in // 2

    # sparsity 0: the ridge refit alone reproduces the dense outputs
    w0, b0, keep0, _ = coll.solve(w, b, 0.0)
    assert bool(keep0.all())
    assert _layer_error(x, w0, b0, y) < 1e-6 * float((y**2).mean())


def test_wanda_known_answer() -> None:
    w = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    xnorm = torch.tensor([1.0, 2.0, 3.0, 4.0])
    keep = wanda_mask(w, xnorm, 0.5)
    assert keep.tolist() == [[False, False, True, True], [False, True, True, False]]


# ---------------------------------------------------------------- tiny BERT


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


def _final_hidden_error(tiny, model) -> float:
    dense, _, _, val = tiny
    keep = val["attention_mask"].bool()
    with torch.no_grad():
        ref = dense(**val, output_hidden_states=True).hidden_states[-1][keep]
        out = model(**val, output_hidden_states=True).hidden_states[-1][keep]
    return float(((out - ref) ** 2).mean())


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7])
def test_akr_closer_to_dense_than_sparsegpt(tiny, sparsity: float) -> None:
    akr, _ = _pruned(tiny, AKRPruner(), sparsity)
    sgpt, _ = _pruned(tiny, SparseGPTPruner(), sparsity)
    assert _final_hidden_error(tiny, akr) < _final_hidden_error(tiny, sgpt)


PRUNERS = {
    "magnitude": lambda **kw: MagnitudePruner(**kw),
    "magnitude_global": lambda **kw: MagnitudePruner(granularity="global", **kw),
    "wanda": lambda **kw: WandaPruner(**kw),
    "sparsegpt": lambda **kw: SparseGPTPruner(**kw),
    "akr": lambda **kw: AKRPruner(**kw),
}
CALIBRATED = ("wanda", "sparsegpt", "akr")


@pytest.mark.parametrize("name", ["magnitude", "wanda", "sparsegpt", "akr"])
def test_nm_masks(tiny, name: str) -> None:
    _, masks = _pruned(tiny, PRUNERS[name](structure="2:4"), 0.5)
    for mask in masks.values():
        groups = mask.reshape(mask.shape[0], -1, 4).sum(-1)
        assert bool((groups == 2).all())


@pytest.mark.parametrize("name", ["wanda", "akr"])
def test_equal_zeros_per_row(tiny, name: str) -> None:
    _, masks = _pruned(tiny, PRUNERS[name](), 0.5)
    for mask in masks.values():
        zeros = (~mask).sum(1)
        assert bool((zeros == int(mask.shape[1] * 0.5)).all())


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
@pytest.mark.parametrize("name", list(PRUNERS))
def test_contract(tiny, name: str, sparsity: float) -> None:
    dense = tiny[0]
    before = {n: p.detach().clone() for n, p in dense.named_parameters()}
    model, masks = _pruned(tiny, PRUNERS[name](), sparsity)
    params = prunable_params(model)
    assert set(masks) == set(params)
    for n, mask in masks.items():
        assert mask.dtype == torch.bool
        assert mask.shape == params[n].shape
    total = sum(m.numel() for m in masks.values())
    actual = sum(int((~m).sum()) for m in masks.values()) / total
    assert abs(actual - sparsity) <= 0.01
    if sparsity == 0.0:
        assert all(bool(m.all()) for m in masks.values())
    # non-prunable params untouched (AKR refits the biases of the prunable linears jointly)
    refit = {n[: -len("weight")] + "bias" for n in masks} if name == "akr" else set()
    for n, p in model.named_parameters():
        if n not in masks and n not in refit:
            assert torch.equal(p, before[n]), n
    # no hooks left behind
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    # same seed -> same masks
    _, again = _pruned(tiny, PRUNERS[name](), sparsity)
    assert all(torch.equal(masks[n], again[n]) for n in masks)


@pytest.mark.parametrize("name", CALIBRATED)
def test_calibration_seed_changes_masks(tiny, name: str) -> None:
    _, a = _pruned(tiny, PRUNERS[name](nsamples=24), 0.5, seed=0)
    _, b = _pruned(tiny, PRUNERS[name](nsamples=24), 0.5, seed=1)
    assert any(not torch.equal(a[n], b[n]) for n in a)


def test_akr_sparsity_zero_reproduces_dense(tiny) -> None:
    model, masks = _pruned(tiny, AKRPruner(), 0.0)
    assert all(bool(m.all()) for m in masks.values())
    dense, _, _, val = tiny
    with torch.no_grad():
        ref = dense(**val, output_hidden_states=True).hidden_states[-1]
        out = model(**val, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)


def test_akr_options_and_info(tiny) -> None:
    pruner = AKRPruner(ridge="paper", refit_head=True, obs_impl="lowrank")
    model, masks = _pruned(tiny, pruner, 0.5)
    info = pruner.info
    assert info["obs_impl"] == "lowrank" and info["ridge"] == "paper"
    assert info["nsamples"] == len(tiny[2])
    assert {v["ridge_ratio"] for v in info["layers"].values()} == {1e-4}
    assert "classifier" in info["layers"]
    assert not torch.equal(model.classifier.weight, tiny[0].classifier.weight)
    assert set(masks) == set(prunable_params(model))


def test_refuses_mismatched_nm_sparsity(tiny) -> None:
    with pytest.raises(ValueError, match="implies sparsity"):
        AKRPruner(structure="2:4").prune(copy.deepcopy(tiny[0]), _data(tiny), 0.3)


def test_dense_targets_are_the_per_layer_passes(tiny) -> None:
    """AKR's one dense pass per batch gives, bitwise, what a pass stopped after each layer gives
    (real tokens only) and what a separate pass gives as the block's output."""
    from benchmark.models.structure import encoder_blocks
    from benchmark.pruners._layerwise import LinearTaps, capture_block_inputs, run_block
    from benchmark.pruners.akr import _Grab, dense_targets

    model = copy.deepcopy(tiny[0])
    pruner = AKRPruner(nsamples=24, batch_size=8)
    _, batches = pruner._start(_data(tiny), 0.5)
    state = capture_block_inputs(model, batches)
    assert any(not bool(m.all()) for m in state.token_masks)  # padded positions are left out
    block = encoder_blocks(model)[1]
    hidden = run_block(encoder_blocks(model)[0].module, state)
    subs = [q[len(block.name) + 1 :] for q in block.linears]
    targets, outputs = dense_targets(block.module, subs, state, hidden)
    for sub in subs:
        ys: list[torch.Tensor] = []
        lin = block.module.get_submodule(sub)
        with LinearTaps({sub: lin}, {sub: _Grab(ys, take="out")}, stop_after=sub) as tap:
            tap.feed(block.module, state, hidden)
        assert len(targets[sub]) == len(ys) == len(batches)
        assert all(torch.equal(a, b) for a, b in zip(targets[sub], ys, strict=True)), sub
    ref = run_block(block.module, state, hidden)
    assert all(torch.equal(a, b) for a, b in zip(outputs, ref, strict=True))
