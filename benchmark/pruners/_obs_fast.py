"""A faster exact greedy OBS for AKR, with the call contract of :func:`akr.obs_prune`.

Why the low-rank solver is slow: at step t of a row it forms column p of the row's current
inverse as ``G[p] - U[:t, p]^T U[:t]``, which streams the whole ``t x d`` factor U from
memory for 2 flops per 8 bytes. Over a row that is ``8 d k^2 / 2`` bytes (3.6 GB for the
384 x 1537 MiniLM output layer at 50%), so the solver runs at the machine's memory bandwidth
(``scripts/bench_bandwidth.py``) whatever the arithmetic does.

What this module changes (the greedy choices are the same in exact arithmetic):

- ``impl="blocked"`` (default): every row keeps its inverse explicitly as a ``d x d`` matrix
  M that is brought up to date only every ``block`` steps by one rank-``block`` GEMM
  (``M -= U_b^T U_b``); in between, column p is ``M[p] - U_b[:, p]^T U_b`` with at most
  ``block`` recent vectors. The O(d^2 k) work then runs as matrix-matrix products at the
  core's arithmetic speed instead of matrix-vector ones at memory speed, and a step reads
  O(d * block) bytes instead of O(d * t). The running diagonal, the score, the candidate
  choice (``akr._candidates``) and the weight update are computed exactly as in
  ``akr._obs_rows_lowrank``.
- Parallelism across fixed chunks of rows: ``workers`` Python threads each take whole chunks
  and run them with ONE intra-op thread (torch kernels release the GIL). The chunking depends
  only on the layer shape, ``block``, ``dtype`` and ``chunk_bytes``, never on the number of
  threads, and every chunk (and the factorisation of H) is computed single-threaded, so the
  result is bitwise the same for any thread count. ``torch.set_num_threads`` does not
  isolate threads (measured with torch 2.13 / OpenMP / MKL): it changes the OpenMP and MKL
  counts of the calling thread only, but also a global default that every thread created
  later starts from. So the caller's count is set to 1 before the pool starts, each worker
  sets and checks it for itself (``_init_worker``), and the caller's count is restored only
  after all workers have finished (a worker restoring it would hand a count of 2 to
  workers that start after it).
- ``impl="compiled"`` (:mod:`benchmark.pruners._obs_compiled`): the lowrank solver's steps
  in numba-compiled code, one row finished before the next so that the row's factor stays in
  the last-level cache; small fixed chunks of rows go to the same single-threaded workers.
  float64 on CPU only.
- ``impl="batched"``: the GPU path. The blocked solver's arithmetic on row batches that run
  one after another on the tensors' device, each batch in parallel inside the kernels (as
  OBC batches rows); on CUDA a batch may fill half the device's memory (``chunk_bytes`` on
  other devices). The batch size does not change the masks on CPU (tested); the weights may
  differ in the last bits, as a batched GEMM may order its sums by batch count (seen on one
  CPU). On a GPU ``scripts/device_check.py`` compares its masks with the lowrank solver's.
- ``dtype=torch.float32`` follows the official AKR code's stabilisation: the Hessian gets
  ``2e-4 * mean(diag)`` damping (the code's ``invert()`` adds 1e-4 to the matrix in place and
  ``prepare_sparse`` adds 1e-4 again), multiplied by 10 whenever the Cholesky factorisation
  fails. float64 keeps akr's default (no damping unless H is numerically singular).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import torch

from benchmark.pruners._layerwise import inverse_spd, mark_dead_inputs
from benchmark.pruners._obs_compiled import ROWS_PER_CHUNK, obs_rows_compiled
from benchmark.pruners.akr import (
    _candidates,
    _obs_rows_full,
    _obs_rows_lowrank,
    _zero_pattern_groups,
)

OFFICIAL_F32_DAMP = 2e-4
"""Relative damping of the official AKR float32 loop (1e-4 added twice to H)."""

DEFAULT_BLOCK = 64

IMPLS = ("blocked", "lowrank", "full", "compiled", "batched")

DEVICE_MEMORY_SHARE = 0.5
"""Share of a CUDA device's total memory that one row batch of ``impl="batched"`` may fill."""


def batch_bytes(device: torch.device, chunk_bytes: int) -> int:
    """Memory budget of one row batch of the batched solver on ``device``.

    On CUDA a share of the device's total memory (a property of the device, not of what is
    free at the moment, so the batches of a run are reproducible); ``chunk_bytes`` elsewhere.
    """
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return max(chunk_bytes, int(total * DEVICE_MEMORY_SHARE))
    return chunk_bytes


def _init_worker() -> None:
    """Thread-pool initializer: this worker thread runs torch kernels on one thread."""
    torch.set_num_threads(1)
    if torch.get_num_threads() != 1:  # pragma: no cover - defensive
        raise RuntimeError("could not restrict torch to one thread in a worker")


@contextmanager
def _single_threaded() -> Iterator[None]:
    """One intra-op thread in the calling thread (and MKL's global setting) until exit.

    The previous count is restored only here, after every worker has finished: a worker that
    restored it itself would hand MKL's GLOBAL thread count back to the others mid-chunk.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _obs_rows_blocked(
    w: torch.Tensor, hinv: torch.Tensor, k: int, nm, protect_last: bool, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy OBS of a chunk of rows with each row's inverse refreshed every ``block`` steps.

    Invariant: the row's current inverse is ``M - U_b^T U_b`` where ``U_b`` holds the
    normalised downdate vectors since the last refresh (``j`` of them). The per-step
    gathers and scatters use ``gather``/``index_select``/``scatter_`` (cheaper to launch
    than advanced indexing; same values), since with few rows per chunk the step's fixed
    cost matters next to the refresh GEMM.
    """
    rows, d = w.shape
    m = hinv.contiguous().unsqueeze(0).repeat(rows, 1, 1)
    m_flat = m.view(rows * d, d)
    ub = torch.zeros(rows, block, d, dtype=w.dtype, device=w.device)
    diag = torch.diagonal(hinv).expand(rows, d).clone()
    pruned = torch.zeros(rows, d, dtype=torch.bool, device=w.device)
    offset = torch.arange(rows, device=w.device) * d
    zero = torch.zeros(rows, 1, dtype=w.dtype, device=w.device)
    true = torch.ones(rows, 1, dtype=torch.bool, device=w.device)
    j = 0
    for _ in range(k):
        p = _candidates(w, diag, pruned, nm, protect_last)
        p1 = p[:, None]
        col = m_flat.index_select(0, offset + p)  # (rows, d): row p of each M (symmetric)
        if j:
            coef = ub[:, :j].gather(2, p.view(rows, 1, 1).expand(rows, j, 1))  # (rows, j, 1)
            col = col - torch.bmm(coef.transpose(1, 2), ub[:, :j]).squeeze(1)
        dpp = col.gather(1, p1)  # (rows, 1)
        w.sub_(col * (w.gather(1, p1) / dpp))
        vec = col / dpp.sqrt()
        ub[:, j] = vec
        diag.sub_(vec * vec)
        w.scatter_(1, p1, zero)
        pruned.scatter_(1, p1, true)
        j += 1
        if j == block:
            m.baddbmm_(ub.transpose(1, 2), ub, alpha=-1.0)
            j = 0
    return w, ~pruned


def chunk_rows(d_out: int, d: int, k: int, impl: str, dtype: torch.dtype, chunk_bytes: int,
               block: int = DEFAULT_BLOCK) -> int:  # fmt: skip
    """Rows per chunk: a function of the shape and the memory budget only (not of threads)."""
    if impl == "compiled":  # rows are solved one by one: chunks only share out the work
        return min(d_out, ROWS_PER_CHUNK)
    per_row = {"full": d * d, "lowrank": d * k, "blocked": d * d + block * d,
               "batched": d * d + block * d}[impl]  # fmt: skip
    size = torch.finfo(dtype).bits // 8
    return max(1, min(d_out, chunk_bytes // (per_row * size)))


@torch.no_grad()
def obs_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    protect_last: bool = False,
    impl: str = "blocked",
    dtype: torch.dtype = torch.float64,
    chunk_bytes: int = 256 * 2**20,
    damp: float | None = None,
    min_pivot: float | None = None,
    zeros_per_row: str = "floor",
    official_damp: float | None = None,
    block: int = DEFAULT_BLOCK,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Exact greedy OBS, same number of zeros per row; drop-in for ``akr.obs_prune``.

    Args (as ``akr.obs_prune`` unless said):
        weight, hessian, sparsity, nm, protect_last, chunk_bytes, min_pivot, zeros_per_row,
            official_damp: as there.
        impl: ``blocked`` (default, see module docstring), ``lowrank`` or ``full`` (akr's
            solvers, run through this module's threaded chunk driver), ``compiled`` (row by
            row in compiled code, float64 on CPU) or ``batched`` (the device path: row
            batches of the blocked solver one after another, see :func:`batch_bytes`).
        dtype: dtype of the greedy loop (default float64).
        damp: relative damping added to H before inversion (raised x10 while the Cholesky
            fails or its pivot is below ``min_pivot``); None: 0 for float64, the official
            code's 2e-4 for float32. Ignored with ``official_damp``.
        block: steps between refreshes of the blocked solver's explicit inverse.
        workers: threads working on row chunks; None: ``torch.get_num_threads()``. The result
            does not depend on it.

    Returns:
        (pruned weight float64 with exact zeros where pruned, keep mask ``(d_out, d)``,
        relative damping used).
    """
    d_out, d = weight.shape
    d_prun = d - int(protect_last)
    if nm is not None:
        if zeros_per_row != "floor":
            raise ValueError("N:M pruning needs zeros_per_row='floor'")
        if d_prun % nm[1]:
            raise ValueError(f"input dimension {d_prun} is not divisible by M={nm[1]}")
        k = d_prun // nm[1] * (nm[1] - nm[0])
    elif zeros_per_row == "floor":
        k = int(d_prun * sparsity)
    elif zeros_per_row == "official":
        k = max(int(d * sparsity) - 1, 0)
    else:
        raise ValueError(f"zeros_per_row must be 'floor' or 'official', got {zeros_per_row!r}")
    if impl not in IMPLS:
        raise ValueError(f"obs impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    cpu = weight.device.type == "cpu"
    if impl == "compiled" and (dtype != torch.float64 or not cpu):
        raise ValueError("obs impl 'compiled' runs in float64 on CPU; on a GPU use 'batched'")
    w = weight.to(torch.float64).clone()
    h = hessian.to(torch.float64).clone()
    mark_dead_inputs(h, w[:, :d_prun])
    if damp is None:
        damp = OFFICIAL_F32_DAMP if dtype == torch.float32 else 0.0
    if min_pivot is None:
        min_pivot = 1e-10 if dtype == torch.float64 else 1e-6
    # The factorisation is threaded LAPACK whose rounding depends on the thread count: it
    # runs single-threaded on CPU too (a 1537 x 1537 Cholesky is well under a second).
    with _single_threaded() if cpu else nullcontext():
        if official_damp is not None:
            groups = _zero_pattern_groups(w, h, official_damp)
            used = max(g[2] for g in groups)
        else:
            hinv, used = inverse_spd(h, damp, min_pivot)
            groups = [(None, hinv, used)]
    if k == 0:
        return w, torch.ones_like(w, dtype=torch.bool), used
    if impl == "batched":
        chunk_bytes = batch_bytes(weight.device, chunk_bytes)
    rows = chunk_rows(d_out, d, k, impl, dtype, chunk_bytes, block)
    solvers: dict[str, Callable] = {
        "blocked": lambda wc, hi: _obs_rows_blocked(wc, hi, k, nm, protect_last, block),
        "batched": lambda wc, hi: _obs_rows_blocked(wc, hi, k, nm, protect_last, block),
        "compiled": lambda wc, hi: obs_rows_compiled(wc, hi, k, nm, protect_last),
        "lowrank": lambda wc, hi: _obs_rows_lowrank(wc, hi, k, nm, protect_last),
        "full": lambda wc, hi: _obs_rows_full(wc, hi, k, nm, protect_last),
    }
    solver = solvers[impl]
    out = torch.empty_like(w)
    keep = torch.empty(w.shape, dtype=torch.bool, device=w.device)
    tasks = []  # (row indices, H^-1 in the loop dtype), fixed by shape and budget only
    for idx, hinv, _ in groups:
        hinv = hinv.to(dtype)
        sel = torch.arange(d_out, device=w.device) if idx is None else idx
        tasks += [(sel[r0 : r0 + rows], hinv) for r0 in range(0, sel.numel(), rows)]

    def run(task) -> None:
        part, hi = task
        wc, kc = solver(w[part].to(dtype), hi)
        out[part], keep[part] = wc.to(torch.float64), kc

    n_workers = max(1, min(len(tasks), workers or torch.get_num_threads()))
    if impl == "batched":
        n_workers = 1  # one batch after another; the kernels parallelise inside a batch
    if not cpu:
        for task in tasks:  # one chunk after another; the device parallelises inside
            run(task)
    else:
        with _single_threaded():
            if n_workers == 1:
                for task in tasks:
                    run(task)
            else:
                with ThreadPoolExecutor(n_workers, "obs", initializer=_init_worker) as pool:
                    for fut in [pool.submit(run, task) for task in tasks]:
                        fut.result()
    out.masked_fill_(~keep, 0.0)
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError("OBS produced non-finite weights; try dtype=float64")
    return out, keep, used


def worker_thread_counts(workers: int = 2) -> dict[str, list[int]]:
    """``torch.get_num_threads()`` seen by fresh threads, and by pool workers of this module.

    "fresh": plain pool threads (they start from the last count set by any thread);
    "worker": this module's workers, which must all report 1.
    """
    seen: dict[str, list[int]] = {"fresh": [], "worker": []}
    lock = threading.Lock()

    def probe(key: str) -> None:
        with lock:
            seen[key].append(torch.get_num_threads())

    with ThreadPoolExecutor(workers) as pool:
        for fut in [pool.submit(probe, "fresh") for _ in range(workers)]:
            fut.result()
    with _single_threaded(), ThreadPoolExecutor(workers, initializer=_init_worker) as pool:
        for fut in [pool.submit(probe, "worker") for _ in range(workers)]:
            fut.result()
    return seen


__all__ = [
    "IMPLS", "OFFICIAL_F32_DAMP", "batch_bytes", "chunk_rows", "obs_prune",
    "worker_thread_counts",
]  # fmt: skip
