"""Per-request observation: counters and HdrHistograms per route and variant.

Built once, looked up fast. :class:`Observatory` lives for the whole process (across
config reloads) so Prometheus counters never go backwards; :meth:`Observatory.sync`
only *adds* stats for new routes/variants. Stats of a route or variant removed from the
config are kept, and stay in the exposition until restart with frozen counts: dropping
and re-adding them would otherwise look like a counter reset. Everything runs on the
event loop thread, so nothing here takes a lock.

Per request the handler does (see :meth:`VariantStats.record`)::

    rs = observatory.route(route_name)   # dict lookup
    rs.enter()
    try: ... forward ...
    finally:
        rs.leave()
        rs.variant(variant_name).record(status, duration_s, ttfb_s, cause=Cause.BACKEND)

Two views of the same records (see :class:`proxy.errors.Cause`):

* **everything** the clients got — Prometheus' ``splitway_requests_total`` (real status
  class), the duration and TTFB histograms: :meth:`VariantStats.codes` and friends;
* **what judges the variant** — snapshots (the rollout judge's windows) hold only records
  whose cause is ``BACKEND`` *and* that are a fair sample of the variant (``judged``: split
  by weight or hash, or pinned from a trusted source). A client's bad request, a client
  that went away, an overload refusal or an untrusted pin never reaches them.

Cost, measured on the dev box (CPython 3.11): hdrh's pure-Python ``record_value`` is
~0.7 us, so :meth:`VariantStats.record` costs ~1.8 us with a TTFB, ~1.0 us without;
``snapshot()`` ~0.13 ms, ``delta()`` ~0.16 ms, ``quantiles_ms()`` ~0.3 ms. Each HdrHistogram
(1 us .. 1 h, 3 significant digits) holds 23,552 64-bit counters: ~190 KB, two per
variant.

Windows for rollout analysis use snapshots, not shared resettable state: any number
of readers (rollout steps, reports) each keep their own :class:`VariantSnapshot` and
take :func:`delta` (later - earlier) of two of them. A snapshot copies the latency
histogram (~0.1 ms, 190 KB); hdrh has no subtract, so :func:`delta` subtracts the count
arrays with numpy.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from hdrh.histogram import HdrHistogram

from proxy.config import Settings
from proxy.errors import Cause

LOWEST_US: Final = 1
HIGHEST_US: Final = 3_600_000_000  # one hour
SIGNIFICANT_DIGITS: Final = 3
#: Prometheus ``le`` bounds (seconds) of the duration and TTFB histograms.
BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CODE_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx")
UPSTREAM_REASONS: Final = ("connect", "timeout", "reset")
UpstreamReason = Literal["connect", "timeout", "reset"]


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds: 1 us .. 1 h, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _counts(hist: HdrHistogram) -> np.ndarray[Any, np.dtype[np.uint64]]:
    # A view (no copy) of hdrh's ctypes counter array.
    return np.ctypeslib.as_array(hist.counts).view(np.uint64)


def _from_counts(counts: np.ndarray[Any, Any]) -> HdrHistogram:
    # Built by hand rather than with hdrh's add(): add() on an empty target sets the
    # minimum to 0, and there is no subtract at all.
    hist = new_histogram()
    _counts(hist)[:] = counts
    nonzero = np.flatnonzero(counts)
    if nonzero.size:
        hist.set_internal_tacking_values(int(nonzero[0]), int(nonzero[-1]), int(counts.sum()))
    return hist


def buckets_ms(hist: HdrHistogram) -> tuple[tuple[float, int], ...]:
    """The non-empty buckets as (highest equivalent value in ms, count), ascending.

    Reads the counter array with numpy and converts only the non-empty indices: hdrh's
    recorded iterator walks every index in Python, which stalled the event loop for
    0.1-0.2 s per look under load."""
    counts = _counts(hist)
    return tuple(
        (hist.get_highest_equivalent_value(hist.get_value_from_index(int(i))) / 1000.0,
         int(counts[i]))
        for i in np.flatnonzero(counts))


def _to_us(seconds: float) -> int:
    # Clamped, because hdrh silently drops out-of-range values and the histogram's
    # count must always equal the number of records.
    us = round(seconds * 1e6)
    return 0 if us < 0 else HIGHEST_US if us > HIGHEST_US else us


class VariantStats:
    """Counters and histograms of one variant of one route (the per-request hot path)."""

    __slots__ = ("_codes", "_dur_buckets", "_judged_codes", "_ttfb_buckets", "aborted",
                 "count", "duration_sum_s", "field_values", "judged", "judged_duration_s",
                 "judged_errors", "latency", "name", "route", "ttfb_sum_s", "upstream_errors")

    def __init__(self, route: str, name: str) -> None:
        self.route = route
        self.name = name
        self.count = 0
        self.duration_sum_s = 0.0
        self.ttfb_sum_s = 0.0
        self.aborted = 0
        # What the judge reads: judged records only (see the module docstring).
        self.judged = 0
        self.judged_errors = 0
        self.judged_duration_s = 0.0
        self.latency = new_histogram()
        self.field_values: tuple[int, float, float] = (0, 0.0, 0.0)
        # index 0 is unused so that ``status // 100`` indexes directly
        self._codes = [0] * 6
        self._judged_codes = [0] * 6
        # non-cumulative counts per le bound; the last slot is +Inf. Counted exactly at
        # record time (a bisect, ~0.1 us) instead of being read back from the
        # HdrHistogram, whose bins straddle some bounds (e.g. 25 ms sits in a 16 us bin).
        self._dur_buckets = [0] * (len(BUCKETS_S) + 1)
        self._ttfb_buckets = [0] * (len(BUCKETS_S) + 1)
        self.upstream_errors: dict[str, int] = dict.fromkeys(UPSTREAM_REASONS, 0)

    def record(self, status: int, duration_s: float, ttfb_s: float | None,
               *, cause: Cause, judged: bool = True, aborted: bool = False) -> None:
        """Record one response the client got, *including* the proxy's own errors.

        ``duration_s`` runs from request arrival to the last byte; ``ttfb_s`` to the
        response headers (``None``: none came). A status outside 100..599 counts as 5xx.
        ``cause``: whose outcome this is; ``judged``: the request is a fair sample of the
        variant (False for an untrusted pin). Only ``Cause.BACKEND`` records with
        ``judged`` reach snapshots; every record reaches the Prometheus counters.
        ``aborted``: the upstream failed after the status line went out (reset or
        timeout mid-body); such a response counts as an error in snapshots.
        """
        cls = status // 100
        cls = cls if 1 <= cls <= 5 else 5
        self._codes[cls] += 1
        self.count += 1
        self.duration_sum_s += duration_s
        self._dur_buckets[bisect_left(BUCKETS_S, duration_s)] += 1
        if ttfb_s is not None:
            self.ttfb_sum_s += ttfb_s
            self._ttfb_buckets[bisect_left(BUCKETS_S, ttfb_s)] += 1
        if aborted:
            self.aborted += 1
        if judged and cause is Cause.BACKEND:
            self.judged += 1
            self._judged_codes[cls] += 1
            self.judged_duration_s += duration_s
            self.latency.record_value(_to_us(duration_s))
            if cls == 5 or aborted:
                self.judged_errors += 1

    def record_field(self, x: float) -> None:
        """A numeric response field a rollout's ``json_metric`` check compares (call it
        for judged records only)."""
        n, s, ss = self.field_values
        self.field_values = (n + 1, s + x, ss + x * x)

    def record_upstream_error(self, reason: UpstreamReason) -> None:
        """Count one failed upstream attempt (retried ones too); ``record()`` still gets
        the response the client finally saw."""
        try:
            self.upstream_errors[reason] += 1
        except KeyError:
            raise ValueError(f"unknown upstream error {reason!r}: {UPSTREAM_REASONS}") from None

    def codes(self) -> dict[str, int]:
        """Responses per status class, ``{"1xx": n, ..., "5xx": n}``."""
        return dict(zip(CODE_CLASSES, self._codes[1:], strict=True))

    def duration_buckets(self) -> list[int]:
        """Cumulative counts per bound of :data:`BUCKETS_S`, then +Inf (== ``count``)."""
        return _cumulative(self._dur_buckets)

    def ttfb_buckets(self) -> list[int]:
        """Cumulative TTFB counts per bound of :data:`BUCKETS_S`, then +Inf."""
        return _cumulative(self._ttfb_buckets)

    def snapshot(self) -> VariantSnapshot:
        """Freeze the judged totals (with a copy of the latency histogram)."""
        return VariantSnapshot(
            requests=self.judged, errors=self.judged_errors,
            codes=dict(zip(CODE_CLASSES, self._judged_codes[1:], strict=True)),
            upstream_errors=dict(self.upstream_errors), duration_sum_s=self.judged_duration_s,
            latency=_from_counts(_counts(self.latency)), at=time.monotonic(),
            field_values=self.field_values)


def _cumulative(counts: list[int]) -> list[int]:
    out, total = [], 0
    for n in counts:
        total += n
        out.append(total)
    return out


@dataclass(frozen=True, slots=True)
class VariantSnapshot:
    """Judged totals of one variant at time ``at`` (monotonic s), or of an interval
    (:func:`delta`): only records charged to the variant (``Cause.BACKEND``) from fair
    samples (not untrusted pins) — what a rollout is judged on.

    ``errors`` = 5xx responses (which include the proxy's 502/504 for failed upstream
    exchanges) or responses aborted mid-body, each counted once; retried upstream failures
    the client never saw are only in ``upstream_errors`` (all requests, judged or not).
    ``latency`` must not be mutated.
    """

    requests: int
    errors: int
    codes: Mapping[str, int]
    upstream_errors: Mapping[str, int]
    duration_sum_s: float
    latency: HdrHistogram
    at: float
    # (n, sum, sum of squares) of a numeric response field, while a rollout asks for one
    field_values: tuple[int, float, float] = (0, 0.0, 0.0)

    @property
    def error_rate(self) -> float:
        """``errors / requests`` (0.0 without requests)."""
        return self.errors / self.requests if self.requests else 0.0


def delta(later: VariantSnapshot, earlier: VariantSnapshot) -> VariantSnapshot:
    """The stats of the interval between two snapshots of the same variant."""
    diff = _counts(later.latency).astype(np.int64) - _counts(earlier.latency).astype(np.int64)
    if later.requests < earlier.requests or (diff < 0).any():
        raise ValueError("delta(later, earlier): 'earlier' was not taken before 'later'")
    return VariantSnapshot(
        requests=later.requests - earlier.requests,
        errors=later.errors - earlier.errors,
        codes={k: later.codes[k] - earlier.codes.get(k, 0) for k in later.codes},
        upstream_errors={k: v - earlier.upstream_errors.get(k, 0)
                         for k, v in later.upstream_errors.items()},
        duration_sum_s=later.duration_sum_s - earlier.duration_sum_s,
        latency=_from_counts(diff.astype(np.uint64)), at=later.at,
        field_values=(later.field_values[0] - earlier.field_values[0],
                      later.field_values[1] - earlier.field_values[1],
                      later.field_values[2] - earlier.field_values[2]))


def quantiles_ms(hist: HdrHistogram, percentiles: Iterable[float] = (50, 95, 99)
                 ) -> dict[str, float]:
    """Latency quantiles in ms keyed ``"p50"``, ``"p99.9"``...; 0.0 for an empty histogram.

    HdrHistogram's convention: for percentile p of N values, take the first bin where
    the cumulative count reaches ``max(1, round(p/100 * N))`` and report that bin's
    *highest* equivalent value (so an over-estimate by at most the bin width, 0.1%).
    """
    wanted = [float(p) for p in percentiles]
    found = hist.get_percentile_to_value_dict(wanted) if hist.get_total_count() else {}
    return {f"p{p:g}": found.get(p, 0) / 1000.0 for p in wanted}


class RouteStats:
    """Stats of one route: its variants plus route-level counters that other code bumps
    directly (``shadow_*`` by the shadow mirror, ``fallbacks`` via :meth:`record_fallback`,
    ``overloaded`` via :meth:`record_overload`)."""

    __slots__ = ("fallbacks", "in_flight", "name", "overloaded", "rollbacks",
                 "shadow_dropped", "shadow_errors", "shadow_mismatches", "shadow_sent",
                 "variants")

    def __init__(self, name: str) -> None:
        self.name = name
        self.variants: dict[str, VariantStats] = {}
        self.in_flight = 0
        self.fallbacks = 0
        self.overloaded = 0  # requests refused by max_concurrency (503, no variant)
        self.shadow_sent = 0
        self.shadow_dropped = 0
        self.shadow_errors = 0
        self.shadow_mismatches = 0
        self.rollbacks: dict[str, int] = {}

    def variant(self, name: str) -> VariantStats:
        """The variant's stats, created on first use (a variant added at run time by a
        rollout is counted too)."""
        stats = self.variants.get(name)
        if stats is None:
            stats = self.variants[name] = VariantStats(self.name, name)
        return stats

    def enter(self) -> None:
        """A request of this route started."""
        self.in_flight += 1

    def leave(self) -> None:
        """A request of this route finished (call exactly once per :meth:`enter`)."""
        self.in_flight -= 1

    def record_fallback(self) -> None:
        """A hash-split request lacked its key and fell back to random."""
        self.fallbacks += 1

    def record_overload(self) -> None:
        """A request was refused because the route had ``max_concurrency`` in flight."""
        self.overloaded += 1

    def record_rollback(self, reason: str) -> None:
        """A rollout on this route rolled back. ``reason`` becomes a label value: pass a
        short fixed code (``error_rate``, ``latency``, ``manual``...), never free text."""
        self.rollbacks[reason] = self.rollbacks.get(reason, 0) + 1

    def snapshots(self) -> dict[str, VariantSnapshot]:
        """:meth:`VariantStats.snapshot` of every variant."""
        return {name: v.snapshot() for name, v in self.variants.items()}


class Observatory:
    """All routes' stats; create once per process and :meth:`sync` on every reload."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._routes: dict[str, RouteStats] = {}
        if settings is not None:
            self.sync(settings)

    def sync(self, settings: Settings) -> None:
        """Add stats for routes/variants new in ``settings``; existing counts are kept,
        and so are routes/variants the new settings no longer name (see module doc)."""
        for route in settings.routes:
            stats = self.route(route.name)
            for variant in route.variants:
                stats.variant(variant)

    def route(self, name: str) -> RouteStats:
        """The route's stats (created on first use, so a lookup never fails)."""
        stats = self._routes.get(name)
        if stats is None:
            stats = self._routes[name] = RouteStats(name)
        return stats

    def __iter__(self) -> Iterator[RouteStats]:
        return iter(list(self._routes.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._routes
