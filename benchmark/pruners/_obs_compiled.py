"""AKR's exact greedy OBS as compiled code, one row at a time (the ``compiled`` solver).

Why: the ``lowrank`` solver (``akr._obs_rows_lowrank``) runs all rows of a chunk in lock
step, so at every step it streams the whole chunk's factor U (rows x k x d float64, hundreds
of MiB) from memory: it is bound by DRAM bandwidth. One row's factor is only ``8 k d`` bytes
(0.6 MiB for d = 385, 9.4 MiB for d = 1537 at 50%) and fits the last-level cache, so a
solver that finishes one row before it starts the next reads U from cache instead. Done row
by row in Python, the ~5 million greedy steps of the MiniLM model would cost more in
interpreter overhead than in arithmetic, so the loop is compiled with numba (``nogil``: the
row-chunk workers of :mod:`benchmark.pruners._obs_fast` run it in parallel threads).

What a row computes is ``akr._obs_rows_lowrank`` for one row, step for step: the score
``w_j^2 / max(diag_j, tiny)`` with pruned (and, with ``protect_last``, the bias, and with
N:M, closed-group) columns at +inf; the pivot is the first index of the smallest score (a NaN
score wins, as ``torch.argmin`` does); column p of the current inverse is
``G[p] - U[:t, p]^T U[:t]``; ``w -= col * (w_p / col_p)``; ``u_t = col / sqrt(col_p)``;
``diag -= u_t^2``; ``w_p = 0``. The element-wise operations round exactly as torch's do;
only the sum over t (torch hands it to a BLAS matrix product) is added in another order, so
the two solvers agree bitwise on every choice that is not within rounding of a tie.

Each row runs on one thread with no reduction that depends on the thread or chunk layout,
so the result is bitwise the same for any number of workers.
"""

from __future__ import annotations

import numpy as np
import torch

TINY = float(np.finfo(np.float64).tiny)
"""``torch.finfo(float64).tiny``: the floor of the diagonal in the score (``akr._candidates``)."""

try:  # numba is a project dependency; import lazily so the other solvers never need it
    import numba
except ImportError:  # pragma: no cover - exercised only without numba installed
    numba = None


def _require_numba() -> None:
    if numba is None:
        raise ImportError("obs_impl='compiled' needs numba (pip install numba; scripts/setup.sh)")


def _kernel(w, g, k, nm_n, nm_m, d_nm, protect_last, keep):  # pragma: no cover - compiled
    """Greedy OBS of every row of ``w`` (float64, ``(rows, d)``) in place, row after row.

    ``g`` is H^-1 ``(d, d)`` float64; ``keep`` (bool, ``(rows, d)``) receives the mask.
    ``nm_m == 0`` means unstructured; otherwise a group of ``nm_m`` consecutive columns (the
    first ``d_nm`` columns) closes once it has ``nm_m - nm_n`` zeros.
    """
    rows, d = w.shape
    tiny = TINY
    u = np.empty((max(k, 1), d))
    acc = np.empty(d)
    col = np.empty(d)
    diag = np.empty(d)
    score = np.empty(d)
    blocked = np.empty(d, dtype=np.bool_)
    n_groups = d_nm // nm_m if nm_m > 0 else 0
    zeros_in_group = np.zeros(max(n_groups, 1), dtype=np.int64)
    for r in range(rows):
        wr = w[r]
        for j in range(d):
            diag[j] = g[j, j]
            blocked[j] = False
        if protect_last:
            blocked[d - 1] = True
        for q in range(n_groups):
            zeros_in_group[q] = 0
        for t in range(k):
            # candidate: first index of the smallest score (NaN first), as torch.argmin
            for j in range(d):
                dj = diag[j]
                if dj < tiny:  # clamp_min(tiny); a NaN diagonal stays NaN
                    dj = tiny
                s = wr[j] * wr[j] / dj
                closed = nm_m > 0 and j < d_nm and zeros_in_group[j // nm_m] >= nm_m - nm_n
                if blocked[j] or closed:
                    s = np.inf
                score[j] = s
            p = 0
            best = score[0]
            if best == best:
                for j in range(1, d):
                    s = score[j]
                    if s != s:
                        p = j
                        break
                    if s < best:
                        best = s
                        p = j
            # column p of the current inverse: G[p] - U[:t, p]^T U[:t]
            for j in range(d):
                acc[j] = 0.0
            s0 = 0
            while s0 + 4 <= t:  # four factor rows per sweep: acc is read and written once
                c0 = u[s0, p]
                c1 = u[s0 + 1, p]
                c2 = u[s0 + 2, p]
                c3 = u[s0 + 3, p]
                u0 = u[s0]
                u1 = u[s0 + 1]
                u2 = u[s0 + 2]
                u3 = u[s0 + 3]
                for j in range(d):
                    acc[j] = acc[j] + c0 * u0[j] + c1 * u1[j] + c2 * u2[j] + c3 * u3[j]
                s0 += 4
            while s0 < t:
                c0 = u[s0, p]
                u0 = u[s0]
                for j in range(d):
                    acc[j] = acc[j] + c0 * u0[j]
                s0 += 1
            gp = g[p]
            for j in range(d):
                col[j] = gp[j] - acc[j]
            dpp = col[p]
            a = wr[p] / dpp
            root = np.sqrt(dpp)
            ut = u[t]
            for j in range(d):
                wr[j] = wr[j] - col[j] * a
                v = col[j] / root
                ut[j] = v
                diag[j] = diag[j] - v * v
            wr[p] = 0.0
            blocked[p] = True
            if nm_m > 0 and p < d_nm:
                zeros_in_group[p // nm_m] += 1
        for j in range(d):
            keep[r, j] = not blocked[j] or (protect_last and j == d - 1)


_compiled = None


def _get_kernel():
    """The kernel compiled on first use (cached on disk by numba for later processes)."""
    global _compiled
    if _compiled is None:
        _require_numba()
        _compiled = numba.njit(nogil=True, cache=True, fastmath=False)(_kernel)
    return _compiled


def obs_rows_compiled(
    w: torch.Tensor, hinv: torch.Tensor, k: int, nm, protect_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy OBS of a chunk of rows, row after row (the ``_obs_rows_*`` contract).

    ``w`` (``(rows, d)``) and ``hinv`` must be float64 CPU tensors; ``w`` is updated in place
    (pruned entries hold rounding-level values, zeroed by the caller) and returned with the
    keep mask.
    """
    if w.dtype != torch.float64 or hinv.dtype != torch.float64:
        raise ValueError("the compiled OBS solver runs in float64 only (obs_dtype=float64)")
    if w.device.type != "cpu":
        raise ValueError("the compiled OBS solver runs on CPU; use obs_impl=batched on a GPU")
    rows, d = w.shape
    n, m = nm if nm is not None else (0, 0)
    d_nm = d - int(protect_last)
    wn = w.contiguous().numpy()
    keep = np.empty((rows, d), dtype=np.bool_)
    _get_kernel()(wn, hinv.contiguous().numpy(), int(k), int(n), int(m), int(d_nm),
                  bool(protect_last), keep)  # fmt: skip
    out = torch.from_numpy(wn)
    if out.data_ptr() != w.data_ptr():
        w.copy_(out)
    return w, torch.from_numpy(keep)


ROWS_PER_CHUNK = 8
"""Rows per task of the compiled solver's workers: small for an even split over the workers.
The result does not depend on it (every row is computed on its own)."""


__all__ = ["ROWS_PER_CHUNK", "obs_rows_compiled"]
