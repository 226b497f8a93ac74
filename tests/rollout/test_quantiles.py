"""Quantile confidence sequences: ranks against a brute-force search, bucket edges against
HdrHistogram itself, and seeded coverage over many looks."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from proxy.observe import buckets_ms, new_histogram
from proxy.rollout.quantiles import bucket_edges, order_statistic, quantile_bounds, rank_bounds
from proxy.rollout.sequential import log_e_above, log_e_below


def brute_ranks(t: int, q: float, alpha: float) -> tuple[int, int]:
    bar = math.log(2 / alpha)
    below = [b for b in range(t + 1) if log_e_below(b, t, q) >= bar]
    above = [c for c in range(t + 1) if log_e_above(c, t, q) >= bar]
    return (max(below) + 1 if below else 0), (min(above) if above else t + 1)


@pytest.mark.parametrize(("t", "q", "alpha"), [(0, 0.99, 0.01), (1, 0.5, 0.01),
                                               (30, 0.5, 0.05), (367, 0.99, 0.0033),
                                               (500, 0.99, 0.0033), (2000, 0.95, 0.01),
                                               (3000, 0.5, 0.001)])
def test_ranks_match_a_brute_force_search(t: int, q: float, alpha: float) -> None:
    assert rank_bounds(t, q, alpha) == brute_ranks(t, q, alpha)


def test_bucket_edges_hold_every_value_hdrhistogram_puts_in_the_bucket() -> None:
    h = new_histogram()
    rng = np.random.default_rng(2)
    values_us = np.unique(np.concatenate([np.arange(1, 3000), rng.integers(1, 10**9, 3000)]))
    for v in values_us:
        h.record_value(int(v))
    for value_ms, _ in buckets_ms(h):
        lo, hi = bucket_edges(value_ms)
        top = round(value_ms * 1000)
        bottom = h.get_lowest_equivalent_value(top)
        # the edges are the bucket's first and last microsecond, widened by the rounding
        assert lo == pytest.approx((bottom - 0.5) / 1000, abs=1e-12)
        assert hi == pytest.approx((top + 0.5) / 1000, abs=1e-12)
    assert bucket_edges(0.0) == (0.0, 0.0005)


def test_order_statistic_walks_the_histogram_forwards() -> None:
    hist = ((1.0, 2), (2.0, 3), (5.0, 1))
    assert [order_statistic(hist, r) for r in range(1, 7)] == [1.0, 1.0, 2.0, 2.0, 2.0, 5.0]
    with pytest.raises(ValueError):
        order_statistic(hist, 7)


def test_quantile_bounds_read_lower_and_upper_bucket_edges() -> None:
    hist = tuple((float(v), 10) for v in range(1, 101))  # 1000 samples, 1..100 ms
    lo, hi = rank_bounds(1000, 0.5, 0.01)
    low, high = quantile_bounds(hist, 0.5, 0.01)
    assert low == bucket_edges(order_statistic(hist, lo))[0]
    assert high == bucket_edges(order_statistic(hist, hi))[1]
    assert low < 50.0 < high
    assert quantile_bounds((), 0.99, 0.01) == (0.0, math.inf)
    # five samples all above a p99 are unlikely: the smallest is already a lower bound
    assert quantile_bounds(((10.0, 5),), 0.99, 0.01) == (bucket_edges(10.0)[0], math.inf)


def test_coverage_over_many_looks_is_at_least_one_minus_alpha() -> None:
    """The true p90 escapes the sequence (at any of 40 looks) in at most α of the runs."""
    rng = np.random.default_rng(9)
    q, alpha, runs, looks, batch = 0.9, 0.05, 2000, 40, 25
    ranks = cache(lambda t: rank_bounds(t, q, alpha))
    below = rng.binomial(batch, q, size=(runs, looks)).cumsum(axis=1)  # #{X <= Q}
    missed = 0
    for row in below:
        for i, b in enumerate(row):
            lo, hi = ranks(batch * (i + 1))
            if b < lo or b >= hi:  # X_(lo) > Q or X_(hi) < Q (continuous: no ties)
                missed += 1
                break
    assert missed / runs <= alpha
