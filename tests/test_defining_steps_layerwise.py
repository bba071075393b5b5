"""Defining steps of the calibration pruners: each test fails when its step is removed or
replaced (docs/methods/post_training.md, "Tests").

AKR: the target is the DENSE model's output; pruned outputs propagate between blocks (and
inside a block); ridge rectification changes the weights before OBS; OBS picks by
w^2 / [H^-1]_jj. All three: statistics do not depend on the calibration batch size.
SparseGPT: the update of the later column blocks. Wanda: pruned weights are zeroed before the
next block sees the outputs.
"""

from __future__ import annotations

import copy

import pytest
import torch

import benchmark.pruners.akr as akr_mod
from benchmark.data.tiny import tiny_splits
from benchmark.models.loading import build_tiny_bert
from benchmark.models.structure import encoder_blocks
from benchmark.pruners.akr import AKRPruner, RidgeCollector, obs_prune, ridge_refit
from benchmark.pruners.base import PruneData, apply_masks, calibration_batches
from benchmark.pruners.sparsegpt import SparseGPTPruner, sparsegpt_prune
from benchmark.pruners.wanda import NormCollector, WandaPruner

NSAMPLES, BATCH = 48, 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tok = build_tiny_bert(num_labels=2, workdir=tmp_path_factory.mktemp("tiny"))
    model.eval()
    train = [(t, int(y)) for t, y in tiny_splits()["train"]]
    return model, tok, train


def _data(tiny) -> PruneData:
    return PruneData(tokenizer=tiny[1], train=tiny[2], max_length=64, seed=0)


def _layer_names(model) -> list[str]:
    return [n for b in encoder_blocks(model) for n in b.linears]


class _Spy:
    """Records the (input, output) rows every collector instance of ``cls`` receives."""

    def __init__(self, monkeypatch, cls) -> None:
        self.calls: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        orig_init, orig_add = cls.__init__, cls.add_batch
        spy = self

        def init(obj, *a, **k):
            orig_init(obj, *a, **k)
            obj._spy_index = len(spy.calls)
            spy.calls.append([])

        def add(obj, inp, out):
            spy.calls[obj._spy_index].append((inp.detach().clone(), out.detach().clone()))
            orig_add(obj, inp, out)

        monkeypatch.setattr(cls, "__init__", init)
        monkeypatch.setattr(cls, "add_batch", add)

    def rows(self, index: int, which: int) -> torch.Tensor:
        return torch.cat([c[which] for c in self.calls[index]]).to(torch.float64)


def _layer_rows(model, name: str, batches, which: str) -> torch.Tensor:
    """Input or output rows (real tokens) of linear ``name`` when ``model`` runs on ``batches``."""
    lin = model.get_submodule(name)
    store = []

    def hook(_m, inputs, output):
        store.append(inputs[0] if which == "in" else output)

    handle = lin.register_forward_hook(hook)
    rows = []
    try:
        with torch.no_grad():
            for batch in batches:
                model(**batch)
                rows.append(store.pop()[batch["attention_mask"].bool()])
    finally:
        handle.remove()
    return torch.cat(rows).to(torch.float64)


def _run(tiny, pruner, sparsity=0.5):
    model = copy.deepcopy(tiny[0])
    masks = pruner.prune(model, _data(tiny), sparsity)
    apply_masks(model, masks, permanent=True)
    return model, masks


# ---------------------------------------------------------------- AKR


def test_akr_target_is_dense_output(tiny, monkeypatch) -> None:
    spy = _Spy(monkeypatch, RidgeCollector)
    model, _ = _run(tiny, AKRPruner(nsamples=NSAMPLES, batch_size=BATCH))
    batches = calibration_batches(_data(tiny), NSAMPLES, 64, BATCH)
    names = _layer_names(model)
    for i in (7, 10):  # block 1: key (after a pruned query) and intermediate
        dense_y = _layer_rows(tiny[0], names[i], batches, "out")
        own_y = _layer_rows(model, names[i], batches, "out")
        y = spy.rows(i, 1)
        torch.testing.assert_close(y, dense_y, rtol=1e-5, atol=1e-5)
        assert float((own_y - dense_y).abs().max()) > 1e-2  # the two targets are distinguishable


def test_akr_propagates_pruned_outputs(tiny, monkeypatch) -> None:
    spy = _Spy(monkeypatch, RidgeCollector)
    model, _ = _run(tiny, AKRPruner(nsamples=NSAMPLES, batch_size=BATCH), sparsity=0.7)
    batches = calibration_batches(_data(tiny), NSAMPLES, 64, BATCH)
    names = _layer_names(model)
    # block 1's query sees pruned block 0; block 1's intermediate also sees the pruned
    # attention of block 1 (partly pruned block)
    for i in (6, 10):
        x = spy.rows(i, 0)
        torch.testing.assert_close(x, _layer_rows(model, names[i], batches, "in"),
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
        # the dense path's input is distinguishable (100x the tolerance above)
        assert float((x - _layer_rows(tiny[0], names[i], batches, "in")).abs().max()) > 1e-3


def _layer_problem(seed: int = 0, n: int = 400, d_in: int = 12, d_out: int = 6):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=gen, dtype=torch.float64)
    x = x @ (
        torch.eye(d_in, dtype=torch.float64)
        + 0.5 * torch.randn(d_in, d_in, generator=gen, dtype=torch.float64)
    )
    w_true = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    b = torch.randn(d_out, generator=gen, dtype=torch.float64)
    y = x @ w_true.T + b  # the dense output
    w = w_true + 0.3 * torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)  # drifted
    return x, y, w, b


def test_akr_ridge_rectifies_before_obs(monkeypatch) -> None:
    x, y, w, b = _layer_problem()
    coll = RidgeCollector(x.shape[1], y.shape[1], torch.device("cpu"), bias=True)
    coll.add_batch(x, y)
    seen = {}
    orig = akr_mod.obs_prune

    def spy(weight, *a, **k):
        seen["w"] = weight.clone()
        return orig(weight, *a, **k)

    monkeypatch.setattr(akr_mod, "obs_prune", spy)
    coll.solve(w, b, 0.5, obs_dtype=torch.float64)
    w_aug = torch.cat([w, b[:, None]], 1)
    w_bar, _, _ = ridge_refit(coll.xtx, coll.xty, w_aug)
    torch.testing.assert_close(seen["w"], w_bar)  # OBS starts from the refit W-bar ...
    assert float((seen["w"] - w_aug).abs().max()) > 0.1  # ... which is not the original W
    # and the refit is towards the dense output: at sparsity 0 it reproduces Y
    w0, b0, _, _ = coll.solve(w, b, 0.0, obs_dtype=torch.float64)
    err = float(((x @ w0.T + b0 - y) ** 2).mean())
    assert err < 1e-3 * float(((x @ w.T + b - y) ** 2).mean())  # ridge 1e-4 leaves ~3e-5


@pytest.mark.parametrize("impl", ["full", "lowrank"])
@pytest.mark.parametrize("official_damp", [None, 1e-4])
def test_obs_chooses_by_w2_over_hinv_diag(impl: str, official_damp) -> None:
    # inputs 0 and 1 nearly collinear: their [H^-1]_jj are huge, so removing either costs
    # little although |w| is large; magnitude would remove input 2 (smallest |w|)
    h = torch.tensor([[1.0, 0.999, 0.0], [0.999, 1.0, 0.0], [0.0, 0.0, 1.0]],
                     dtype=torch.float64)  # fmt: skip
    w = torch.tensor([[1.0, 1.1, 0.3]], dtype=torch.float64)
    pruned, keep, _ = obs_prune(w, h, 1 / 3, impl=impl, dtype=torch.float64, min_pivot=0.0,
                                official_damp=official_damp)  # fmt: skip
    assert int(w.abs().argmin()) == 2
    assert keep.tolist() == [[False, True, True]]
    # OBS compensation moves input 0's contribution onto its collinear partner
    assert float(pruned[0, 1]) == pytest.approx(1.1 + 0.999 * 1.0, abs=1e-2)
    assert float(pruned[0, 2]) == pytest.approx(0.3, abs=1e-12)


# ---------------------------------------------------------------- all three


def _masks_and_weights(tiny, pruner):
    model, masks = _run(tiny, pruner)
    return masks, {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "make",
    [
        lambda bs: AKRPruner(nsamples=NSAMPLES, batch_size=bs),
        lambda bs: AKRPruner(
            nsamples=NSAMPLES,
            batch_size=bs,
            calib_padding="max_length",
            max_length=16,
            bias_prunable=True,
            obs_damp=1e-4,
        ),
        lambda bs: SparseGPTPruner(nsamples=NSAMPLES, batch_size=bs),
        lambda bs: WandaPruner(nsamples=NSAMPLES, batch_size=bs),
    ],
    ids=["akr_v1", "akr_padded", "sparsegpt", "wanda"],
)
def test_statistics_invariant_to_batch_size(tiny, make) -> None:
    masks_a, weights_a = _masks_and_weights(tiny, make(8))
    masks_b, weights_b = _masks_and_weights(tiny, make(24))
    for n in masks_a:
        assert torch.equal(masks_a[n], masks_b[n]), n
    for n in weights_a:
        torch.testing.assert_close(weights_a[n], weights_b[n], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- SparseGPT


def _sparsegpt_reference(w: torch.Tensor, h: torch.Tensor, s: float, blocksize: int = 128):
    """SparseGPT written without lazy batching: every column's error updates ALL later
    columns at once; the mask of a column block is chosen from the current weights."""
    w = w.clone().double()
    h = h.clone().double()
    cols = w.shape[1]
    h += 0.01 * torch.diagonal(h).mean() * torch.eye(cols, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    pruned = torch.zeros_like(w, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        score = w[:, i1:i2] ** 2 / torch.diag(hinv)[i1:i2][None, :] ** 2
        k = score.numel() - round(score.numel() * (1 - s))
        flat = torch.zeros(score.numel(), dtype=torch.bool)
        flat[torch.sort(score.flatten(), stable=True).indices[:k]] = True
        pruned[:, i1:i2] = flat.view_as(score)
        for i in range(i1, i2):
            q = torch.where(pruned[:, i], 0.0, w[:, i])
            err = (w[:, i] - q) / hinv[i, i]
            w[:, i:] -= err[:, None] * hinv[i, i:][None, :]
            w[:, i] = q
    return w, ~pruned


def test_sparsegpt_updates_later_column_blocks() -> None:
    gen = torch.Generator().manual_seed(0)
    d_in, d_out = 300, 8  # three column blocks of 128
    z = torch.randn(1200, d_in, generator=gen, dtype=torch.float64)
    x = z + 0.8 * torch.roll(z, 130, dims=1)  # inputs correlated ACROSS blocks
    h = x.T @ x / x.shape[0]
    w = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    ours, keep = sparsegpt_prune(w, h, 0.5)
    ref, ref_keep = _sparsegpt_reference(w, h, 0.5)
    assert float((keep != ref_keep).double().mean()) < 0.01
    torch.testing.assert_close(ours.double() * keep, ref * keep, rtol=1e-3, atol=1e-3)
    # the later blocks really moved (the check is not vacuous)
    last = slice(256, 300)
    assert float(((ours.double() - w)[:, last] * keep[:, last]).abs().max()) > 1e-2


# ---------------------------------------------------------------- Wanda


def test_wanda_zeroes_before_propagating(tiny, monkeypatch) -> None:
    spy = _Spy(monkeypatch, NormCollector)
    model, _ = _run(tiny, WandaPruner(nsamples=NSAMPLES, batch_size=BATCH))
    batches = calibration_batches(_data(tiny), NSAMPLES, 64, BATCH)
    names = _layer_names(model)
    x = spy.rows(6, 0)  # block 1's query input: block 0 with its pruned weights zeroed
    torch.testing.assert_close(x, _layer_rows(model, names[6], batches, "in"), rtol=1e-5,
                               atol=1e-5)  # fmt: skip
    assert float((x - _layer_rows(tiny[0], names[6], batches, "in")).abs().max()) > 1e-2
