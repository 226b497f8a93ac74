"""Confidence sequences for a latency quantile from an HdrHistogram (pure).

Howard & Ramdas (2022), fixed-quantile confidence sequence: for the true ``q``-quantile
``Q``, the count ``B_t`` of observations ``<= Q`` among the first ``t`` is at least
``Binomial(t, q)`` and the count ``C_t`` of observations ``< Q`` at most. The beta-binomial
mixtures of :mod:`proxy.rollout.sequential` bound both uniformly over ``t``: with
probability ``>= 1 − α``, at every look

* ``B_t > b*`` where ``b*`` is the largest count whose "rate below q" e-value reaches
  ``1/α_side`` — so at least ``b* + 1`` observations are ``<= Q``, i.e. ``Q >= X_(b*+1)``;
* ``C_t < c*`` where ``c*`` is the smallest count whose "rate above q" e-value reaches
  ``1/α_side`` — so ``Q <= X_(c*)``;

with ``α_side = α/2`` each. The order statistics are read from the histogram: the lower
bound takes the **lower edge** of its bucket, the upper bound the **upper edge**
(:func:`bucket_edges`: the proxy rounds a latency to whole microseconds, then HdrHistogram
with 3 significant digits keeps it in a bucket up to 1/1024 of its value wide), so the bucket
error widens the interval instead of biasing it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import accumulate
from operator import itemgetter

from proxy.rollout.sequential import log_e_above, log_e_below

#: HdrHistogram with 3 significant digits: 2048 sub-buckets, unit-wide below 2048 us.
_SUB_BUCKETS = 2048
_SUB_BITS = 10  # log2(half the sub-buckets): bucket width is 2**(floor(log2 v) - 10)


def bucket_edges(value_ms: float) -> tuple[float, float]:
    """The latencies (ms) a bucket reported at ``value_ms`` (its highest equivalent value,
    as :func:`proxy.observe.buckets_ms` gives it) may have come from."""
    h = round(value_ms * 1000.0)
    width = 1 if h < _SUB_BUCKETS else 1 << (h.bit_length() - 1 - _SUB_BITS)
    lowest = h - width + 1
    return max(lowest - 0.5, 0.0) / 1000.0, (h + 0.5) / 1000.0


def _largest(n: int, ok: Callable[[int], bool]) -> int:
    """Largest k in [0, n] with ``ok(k)`` true, ``ok`` true on a prefix; -1 when none."""
    lo, hi = -1, n  # ok(lo) is true (or lo = -1), the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def rank_bounds(t: int, q: float, alpha: float) -> tuple[int, int]:
    """1-based ranks ``(lo, hi)`` with ``X_(lo) <= Q <= X_(hi)`` at confidence ``1 − alpha``
    uniformly over looks; ``lo = 0`` means no lower bound yet, ``hi = t + 1`` no upper."""
    threshold = math.log(2.0 / alpha)
    # log_e_below(B) decreases in B, log_e_above(C) increases in C.
    b_star = _largest(t, lambda b: log_e_below(b, t, q) >= threshold)
    c_below = _largest(t, lambda c: log_e_above(c, t, q) < threshold)
    return b_star + 1, c_below + 1


def _at(hist: Sequence[tuple[float, int]], cumulative: Sequence[int], rank: int) -> float:
    i = bisect_left(cumulative, rank)
    if not 1 <= rank <= (cumulative[-1] if cumulative else 0):
        raise ValueError(f"rank {rank} of a histogram of "
                         f"{cumulative[-1] if cumulative else 0} observations")
    return hist[i][0]


def order_statistic(hist: Sequence[tuple[float, int]], rank: int) -> float:
    """The bucket value (ms) holding the ``rank``-th smallest observation (1-based)."""
    return _at(hist, list(accumulate(map(itemgetter(1), hist))), rank)


def quantile_bounds(hist: Sequence[tuple[float, int]], q: float, alpha: float,
                    ) -> tuple[float, float]:
    """A (1 − ``alpha``) confidence sequence ``(low, high)`` in ms for the ``q``-quantile of
    the latencies in ``hist`` (sorted (bucket value ms, count) pairs): ``low`` is 0 and
    ``high`` infinite until the data bound them."""
    cumulative = list(accumulate(map(itemgetter(1), hist)))
    t = cumulative[-1] if cumulative else 0
    lo, hi = rank_bounds(t, q, alpha)
    low = bucket_edges(_at(hist, cumulative, lo))[0] if lo >= 1 else 0.0
    high = bucket_edges(_at(hist, cumulative, hi))[1] if hi <= t else math.inf
    return low, high
