"""``Arm.quantile``: the nearest-rank rule, checked against a plain walk over the buckets."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from proxy.rollout.analysis import Arm


def walk(latency: tuple[tuple[float, int], ...], q: float) -> float:
    total = sum(c for _, c in latency)
    if total == 0:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value, count in latency:
        seen += count
        if seen >= rank:
            return value
    raise AssertionError("unreachable")


histograms = st.lists(st.integers(0, 5), max_size=40).map(
    lambda counts: tuple((float(i) + 0.5, c) for i, c in enumerate(counts)))


@given(latency=histograms, q=st.floats(0.0, 1.0))
def test_quantile_is_the_nearest_rank(latency: tuple[tuple[float, int], ...], q: float) -> None:
    assert Arm(0, 0, latency).quantile(q) == walk(latency, q)


def test_summary_reads_p50_and_p99() -> None:
    arm = Arm(100, 1, tuple((float(v), 1) for v in range(1, 101)))
    assert arm.summary()["latency_ms"] == {"p50": 50.0, "p99": 99.0}
    assert Arm(0, 0).summary()["latency_ms"] == {"p50": 0.0, "p99": 0.0}
    assert Arm(0, 0, ((1.0, 0), (2.0, 0))).quantile(0.5) == 0.0
