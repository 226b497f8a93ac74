"""An experiment's counts: one process's contribution, mergeable with the others.

Every proxy process keeps an :class:`ExperimentBook` of what it saw since it started and
persists it under its own key; the report merges every contribution (past processes'
included), so counts survive restarts and add up across a fleet without a shared counter.

Only **randomised** requests are counted — hash or random assignment; a pinned request
(``x-splitway-variant``) is a person choosing, not the experiment. For the sample-ratio
check, hash fallbacks are left out too, and units are counted per **segment** (a period of
constant weights), so the expected split follows the weights in force over time:
distinct keys for hash splits (first seen in that segment, per process, up to
``MAX_DISTINCT`` keys), requests for random splits.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from proxy.observe import new_histogram

MAX_DISTINCT = 2_000_000


@dataclass(slots=True)
class Moments:
    """Running count, mean and sum of squared deviations (Welford; merged by Chan et al.)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    def merged(self, o: Moments) -> Moments:
        n = self.n + o.n
        if n == 0:
            return Moments()
        d = o.mean - self.mean
        return Moments(n, self.mean + d * o.n / n, self.m2 + o.m2 + d * d * self.n * o.n / n)

    @property
    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan

    def to_json(self) -> list[float]:
        return [self.n, self.mean, self.m2]

    @classmethod
    def from_json(cls, v: list[float]) -> Moments:
        return cls(int(v[0]), float(v[1]), float(v[2]))


@dataclass(eq=False)
class Arm:
    requests: int = 0
    successes: int = 0
    latency: HdrHistogram = field(default_factory=new_histogram)
    metrics: dict[str, Moments] = field(default_factory=dict)

    def merged(self, o: Arm) -> Arm:
        hist = new_histogram()
        for h in (self.latency, o.latency):
            if h.get_total_count():
                hist.add(h)
        metrics = dict(self.metrics)
        for name, mo in o.metrics.items():
            metrics[name] = metrics.get(name, Moments()).merged(mo)
        return Arm(self.requests + o.requests, self.successes + o.successes, hist, metrics)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "successes": self.successes,
                "latency": self.latency.encode().decode() if self.requests else "",
                "metrics": {k: m.to_json() for k, m in self.metrics.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Arm:
        hist = new_histogram()
        if d.get("latency"):
            hist.add(HdrHistogram.decode(d["latency"].encode()))
        return cls(int(d["requests"]), int(d["successes"]), hist,
                   {k: Moments.from_json(v) for k, v in d.get("metrics", {}).items()})


@dataclass(eq=False)
class Segment:
    """A period of constant weights and the units that arrived in it, per variant."""

    weights: dict[str, float]
    units: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class ExperimentBook:
    """One process's counts for one experiment."""

    variants: tuple[str, ...]
    arms: dict[str, Arm] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    _seen: set[bytes] = field(default_factory=set)
    _weights_key: object = None  # identity of the weights the last segment was opened with

    def __post_init__(self) -> None:
        for v in self.variants:
            self.arms.setdefault(v, Arm())

    def record(self, variant: str, success: bool, duration_s: float, *,
               weights: Callable[[], dict[str, float]], weights_key: object,
               unit: str | None, fallback: bool) -> None:
        """Count one randomised request. ``weights_key`` changes exactly when the weights
        do (the route's split table is replaced, never mutated), so the per-request check
        is an identity test and ``weights()`` only runs when a segment opens."""
        arm = self.arms.get(variant)
        if arm is None:
            arm = self.arms[variant] = Arm()
        arm.requests += 1
        arm.successes += success
        arm.latency.record_value(min(max(1, round(duration_s * 1e6)), 3_600_000_000))
        if fallback:
            return
        if weights_key is not self._weights_key:
            current = weights()
            if not self.segments or self.segments[-1].weights != current:
                self.segments.append(Segment(current))
            self._weights_key = weights_key
        if unit is not None:  # a hash split counts distinct keys
            digest = hashlib.blake2b(unit.encode(), digest_size=8).digest()
            if digest in self._seen or len(self._seen) >= MAX_DISTINCT:
                return
            self._seen.add(digest)
        units = self.segments[-1].units
        units[variant] = units.get(variant, 0) + 1

    def record_metric(self, variant: str, metric: str, value: float) -> None:
        arm = self.arms.setdefault(variant, Arm())
        arm.metrics.setdefault(metric, Moments()).add(value)

    def to_json(self) -> dict[str, Any]:
        return {"arms": {v: a.to_json() for v, a in self.arms.items()},
                "segments": [{"weights": s.weights, "units": s.units} for s in self.segments]}


@dataclass(frozen=True, slots=True)
class Totals:
    """Every contribution merged: what a report is computed from."""

    arms: dict[str, Arm]
    segments: tuple[Segment, ...]


def totals_json(totals: Totals) -> dict[str, Any]:
    """A merged total as one contribution; segments with equal weights are summed (the
    expected counts only need units per weighting, not their order)."""
    by_weights: dict[tuple[tuple[str, float], ...], Segment] = {}
    for seg in totals.segments:
        key = tuple(sorted(seg.weights.items()))
        into = by_weights.setdefault(key, Segment(dict(seg.weights)))
        for v, n in seg.units.items():
            into.units[v] = into.units.get(v, 0) + n
    return {"arms": {v: a.to_json() for v, a in totals.arms.items()},
            "segments": [{"weights": s.weights, "units": s.units}
                         for s in by_weights.values()]}


def merge(contributions: list[dict[str, Any]]) -> Totals:
    arms: dict[str, Arm] = {}
    segments: list[Segment] = []
    for c in contributions:
        for v, a in c.get("arms", {}).items():
            arm = Arm.from_json(a)
            arms[v] = arms[v].merged(arm) if v in arms else arm
        segments.extend(Segment(dict(s["weights"]), dict(s["units"]))
                        for s in c.get("segments", []))
    return Totals(arms, tuple(segments))
