"""Prometheus exposition: every contract §11 family, exact counts, sane histograms."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from proxy.errors import Cause
from proxy.metrics import ROLLOUT_STATES, SplitwayCollector, build_registry, render
from proxy.observe import BUCKETS_S, Observatory

# text parser name (counters lose "_total") -> type
CONTRACT = {
    "splitway_requests": "counter",
    "splitway_request_duration_seconds": "histogram",
    "splitway_upstream_errors": "counter",
    "splitway_variant_weight": "gauge",
    "splitway_shadow_requests": "counter",
    "splitway_shadow_mismatches": "counter",
    "splitway_rollout_state": "gauge",
    "splitway_rollbacks": "counter",
    "splitway_in_flight_requests": "gauge",
}
EXTRAS = {"splitway_hash_fallbacks": "counter", "splitway_overloaded_requests": "counter",
          "splitway_time_to_first_byte_seconds": "histogram"}


def scrape(obs: Observatory, **providers: object) -> dict[str, list[Sample]]:
    registry = build_registry(obs, process_metrics=False, **providers)  # type: ignore[arg-type]
    body, content_type = render(registry)
    assert content_type.startswith("text/plain")
    families = {}
    for fam in text_string_to_metric_families(body.decode()):
        families[fam.name] = (fam.type, fam.samples)
    for name, kind in {**CONTRACT, **EXTRAS}.items():
        assert families[name][0] == kind, name
    assert b"# TYPE splitway_requests_total counter" in body
    return {name: samples for name, (_, samples) in families.items()}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_empty_observatory_still_exposes_every_family() -> None:
    fams = scrape(Observatory())
    assert all(fams[name] == [] for name in CONTRACT)


@pytest.mark.parametrize("n", [1, 7, 250])
def test_exact_counts_after_n_records(n: int) -> None:
    obs = Observatory()
    rs = obs.route("sentiment")
    canary = rs.variant("canary")
    durations = [0.0004 * (i + 1) for i in range(n)]  # 0.4 ms .. 100 ms
    for i, d in enumerate(durations):
        canary.record(503 if i % 5 == 0 else 200, d, d / 2 if i % 2 else None,
                      cause=Cause.BACKEND)
    canary.record_upstream_error("timeout")
    rs.variant("stable")
    rs.enter()
    rs.record_fallback()
    rs.shadow_sent += 3
    rs.shadow_dropped += 1
    rs.shadow_mismatches += 2
    rs.record_rollback("error_rate")
    fams = scrape(obs)
    lab = {"route": "sentiment", "variant": "canary"}
    reqs = fams["splitway_requests"]
    n5 = len(range(0, n, 5))
    assert value(reqs, "splitway_requests_total", **lab, code="5xx") == n5
    assert value(reqs, "splitway_requests_total", **lab, code="2xx") == n - n5
    assert value(reqs, "splitway_requests_total", **lab, code="4xx") == 0
    assert sum(s.value for s in reqs if s.labels["variant"] == "stable") == 0
    dur = fams["splitway_request_duration_seconds"]
    assert value(dur, "splitway_request_duration_seconds_count", **lab) == n
    assert value(dur, "splitway_request_duration_seconds_sum", **lab) == pytest.approx(
        sum(durations), rel=1e-12)
    buckets = [(s.labels["le"], s.value) for s in dur
               if s.name.endswith("_bucket") and s.labels["variant"] == "canary"]
    assert [le for le, _ in buckets] == [*(repr(float(b)) for b in BUCKETS_S), "+Inf"]
    counts = [c for _, c in buckets]
    assert counts == sorted(counts)
    assert counts[-1] == n
    for (le, count), bound in zip(buckets, BUCKETS_S, strict=False):
        assert count == sum(d <= bound for d in durations), le
    ttfb = fams["splitway_time_to_first_byte_seconds"]
    assert value(ttfb, "splitway_time_to_first_byte_seconds_count", **lab) == n // 2
    up = fams["splitway_upstream_errors"]
    assert value(up, "splitway_upstream_errors_total", **lab, reason="timeout") == 1
    assert value(up, "splitway_upstream_errors_total", **lab, reason="connect") == 0
    assert value(fams["splitway_in_flight_requests"], "splitway_in_flight_requests",
                 route="sentiment") == 1
    shadow = fams["splitway_shadow_requests"]
    assert {s.labels["outcome"]: s.value for s in shadow} == {
        "sent": 3, "dropped": 1, "error": 0}
    assert value(fams["splitway_shadow_mismatches"], "splitway_shadow_mismatches_total",
                 route="sentiment") == 2
    assert value(fams["splitway_rollbacks"], "splitway_rollbacks_total",
                 route="sentiment", reason="error_rate") == 1
    assert value(fams["splitway_hash_fallbacks"], "splitway_hash_fallbacks_total",
                 route="sentiment") == 1


def test_weights_and_rollout_state_providers() -> None:
    obs = Observatory()
    obs.route("a")
    obs.route("b")
    weights: Mapping[str, Mapping[str, float]] = {"a": {"stable": 90, "canary": 10}}
    fams = scrape(obs, weights_provider=lambda: weights,
                  rollout_state_provider=lambda: {"a": "paused"})
    w = fams["splitway_variant_weight"]
    assert value(w, "splitway_variant_weight", route="a", variant="canary") == 10
    assert value(w, "splitway_variant_weight", route="a", variant="stable") == 90
    state = fams["splitway_rollout_state"]
    for route, current in (("a", "paused"), ("b", None)):
        for s in ROLLOUT_STATES:
            want = float(s == current)
            assert value(state, "splitway_rollout_state", route=route, state=s) == want


def test_failing_provider_does_not_break_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Mapping[str, Mapping[str, float]]:
        raise RuntimeError("boom")

    obs = Observatory()
    obs.route("a").variant("v").record(200, 0.01, None, cause=Cause.BACKEND)
    with caplog.at_level(logging.ERROR, logger="proxy.metrics"):
        fams = scrape(obs, weights_provider=broken)
    assert fams["splitway_variant_weight"] == []
    assert value(fams["splitway_requests"], "splitway_requests_total",
                 route="a", variant="v", code="2xx") == 1
    assert "boom" in caplog.text


def test_counters_survive_reload_and_registries_are_separate() -> None:
    obs = Observatory()
    obs.route("a").variant("v").record(200, 0.01, None, cause=Cause.BACKEND)
    first = build_registry(obs)
    second = build_registry(obs)  # a second app in the same process: no clash
    # a variant added by a reload
    obs.route("a").variant("new").record(500, 0.01, None, cause=Cause.BACKEND)
    for registry in (first, second):
        body, _ = render(registry)
        assert b'splitway_requests_total{code="2xx",route="a",variant="v"} 1.0' in body
        assert b'splitway_requests_total{code="5xx",route="a",variant="new"} 1.0' in body
        assert b"process_" in body


def test_describe_lists_every_family() -> None:
    names = {m.name for m in SplitwayCollector(Observatory()).describe()}
    assert names == set(CONTRACT) | set(EXTRAS)
