"""The fast exact OBS (benchmark/pruners/_obs_fast.py) against AKR's solver, and its thread
independence."""

from __future__ import annotations

import pytest
import torch

from benchmark.pruners import _obs_fast, akr


def _layer(d_out: int, d_in: int, n: int, seed: int, layernorm: bool = False, cond: float = 0):
    """A random layer (bias as last column) and ``H = X^T X / n`` of correlated inputs.

    With ``cond`` the inputs' singular values are spread over ``sqrt(cond)`` (H
    ill-conditioned, about ``cond``, still invertible without damping). With ``layernorm``
    every input row is centred and scaled like a LayerNorm output, so the inputs sum to 0 and
    H (with the ones column) is exactly singular: the case of the q/k/v and intermediate
    layers, which gets damped.
    """
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d_in, d_in, generator=g, dtype=torch.float64) / d_in**0.5
    if cond:
        q, _ = torch.linalg.qr(mix)
        mix = torch.logspace(0, -0.5 * torch.log10(torch.tensor(cond)).item(), d_in,
                             dtype=torch.float64)[:, None] * q  # fmt: skip
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64) @ mix
    x = x + torch.randn(d_in, generator=g, dtype=torch.float64)
    if layernorm:
        x = x - x.mean(1, keepdim=True)
        x = x / x.std(1, keepdim=True)
    x = torch.cat([x, torch.ones(n, 1, dtype=x.dtype)], 1)
    w = torch.randn(d_out, d_in + 1, generator=g, dtype=torch.float64) * 0.1
    return w, x.T @ x / n


@pytest.mark.parametrize("case", ["well_conditioned", "cond_1e6", "singular_H"])
@pytest.mark.parametrize("nm", [None, (2, 4)], ids=["unstructured", "2:4"])
@pytest.mark.parametrize("impl", ["blocked", "lowrank"])
def test_float64_matches_akr(case, nm, impl):
    layernorm = case == "singular_H"
    w, h = _layer(24, 96, 600, seed=1, layernorm=layernorm, cond=1e6 if case == "cond_1e6" else 0)
    ref_w, ref_keep, ref_damp = akr.obs_prune(
        w, h, 0.5, nm=nm, protect_last=True, impl="lowrank", dtype=torch.float64
    )
    # block 8 and a small chunk budget: several refreshes per row and several row chunks
    new_w, new_keep, new_damp = _obs_fast.obs_prune(
        w, h, 0.5, nm=nm, protect_last=True, impl=impl, dtype=torch.float64, block=8,
        chunk_bytes=96 * 97 * 8 * 5, workers=2,
    )  # fmt: skip
    assert new_damp == ref_damp
    if layernorm:
        assert new_damp > 0  # the singular H really needed damping
    assert torch.equal(new_keep, ref_keep)
    # An exactly singular H is inverted with 1e-10 relative damping (condition ~1e10), so
    # rounding is amplified to ~1e-9: akr.obs_prune itself moves by 1e-9 between 1 and 2
    # threads there. Every invertible case must agree to 1e-10.
    tol = 1e-7 if layernorm else 1e-10
    assert float((new_w - ref_w).abs().max()) < tol
    assert bool(new_keep[:, -1].all())  # the bias is never pruned
    assert (~new_keep[:, :-1]).sum(1).tolist() == [48] * 24


def test_k_zero_and_errors():
    w, h = _layer(4, 16, 100, seed=2)
    out, keep, _ = _obs_fast.obs_prune(w, h, 0.0, protect_last=True)
    assert bool(keep.all()) and torch.equal(out, w)
    with pytest.raises(ValueError):
        _obs_fast.obs_prune(w, h, 0.5, impl="nope")
    with pytest.raises(ValueError):
        _obs_fast.obs_prune(w, h, 0.5, nm=(2, 3), protect_last=True)


def test_chunking_does_not_depend_on_threads():
    def rows():
        return _obs_fast.chunk_rows(384, 1537, 768, "blocked", torch.float64, 256 * 2**20)

    sizes = {_run_with_threads(rows, 1), _run_with_threads(rows, 2)}
    assert sizes == {13}  # 256 MiB // ((1537^2 + 64 * 1537) * 8 bytes)


def test_workers_restrict_themselves_to_one_thread():
    seen = _obs_fast.worker_thread_counts(2)
    assert seen["worker"] == [1, 1]
    before = torch.get_num_threads()
    _obs_fast.obs_prune(*_layer(8, 32, 100, seed=3), 0.5, protect_last=True, workers=2,
                        chunk_bytes=32 * 33 * 8 * 2)  # fmt: skip
    assert torch.get_num_threads() == before  # the caller's setting is restored


def _run_with_threads(fn, threads: int):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def _minilm_output_layer(rows: int):
    """The shape of MiniLM-L6's 384 x 1536 output layer (+ bias column), fewer rows."""
    g = torch.Generator().manual_seed(0)
    n = 2000
    x = torch.cat(
        [
            torch.randn(n, 1536, generator=g, dtype=torch.float64),
            torch.ones(n, 1, dtype=torch.float64),
        ],
        1,
    )
    w = torch.randn(rows, 1537, generator=g, dtype=torch.float64)
    return w, x.T @ x / n


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bitwise_identical_for_one_and_two_threads(dtype):
    # k = 768 zeros per row as in the real layer; 12 rows (one chunk at 1 row per 7 MiB in
    # two workers: 2 chunks of 6) keep it fast
    w, h = _minilm_output_layer(12)
    budget = 6 * (1537 * 1537 + 64 * 1537) * torch.finfo(dtype).bits // 8

    def solve():
        return _obs_fast.obs_prune(w, h, 0.5, protect_last=True, dtype=dtype, chunk_bytes=budget)

    one = _run_with_threads(solve, 1)
    two = _run_with_threads(solve, 2)
    assert torch.equal(one[1], two[1])
    assert torch.equal(one[0], two[0])  # bitwise, not approximately
    assert (~one[1][:, :-1]).sum(1).tolist() == [768] * 12


def test_float32_close_to_float64_with_same_damping():
    w, h = _layer(32, 128, 800, seed=4, layernorm=True)
    d64 = _obs_fast.obs_prune(w, h, 0.5, protect_last=True, dtype=torch.float64, damp=2e-4)
    d32 = _obs_fast.obs_prune(w, h, 0.5, protect_last=True, dtype=torch.float32)
    assert d32[2] >= 2e-4  # official damping applied by default in float32
    # with the official damping the float32 loop is stable on a singular (LayerNorm-fed) H:
    # (measured: every mask entry equal, weights within 6e-6)
    agree = float((d32[1] == d64[1]).double().mean())
    assert agree > 0.99
    same_rows = (d32[1] == d64[1]).all(1)
    assert float((d32[0] - d64[0])[same_rows].abs().max()) < 1e-4


@pytest.mark.parametrize("impl", ["blocked", "lowrank"])
def test_official_options_match_akr(impl):
    # the official solver's knobs: zeros counted over all columns, bias prunable, AKR's
    # in-place damping per zero-pattern group (one row starts with extra exact zeros)
    w, h = _layer(12, 64, 400, seed=5, layernorm=True)
    w[3, :5] = 0.0
    kwargs = dict(protect_last=False, dtype=torch.float64, zeros_per_row="official",
                  official_damp=1e-4)  # fmt: skip
    ref = akr.obs_prune(w, h, 0.5, impl="lowrank", **kwargs)
    new = _obs_fast.obs_prune(w, h, 0.5, impl=impl, block=8, workers=2,
                              chunk_bytes=65 * 65 * 8 * 4, **kwargs)  # fmt: skip
    assert new[2] == ref[2]
    assert torch.equal(new[1], ref[1])
    assert (~new[1]).sum(1).tolist() == [int(65 * 0.5) - 1] * 12
    assert float((new[0] - ref[0]).abs().max()) < 1e-10
