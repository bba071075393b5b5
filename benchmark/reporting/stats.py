"""Statistics of the suite's protocol (METHODS.md, "Statistics and reporting").

Every proportion gets a 95% Wilson interval from its counts. Two units (docs/statistics.md):
the EXAMPLE for the intervals and tests conditional on the fine-tunes at hand (bootstrap over
sentences, McNemar, sign-flip), the SEED for a method claim over several seeds (per-seed
paired deltas, random-effects t-interval and t-test).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of the proportion k/n, as fractions; (nan, nan) when n == 0."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    low, high = centre - half, centre + half
    # exact ends at k = 0 and k = n (rounding can leave 1e-17 outside)
    return (0.0 if k == 0 else max(0.0, low)), (1.0 if k == n else min(1.0, high))


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int], n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins of the max probability (Guo et al., 2017).

    ``probs``: (n, classes) predicted probabilities; ``labels``: the true classes. Sum over bins
    of (bin share) * |accuracy in bin - mean confidence in bin|; the top bin includes 1.0.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError("probs must be (n, classes) with one label per row")
    if len(labels) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


# ---------------------------------------------------------------------------------------------
# Paired tests


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts ``b`` and ``c``.

    ``b`` = pairs where only the first method is right (here: survived), ``c`` = only the
    second. Under H0 each discordant pair is a fair coin: p = min(1, 2 * P[X <= min(b, c)])
    with X ~ Binomial(b + c, 1/2); p = 1 when there is no discordant pair.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1))  # exact integer arithmetic
    return min(1.0, 2.0 * tail / 2**n)


def lattice_denominator(values: Sequence[float], max_denominator: int = 10_000) -> int:
    """The smallest L <= ``max_denominator`` that makes every value times L an integer.

    Per-example seed means of 0/1 differences over S seeds are multiples of 1/S (1/lcm of the
    seed counts when examples have different numbers of shared seeds), so L is S or that lcm.
    Raises ValueError when there is none (the values are not on such a lattice).
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    for den in range(1, max_denominator + 1):
        scaled = x * den
        if np.all(np.abs(scaled - np.rint(scaled)) <= 1e-6):
            return den
    raise ValueError(f"values are not multiples of 1/L for any L <= {max_denominator}")


def sign_flip_null_counts(magnitudes: Sequence[int]) -> tuple[np.ndarray, int]:
    """Exact null distribution of S = sum_i s_i k_i over the 2^n sign patterns s_i = +-1.

    ``magnitudes`` are the positive integers |k_i|. Returns ``(counts, offset)``: ``counts[j]``
    is the number of sign patterns (an exact Python integer) whose sum is ``j - offset``.
    Equal magnitudes are taken together: the ``n_a`` terms of magnitude a contribute
    a * (2B - n_a) with B ~ Binomial(n_a, 1/2), and the groups are convolved.
    """
    k = np.asarray(magnitudes, dtype=np.int64)
    if k.size and k.min() <= 0:
        raise ValueError("magnitudes must be positive integers")
    offset = int(k.sum())
    counts = np.array([1], dtype=object)  # the sum over no terms: 0, once
    for a, n in zip(*np.unique(k, return_counts=True), strict=True):
        a, n = int(a), int(n)
        kernel = np.zeros(2 * a * n + 1, dtype=object)  # sums -a*n .. +a*n
        for b in range(n + 1):
            kernel[2 * a * b] = math.comb(n, b)
        counts = np.convolve(counts, kernel)
    return counts, offset


def sign_flip_test(diffs: Sequence[float], denominator: int | None = None) -> float:
    """Exact two-sided paired sign-flip (permutation) test of mean(diffs) == 0.

    Statistic |sum d_i|; under H0 every sign pattern of the d_i is equally likely. Zero
    differences carry no sign and are dropped. The d_i are per-example means over S seeds of
    0/1 differences, so they are multiples of 1/L (``denominator``; found by
    :func:`lattice_denominator` when not given): the null distribution of the integer sum
    L * sum d_i is computed exactly (:func:`sign_flip_null_counts`), and
    p = #{patterns with |S*| >= |S|} / 2^n, with no Monte Carlo floor. For 0/1 survival with one
    seed the d_i are -1/0/+1 and p equals :func:`mcnemar_exact`.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.size and (np.nanmax(np.abs(d)) > 1 + 1e-12):
        raise ValueError("sign_flip_test expects differences in [-1, 1]")
    d = d[np.isfinite(d)]
    den = lattice_denominator(d) if denominator is None else int(denominator)
    k = np.rint(d * den).astype(np.int64)
    if d.size and np.abs(d * den - k).max() > 1e-6:
        raise ValueError(f"differences are not multiples of 1/{den}")
    k = k[k != 0]
    if k.size == 0:
        return 1.0
    observed = abs(int(k.sum()))
    counts, offset = sign_flip_null_counts(np.abs(k))
    sums = np.arange(len(counts)) - offset
    hits = sum(counts[np.abs(sums) >= observed], 0)
    return min(1.0, hits / 2 ** int(k.size))  # int / int: correctly rounded, any size


def seed_t_test(deltas: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Random-effects t-interval and two-sided one-sample t-test over per-seed deltas.

    Seeds are the unit: with S per-seed paired deltas d_s (row minus reference on the same
    sentences, same dense seed), mean d, sample sd s_d, the interval is
    d +- t_{(1+level)/2, S-1} s_d / sqrt(S) and p = 2 P[T_{S-1} >= |d| / (s_d / sqrt(S))].
    With three seeds the t quantile has 2 degrees of freedom (4.30 at 95%). Returns
    ``(mean, ci_low, ci_high, p)``; interval and p are NaN with fewer than two seeds. When the
    deltas do not vary the interval is the point and p is 0 (1 when every delta is 0).
    """
    from scipy import stats as st

    x = np.asarray(deltas, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if x.size < 2:
        return mean, float("nan"), float("nan"), float("nan")
    if np.ptp(x) == 0.0:  # no spread: a t statistic of 0/0 or +-inf
        return mean, mean, mean, (1.0 if mean == 0.0 else 0.0)
    se = float(x.std(ddof=1)) / math.sqrt(x.size)
    df = x.size - 1
    half = float(st.t.ppf((1 + level) / 2, df)) * se
    p = float(min(1.0, 2 * st.t.sf(abs(mean) / se, df)))
    return mean, mean - half, mean + half, p


def holm_adjust(p_values: Sequence[float], m: int | None = None) -> list[float]:
    """Holm step-down adjusted p-values, in the input order; NaNs stay NaN.

    Sorted p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). ``m`` is
    the size of the family declared beforehand; by default the finite p-values. A declared
    member without a p-value (not run, degenerate) counts in ``m`` as p = 1: it sorts last
    and raises every other member's multiplier, as if it had been tested and found nothing.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if m is None:
        m = len(ok)
    if m < len(ok):
        raise ValueError(f"holm_adjust: family of {m} cannot hold {len(ok)} p-values")
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


# ---------------------------------------------------------------------------------------------
# Cluster bootstrap over examples


def _per_seed_matrix(
    clusters: Sequence, seeds: Sequence, values: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """(cluster x seed) sums and counts of ``values``."""
    cl = pd_factorize(clusters)
    sd = pd_factorize(seeds)
    v = np.asarray(values, dtype=np.float64)
    if not (len(cl) == len(sd) == len(v)):
        raise ValueError("clusters, seeds and values must have the same length")
    sums = np.zeros((cl.max() + 1, sd.max() + 1))
    counts = np.zeros_like(sums)
    np.add.at(sums, (cl, sd), v)
    np.add.at(counts, (cl, sd), 1.0)
    return sums, counts


def pd_factorize(values: Sequence) -> np.ndarray:
    """Integer codes 0..k-1 of the distinct values (first appearance order)."""
    codes: dict = {}
    return np.array([codes.setdefault(v, len(codes)) for v in values], dtype=np.int64)


def _seed_mean(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over seeds of the per-seed means (last axis = seeds); seeds without rows skipped."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = sums / counts
    return np.nanmean(np.where(counts > 0, per_seed, np.nan), axis=-1)


RESAMPLE_CHUNK = 500  # resamples drawn at once
RESAMPLE_CACHE_ENTRIES = 1 << 24  # draws kept at most (uint16: 32 MB) per cached stack


@functools.lru_cache(maxsize=4)
def _resample_stack(n_cl: int, n_boot: int, seed: int) -> np.ndarray:
    """Every resample's draw counts per cluster (``n_boot x n_cl``, read-only uint16).

    They depend on nothing but the number of clusters, ``n_boot`` and the seed, so the
    statistics of a report (every cell and every paired comparison on one sample of 872
    sentences) share one stack instead of drawing it anew: drawing is nearly all of a
    bootstrap's time."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n_cl), dtype=np.uint16)
    for start in range(0, n_boot, RESAMPLE_CHUNK):
        k = min(RESAMPLE_CHUNK, n_boot - start)
        out[start : start + k] = rng.multinomial(n_cl, np.full(n_cl, 1.0 / n_cl), size=k)
    out.flags.writeable = False
    return out


def _resamples(n_cl: int, n_boot: int, seed: int):
    """``(first index, draw counts as float64)`` per chunk of the bootstrap's resamples: the
    multinomial draws of ``default_rng(seed)`` in chunks of :data:`RESAMPLE_CHUNK`, the same
    numbers whether they come from the cache (:func:`_resample_stack`, when the stack is small
    enough to keep) or are drawn here."""
    if n_cl * n_boot <= RESAMPLE_CACHE_ENTRIES and n_cl < 1 << 16:
        stack = _resample_stack(n_cl, n_boot, seed)
        for start in range(0, n_boot, RESAMPLE_CHUNK):
            yield start, stack[start : start + RESAMPLE_CHUNK].astype(np.float64)
        return
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, RESAMPLE_CHUNK):
        k = min(RESAMPLE_CHUNK, n_boot - start)
        yield start, rng.multinomial(n_cl, np.full(n_cl, 1.0 / n_cl), size=k).astype(np.float64)


def cluster_bootstrap(
    clusters: Sequence, seeds: Sequence, values: Sequence[float], n_boot: int = 10_000,
    seed: int = 0, level: float = 0.95,
) -> tuple[float, float, float]:  # fmt: skip
    """Mean over seeds of the per-seed mean of ``values``, with a percentile bootstrap interval.

    One row per (cluster, seed) observation, e.g. (example_index, seed, survived 0/1). The
    clusters (examples) are resampled with replacement, every seed's rows of a drawn example
    together, so repeated seeds on the same sentences add no spurious precision. Returns
    ``(mean, ci_low, ci_high)``; all NaN for no data.
    """
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    sums, counts = _per_seed_matrix(clusters, seeds, values)
    point = float(_seed_mean(sums.sum(0), counts.sum(0)))
    stats = np.empty(n_boot)
    for start, w in _resamples(sums.shape[0], n_boot, seed):
        stats[start : start + len(w)] = _seed_mean(w @ sums, w @ counts)
    alpha = (1 - level) / 2
    low, high = np.nanquantile(stats, [alpha, 1 - alpha])
    return point, float(low), float(high)


def paired_cluster_bootstrap(
    a: Mapping[tuple, float], b: Mapping[tuple, float], n_boot: int = 10_000, seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float, int]:  # fmt: skip
    """Difference of two rows on the (example, seed) keys both have, with a bootstrap interval.

    ``a`` and ``b`` map ``(example_index, seed)`` to a value (survived 0/1). Per example, the
    difference a - b is averaged over its shared seeds; the estimate is the mean over examples
    of those, and the examples are resampled with replacement (all seeds of one example
    together). Returns ``(delta, ci_low, ci_high, n_pairs)``, n_pairs = the distinct examples
    both have (the unit of the interval and the test; an example attacked under three shared
    seeds is one pair, its difference averaged over them).
    """
    per_example = paired_example_diffs(a, b)
    n_pairs = len(per_example)
    if not per_example:
        return float("nan"), float("nan"), float("nan"), 0
    ids = list(per_example)
    mean, low, high = cluster_bootstrap(
        ids, [0] * len(ids), [per_example[i] for i in ids], n_boot=n_boot, seed=seed,
        level=level,
    )  # fmt: skip
    return mean, low, high, n_pairs


def _mean_diff_by(a: Mapping[tuple, float], b: Mapping[tuple, float], part: int) -> dict:
    """Mean of a - b over the shared ``(example, seed)`` keys, grouped by the key's ``part``
    (0: example, 1: seed), sorted by group."""
    sums: dict = {}
    counts: dict = {}
    for key in set(a) & set(b):
        g = key[part]
        sums[g] = sums.get(g, 0.0) + float(a[key]) - float(b[key])
        counts[g] = counts.get(g, 0) + 1
    return {g: sums[g] / counts[g] for g in sorted(sums, key=str)}


def paired_example_diffs(a: Mapping[tuple, float], b: Mapping[tuple, float]) -> dict:
    """Per example: mean over its shared seeds of a - b (keys ``(example, seed)``)."""
    return _mean_diff_by(a, b, 0)


def per_seed_deltas(a: Mapping[tuple, float], b: Mapping[tuple, float]) -> dict:
    """Per seed: mean over its shared examples of a - b (keys ``(example, seed)``).

    The paired delta of one seed (one dense fine-tune): row minus reference on the sentences
    both attacked under that seed. Sorted by seed.
    """
    return _mean_diff_by(a, b, 1)


def wilson_halfwidth_n(halfwidth: float, p: float, z: float = Z95) -> int:
    """Smallest n whose Wilson interval at proportion ``p`` has half-width <= ``halfwidth``."""
    n = 1
    while True:
        k = p * n
        lo, hi = _wilson_float(k, n, z)
        if (hi - lo) / 2 <= halfwidth:
            return n
        n += 1


def _wilson_float(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return centre - half, centre + half
