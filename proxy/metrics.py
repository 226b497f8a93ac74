"""Prometheus exposition (contract §11) of an :class:`~proxy.observe.Observatory`.

Nothing is counted here: a custom collector reads the observatory's plain counters at
scrape time, so the request path never touches prometheus_client (whose metric objects
take a lock per update). Every §11 family is always present with HELP/TYPE, even while
empty, so dashboards and alerts can be written before the features that fill them.

Each app gets its own registry (:func:`build_registry`), never prometheus_client's
global one, so several apps in one process (tests, the demo) do not collide.

Families: ``splitway_requests_total`` {route, variant, code}, ``..._request_duration_seconds``
and ``..._time_to_first_byte_seconds`` histograms {route, variant}, ``..._upstream_errors_total``
{route, variant, reason}, ``..._variant_weight`` {route, variant}, ``..._in_flight_requests``
{route}, ``..._shadow_requests_total`` {route, outcome}, ``..._shadow_mismatches_total``
{route}, ``..._rollout_state`` {route, state}, ``..._rollbacks_total`` {route, reason},
``..._hash_fallbacks_total`` {route}, ``..._overloaded_requests_total`` {route} (refused by
the route's ``max_concurrency``: answered 503 before a variant was chosen, so they are not in
``splitway_requests_total``, whose labels name a variant).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Final, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from proxy.observe import BUCKETS_S, Observatory

log = logging.getLogger(__name__)

#: Rollout states of contract §6; ``splitway_rollout_state`` has one series per state.
ROLLOUT_STATES: Final = ("progressing", "paused", "succeeded", "rolled_back", "aborted")
#: route -> variant -> live weight
WeightsProvider = Callable[[], Mapping[str, Mapping[str, float]]]
#: route -> current rollout state (routes without a rollout are absent)
RolloutStateProvider = Callable[[], Mapping[str, str]]

# repr() of these floats is exactly what prometheus_client itself writes ("0.0025", "1.0")
_LE: Final = (*(repr(float(b)) for b in BUCKETS_S), "+Inf")
_T = TypeVar("_T")


class _Families:
    """One scrape's worth of (initially empty) families, typed for ``add_metric``."""

    def __init__(self) -> None:
        rv = ["route", "variant"]
        self.requests = CounterMetricFamily(
            "splitway_requests_total", "Proxied responses by status class.",
            labels=[*rv, "code"])
        self.duration = HistogramMetricFamily(
            "splitway_request_duration_seconds",
            "Request arrival to last response byte, proxy-made errors included.", labels=rv)
        self.ttfb = HistogramMetricFamily(
            "splitway_time_to_first_byte_seconds",
            "Request arrival to upstream response headers.", labels=rv)
        self.upstream = CounterMetricFamily(
            "splitway_upstream_errors_total",
            "Failed upstream attempts (retried ones included) by reason.",
            labels=[*rv, "reason"])
        self.weight = GaugeMetricFamily(
            "splitway_variant_weight", "Live split weight of a variant.", labels=rv)
        self.in_flight = GaugeMetricFamily(
            "splitway_in_flight_requests", "Requests being proxied now.", labels=["route"])
        self.shadow = CounterMetricFamily(
            "splitway_shadow_requests_total", "Mirrored requests by outcome.",
            labels=["route", "outcome"])
        self.mismatch = CounterMetricFamily(
            "splitway_shadow_mismatches_total",
            "Mirrored responses that differed from the primary.", labels=["route"])
        self.rollout = GaugeMetricFamily(
            "splitway_rollout_state", "1 for the route's current rollout state, else 0.",
            labels=["route", "state"])
        self.rollbacks = CounterMetricFamily(
            "splitway_rollbacks_total", "Rollouts rolled back, by reason.",
            labels=["route", "reason"])
        self.fallbacks = CounterMetricFamily(
            "splitway_hash_fallbacks_total",
            "Hash-split requests without their key, sent by random split.", labels=["route"])
        self.overloaded = CounterMetricFamily(
            "splitway_overloaded_requests_total",
            "Requests refused with 503 because the route had max_concurrency in flight.",
            labels=["route"])

    def all(self) -> list[Metric]:
        return [self.requests, self.duration, self.ttfb, self.upstream, self.weight,
                self.in_flight, self.shadow, self.mismatch, self.rollout, self.rollbacks,
                self.fallbacks, self.overloaded]


def _buckets(cumulative: list[int]) -> list[tuple[str, float]]:
    return [(le, float(n)) for le, n in zip(_LE, cumulative, strict=True)]


class SplitwayCollector:
    """A prometheus_client collector reading an :class:`Observatory` at scrape time.

    ``weights_provider`` and ``rollout_state_provider`` are called once per scrape; one
    that raises is logged and leaves its family empty rather than failing the scrape.
    """

    def __init__(self, observatory: Observatory, *,
                 weights_provider: WeightsProvider | None = None,
                 rollout_state_provider: RolloutStateProvider | None = None) -> None:
        self.observatory = observatory
        self.weights_provider = weights_provider
        self.rollout_state_provider = rollout_state_provider

    def describe(self) -> Iterator[Metric]:
        """The families without samples (lets the registry detect name clashes)."""
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        """Every family of contract §11 (plus extras), built from current values."""
        f = _Families()
        for rs in self.observatory:
            route = rs.name
            f.in_flight.add_metric([route], rs.in_flight)
            f.shadow.add_metric([route, "sent"], rs.shadow_sent)
            f.shadow.add_metric([route, "dropped"], rs.shadow_dropped)
            f.shadow.add_metric([route, "error"], rs.shadow_errors)
            f.mismatch.add_metric([route], rs.shadow_mismatches)
            f.fallbacks.add_metric([route], rs.fallbacks)
            f.overloaded.add_metric([route], rs.overloaded)
            for reason, n in rs.rollbacks.items():
                f.rollbacks.add_metric([route, reason], n)
            for vs in rs.variants.values():
                labels = [route, vs.name]
                for code, n in vs.codes().items():
                    f.requests.add_metric([*labels, code], n)
                for reason, n in vs.upstream_errors.items():
                    f.upstream.add_metric([*labels, reason], n)
                f.duration.add_metric(labels, _buckets(vs.duration_buckets()), vs.duration_sum_s)
                f.ttfb.add_metric(labels, _buckets(vs.ttfb_buckets()), vs.ttfb_sum_s)
        no_weights: Mapping[str, Mapping[str, float]] = {}
        weights = self._call(self.weights_provider, no_weights)
        for route, by_variant in weights.items():
            for variant, weight in by_variant.items():
                f.weight.add_metric([route, variant], float(weight))
        no_states: Mapping[str, str] = {}
        states = self._call(self.rollout_state_provider, no_states)
        routes = dict.fromkeys([*(rs.name for rs in self.observatory), *states])
        for route in routes:
            current = states.get(route)
            for state in ROLLOUT_STATES:
                f.rollout.add_metric([route, state], 1.0 if state == current else 0.0)
        yield from f.all()

    @staticmethod
    def _call(provider: Callable[[], _T] | None, default: _T) -> _T:
        if provider is None:
            return default
        try:
            return provider()
        except Exception:
            # a broken provider must not take every other family down with it
            log.exception("metrics provider %r failed", provider)
            return default


def build_registry(observatory: Observatory, *,
                   weights_provider: WeightsProvider | None = None,
                   rollout_state_provider: RolloutStateProvider | None = None,
                   process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry holding a :class:`SplitwayCollector` (and, by default, the
    standard ``process_*`` metrics)."""
    registry = CollectorRegistry()
    registry.register(SplitwayCollector(
        observatory, weights_provider=weights_provider,
        rollout_state_provider=rollout_state_provider))
    if process_metrics:
        ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The text exposition and its content type, for a ``/metrics`` response."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
