"""Observatory, per-variant counters/histograms, snapshots and windows."""

from __future__ import annotations

import itertools
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import Settings
from proxy.config_load import parse_settings
from proxy.errors import Cause
from proxy.observe import (
    BUCKETS_S,
    HIGHEST_US,
    Observatory,
    VariantStats,
    delta,
    new_histogram,
    quantiles_ms,
)

BACKEND = Cause.BACKEND


def make_settings(variants: dict[str, str]) -> Settings:
    return parse_settings({
        "version": 1,
        "backends": {"b1": {"endpoints": ["http://127.0.0.1:9001"]},
                     "b2": {"endpoints": ["http://127.0.0.1:9002"]},
                     "b3": {"endpoints": ["http://127.0.0.1:9003"]}},
        "routes": [{"name": "sentiment", "variants": variants,
                    "split": {"weights": dict.fromkeys(variants, 1)}}],
    })


@pytest.mark.parametrize(("status", "code"), [
    (100, "1xx"), (200, "2xx"), (204, "2xx"), (304, "3xx"), (404, "4xx"), (499, "4xx"),
    (500, "5xx"), (502, "5xx"), (599, "5xx"), (0, "5xx"), (42, "5xx"), (600, "5xx"),
    (999, "5xx"),
])
def test_status_classes(status: int, code: str) -> None:
    vs = VariantStats("r", "v")
    vs.record(status, 0.01, 0.005, cause=BACKEND)
    assert vs.codes() == {c: int(c == code) for c in ("1xx", "2xx", "3xx", "4xx", "5xx")}


@pytest.mark.parametrize(("duration_s", "le_index"), [
    (0.0, 0), (0.0005, 0), (0.001, 0), (0.0010001, 1), (0.0025, 1), (0.025, 4),
    (0.0250001, 5), (1.0, 9), (59.9, 14), (60.0, 14), (60.5, 15), (7200.0, 15),
])
def test_prometheus_buckets_use_le(duration_s: float, le_index: int) -> None:
    vs = VariantStats("r", "v")
    vs.record(200, duration_s, None, cause=BACKEND)
    assert vs.duration_buckets() == [int(i >= le_index) for i in range(len(BUCKETS_S) + 1)]
    assert vs.ttfb_buckets() == [0] * (len(BUCKETS_S) + 1)


def test_out_of_range_durations_are_clamped_not_dropped() -> None:
    vs = VariantStats("r", "v")
    for d in (-1.0, 0.0, 1e-9, 4000.0, 1e9):
        vs.record(200, d, d, cause=BACKEND)
    assert vs.latency.get_total_count() == 5
    assert vs.ttfb_buckets()[-1] == 5
    assert vs.latency.get_max_value() >= HIGHEST_US


def test_record_sums_and_ttfb_optional() -> None:
    vs = VariantStats("r", "v")
    vs.record(200, 0.25, 0.1, cause=BACKEND)
    vs.record(200, 0.5, None, cause=BACKEND)
    assert vs.count == 2
    assert vs.duration_sum_s == 0.75
    assert vs.ttfb_sum_s == 0.1
    assert vs.latency.get_total_count() == 2
    assert vs.ttfb_buckets()[-1] == 1


def test_upstream_errors() -> None:
    vs = VariantStats("r", "v")
    vs.record_upstream_error("connect")
    vs.record_upstream_error("connect")
    vs.record_upstream_error("reset")
    assert vs.upstream_errors == {"connect": 2, "timeout": 0, "reset": 1}
    with pytest.raises(ValueError, match="unknown upstream error"):
        vs.record_upstream_error("bogus")  # type: ignore[arg-type]
    assert vs.count == 0  # an upstream error alone is not a response


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 700),
                          st.floats(-1.0, 5000.0, allow_nan=False),
                          st.none() | st.floats(0.0, 100.0, allow_nan=False)),
                max_size=80))
def test_counts_and_buckets_sum_exactly(records: list[tuple[int, float, float | None]]) -> None:
    vs = VariantStats("r", "v")
    for status, duration, ttfb in records:
        vs.record(status, duration, ttfb, cause=BACKEND)
    n = len(records)
    n_ttfb = sum(t is not None for _, _, t in records)
    assert vs.count == n
    assert sum(vs.codes().values()) == n
    assert vs.latency.get_total_count() == n
    assert vs.ttfb_buckets()[-1] == n_ttfb
    buckets = vs.duration_buckets()
    assert buckets[-1] == n
    assert all(a <= b for a, b in itertools.pairwise(buckets))
    for i, bound in enumerate(BUCKETS_S):
        assert buckets[i] == sum(d <= bound for _, d, _ in records)
    assert vs.ttfb_buckets()[-1] == n_ttfb
    assert math.isclose(vs.duration_sum_s, sum(d for _, d, _ in records), abs_tol=1e-6)
    snap = vs.snapshot()
    assert snap.requests == n
    assert snap.errors == vs.codes()["5xx"]
    assert snap.latency.get_total_count() == n


def test_snapshot_is_a_copy_and_delta_is_the_window() -> None:
    vs = VariantStats("r", "v")
    for _ in range(10):
        vs.record(200, 0.001, 0.0005, cause=BACKEND)
    first = vs.snapshot()
    for _ in range(5):
        vs.record(503, 0.2, 0.1, cause=BACKEND)
    vs.record(200, 0.2, 0.1, aborted=True, cause=BACKEND)
    vs.record_upstream_error("timeout")
    second = vs.snapshot()
    assert first.requests == 10
    assert first.latency.get_total_count() == 10  # unaffected by later records
    window = delta(second, first)
    assert window.requests == 6
    assert window.errors == 6  # 5 x 5xx + 1 aborted
    assert window.error_rate == 1.0
    assert window.codes == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 5}
    assert window.upstream_errors == {"connect": 0, "timeout": 1, "reset": 0}
    assert math.isclose(window.duration_sum_s, 1.2)
    assert window.latency.get_total_count() == 6
    assert 199.9 <= window.latency.get_min_value() / 1000 <= 200.1
    assert quantiles_ms(window.latency, (50,))["p50"] == pytest.approx(200, rel=1e-3)
    assert quantiles_ms(first.latency, (50,))["p50"] == pytest.approx(1, rel=1e-3)
    with pytest.raises(ValueError, match="not taken before"):
        delta(first, second)
    with pytest.raises(AttributeError):
        first.requests = 3  # type: ignore[misc]


def test_empty_snapshot() -> None:
    snap = VariantStats("r", "v").snapshot()
    assert (snap.requests, snap.errors, snap.error_rate) == (0, 0, 0.0)
    assert delta(snap, snap).latency.get_total_count() == 0
    assert quantiles_ms(snap.latency) == {"p50": 0.0, "p95": 0.0, "p99": 0.0}


def test_quantiles_follow_hdr_convention() -> None:
    hist = new_histogram()
    for ms in range(1, 101):  # 1..100 ms
        hist.record_value(ms * 1000)
    q = quantiles_ms(hist, (0, 50, 95, 99, 99.9, 100))
    assert list(q) == ["p0", "p50", "p95", "p99", "p99.9", "p100"]
    for key, want in (("p50", 50), ("p95", 95), ("p99", 99), ("p99.9", 100), ("p100", 100)):
        # the bin's highest equivalent value: at most 0.1% above the recorded one
        assert want <= q[key] <= want * 1.001, key
    assert q["p0"] == 1.0
    for key, pct in (("p50", 50), ("p99", 99)):
        assert q[key] == hist.get_value_at_percentile(pct) / 1000


def test_sync_keeps_counts_across_reload() -> None:
    obs = Observatory(make_settings({"stable": "b1", "canary": "b2"}))
    assert "sentiment" in obs
    rs = obs.route("sentiment")
    assert list(rs.variants) == ["stable", "canary"]
    rs.variant("stable").record(200, 0.01, 0.01, cause=BACKEND)
    rs.record_fallback()
    obs.sync(make_settings({"stable": "b1", "v3": "b3"}))
    assert obs.route("sentiment") is rs
    assert list(rs.variants) == ["stable", "canary", "v3"]  # canary kept (documented)
    assert rs.variant("stable").count == 1
    assert rs.fallbacks == 1
    assert [r.name for r in obs] == ["sentiment"]


def test_lookups_create_on_miss_and_route_counters() -> None:
    obs = Observatory()
    rs = obs.route("late")
    assert obs.route("late") is rs
    assert rs.variant("x") is rs.variant("x")
    rs.enter()
    rs.enter()
    rs.leave()
    assert rs.in_flight == 1
    rs.record_rollback("error_rate")
    rs.record_rollback("error_rate")
    rs.record_rollback("manual")
    assert rs.rollbacks == {"error_rate": 2, "manual": 1}
    assert set(rs.snapshots()) == {"x"}


def test_record_cost_is_a_few_microseconds() -> None:
    vs = VariantStats("r", "v")
    n = 20_000
    started = time.perf_counter()
    for i in range(n):
        vs.record(200, 0.001 + i * 1e-6, 0.0005, cause=BACKEND)
    per_call_us = (time.perf_counter() - started) / n * 1e6
    # ~2 us on the dev box; generous bound so a loaded CI box does not flake
    assert per_call_us < 25, per_call_us
