"""AKR's compiled OBS solver and the GPU path (``obs_impl: compiled`` / ``batched``) against
the float64 ``lowrank`` reference (``akr.obs_prune``): masks, weights, ties, threads."""

from __future__ import annotations

import copy

import pytest
import torch

from benchmark.pruners import _obs_fast, akr
from benchmark.pruners.akr import AKRPruner
from benchmark.pruners.base import PruneData


def _problem(d_out: int, d_in: int, seed: int, singular: bool = False, bias: bool = True):
    """A random layer and ``H = X^T X / n`` of correlated inputs (ones column with ``bias``).

    ``singular``: every input row is centred and scaled like a LayerNorm output, so with the
    ones column H is exactly singular (the q/k/v and intermediate layers' case: damped).
    """
    g = torch.Generator().manual_seed(seed)
    n = 6 * d_in
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    x = x @ (torch.randn(d_in, d_in, generator=g, dtype=torch.float64) / d_in**0.5)
    x = x + torch.randn(d_in, generator=g, dtype=torch.float64)
    if singular:
        x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True)
    if bias:
        x = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)
    w = torch.randn(d_out, x.shape[1], generator=g, dtype=torch.float64) * 0.1
    return w, x.T @ x / n


def _reference(w, h, sparsity, **kw):
    return akr.obs_prune(w, h, sparsity, impl="lowrank", dtype=torch.float64, **kw)


def _solve(impl, w, h, sparsity, **kw):
    kw.setdefault("workers", 2)
    if impl == "batched":  # several batches: 3 rows each
        d = w.shape[1]
        kw.setdefault("chunk_bytes", 3 * (d * d + 64 * d) * 8)
    return _obs_fast.obs_prune(w, h, sparsity, impl=impl, damp=0.0, **kw)


def _check_same(new, ref, tol: float):
    assert new[2] == ref[2]  # same damping
    assert torch.equal(new[1], ref[1])  # every mask entry
    assert float((new[0] - ref[0]).abs().max()) <= tol
    assert bool((new[0][~new[1]] == 0).all())  # pruned entries are exact zeros


IMPLS = ["compiled", "batched"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sparsity", [0.5, 0.875])
@pytest.mark.parametrize(("d_out", "d_in"), [(1, 16), (9, 47), (24, 96)])
@pytest.mark.parametrize("singular", [False, True], ids=["invertible", "singular_H"])
def test_masks_and_weights_match_lowrank(impl, sparsity, d_out, d_in, singular):
    w, h = _problem(d_out, d_in, seed=d_in + d_out, singular=singular)
    ref = _reference(w, h, sparsity, protect_last=True)
    new = _solve(impl, w, h, sparsity, protect_last=True)
    # a singular H is damped by only 1e-10 of its mean diagonal: rounding is amplified there
    _check_same(new, ref, tol=1e-7 if singular else 1e-10)
    k = int(d_in * sparsity)
    assert (~new[1][:, :-1]).sum(1).tolist() == [k] * d_out
    assert bool(new[1][:, -1].all())  # the bias column is never pruned


@pytest.mark.parametrize("impl", IMPLS)
def test_nm_and_official_options_match_lowrank(impl):
    w, h = _problem(12, 64, seed=3, singular=True)
    ref = _reference(w, h, 0.5, nm=(2, 4), protect_last=True)
    new = _solve(impl, w, h, 0.5, nm=(2, 4), protect_last=True)
    _check_same(new, ref, tol=1e-7)
    groups = (~new[1][:, :-1]).reshape(12, 16, 4).sum(-1)
    assert bool((groups == 2).all())
    # the default job's options: bias prunable, zeros over all columns, AKR's damping per group
    # of rows with the same exact zeros (one row starts with zeros: a second group)
    w[3, :5] = 0.0
    kw = dict(protect_last=False, zeros_per_row="official", official_damp=1e-4)
    ref = _reference(w, h, 0.875, **kw)
    new = _solve(impl, w, h, 0.875, **kw)
    _check_same(new, ref, tol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_exact_ties_pick_the_first_index(impl):
    # H = I: every score is w_j^2 and every column of H^-1 a unit vector, so both solvers
    # compute the same values exactly and tied magnitudes must be broken alike (first index)
    d = 12
    h = torch.eye(d, dtype=torch.float64)
    w = torch.tensor([[1.0, -1.0, 2.0, 1.0, -2.0, 1.0, 3.0, 1.0, -1.0, 2.0, 1.0, 0.5]] * 2,
                     dtype=torch.float64)  # fmt: skip
    w[1] = w[1].flip(0)
    ref = _reference(w, h, 0.5)
    new = _solve(impl, w, h, 0.5)
    _check_same(new, ref, tol=0.0)
    assert (~new[1][0]).nonzero().flatten().tolist() == [0, 1, 3, 5, 7, 11]


@pytest.mark.parametrize("impl", IMPLS)
def test_edge_cases_zero_rows_dead_inputs_and_duplicates(impl):
    w, h = _problem(6, 31, seed=7)
    w[0] = 0.0  # an all-zero row: every score 0, the ties broken by index
    w[2, 4:9] = 0.0
    h[5, :] = 0.0  # a dead input (always zero): H_jj = 1 and w_j = 0 (OBC)
    h[:, 5] = 0.0
    h[7] = h[8]  # two identical inputs: H exactly singular, damped
    h[:, 7] = h[:, 8]
    for sparsity in (0.5, 0.875):
        ref = _reference(w, h, sparsity, protect_last=True)
        new = _solve(impl, w, h, sparsity, protect_last=True)
        _check_same(new, ref, tol=1e-6)
        assert ref[2] > 0  # the duplicate made H singular: it was damped


def test_compiled_result_does_not_depend_on_threads_or_workers():
    w, h = _problem(20, 200, seed=11)
    runs = []
    for threads, workers in ((1, 1), (2, 2), (1, 2), (2, 1)):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            runs.append(_obs_fast.obs_prune(w, h, 0.5, protect_last=True, impl="compiled",
                                            workers=workers))  # fmt: skip
        finally:
            torch.set_num_threads(before)
        assert torch.get_num_threads() == before
    for other in runs[1:]:
        assert torch.equal(other[1], runs[0][1])
        assert torch.equal(other[0], runs[0][0])  # bitwise


def test_batched_result_does_not_depend_on_the_batch_size():
    w, h = _problem(10, 40, seed=12)
    per_row = (41 * 41 + 64 * 41) * 8
    one = _obs_fast.obs_prune(w, h, 0.5, protect_last=True, impl="batched", chunk_bytes=per_row)
    all_rows = _obs_fast.obs_prune(w, h, 0.5, protect_last=True, impl="batched",
                                   chunk_bytes=10 * per_row)  # fmt: skip
    # Same masks; the weights agree to rounding only: MKL's batched GEMM may order a row's
    # sums differently by batch count (seen on the CI machine, not on the dev machine).
    assert torch.equal(one[1], all_rows[1])
    assert float((one[0] - all_rows[0]).abs().max()) <= 1e-12
    assert _obs_fast.batch_bytes(torch.device("cpu"), 123) == 123


def test_bad_input_errors():
    w, h = _problem(4, 16, seed=1)
    with pytest.raises(ValueError, match="float64"):
        _obs_fast.obs_prune(w, h, 0.5, impl="compiled", dtype=torch.float32)
    with pytest.raises(ValueError, match="compiled"):
        _obs_fast.obs_prune(w, h, 0.5, impl="compield")
    with pytest.raises(ValueError, match="float64"):
        AKRPruner(obs_impl="compiled", obs_dtype="float32")
    with pytest.raises(ValueError, match="batched"):
        AKRPruner(obs_impl="gpu")


@pytest.fixture(scope="module")
def small_block(tmp_path_factory):
    """A random one-block BERT (hidden 64, FFN 128) and the tiny task's training sentences."""
    from transformers import BertConfig, BertForSequenceClassification

    from benchmark.data.tiny import tiny_splits
    from benchmark.models.loading import build_tiny_bert

    _, tok = build_tiny_bert(2, tmp_path_factory.mktemp("vocab"))
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
                     num_attention_heads=4, intermediate_size=128, num_labels=2)  # fmt: skip
    model = BertForSequenceClassification(cfg).eval()
    torch.random.set_rng_state(state)
    train = [(str(t), int(y)) for t, y in tiny_splits()["train"]]
    return model, PruneData(tokenizer=tok, train=train, max_length=32, seed=0)


# the default job's solver options (conf/pruner/akr.yaml, version 2)
V2 = dict(calib_padding="max_length", bias_prunable=True, obs_damp=1e-4)


@pytest.mark.parametrize("sparsity", [0.5, 0.875])
def test_akr_pruner_compiled_gives_the_lowrank_model(small_block, sparsity):
    model, data = small_block
    out, info = {}, {}
    for impl in ("lowrank", "compiled", "batched"):
        m = copy.deepcopy(model)
        pruner = AKRPruner(nsamples=32, max_length=32, obs_impl=impl, obs_workers=2, **V2)
        masks = pruner.prune(m, data, sparsity)
        out[impl] = (masks, {k: v.clone() for k, v in m.state_dict().items()})
        info[impl] = pruner.info
    ref_masks, ref_w = out["lowrank"]
    for impl in ("compiled", "batched"):
        masks, weights = out[impl]
        assert info[impl]["obs_impl"] == info[impl]["obs_kernel"] == impl  # on CPU as named
        assert sorted(masks) == sorted(ref_masks) and len(masks) == 12
        assert all(torch.equal(masks[k], ref_masks[k]) for k in masks), impl
        worst = max(float((weights[k] - ref_w[k]).abs().max()) for k in ref_w)
        assert worst < 1e-5, (impl, worst)  # float32 model weights
