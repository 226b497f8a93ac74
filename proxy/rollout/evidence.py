"""The evidence a rollout accumulates, look after look, over its whole run (pure).

Each look folds what the arms did since the previous look (:meth:`Evidence.fold`): the
candidate's cumulative requests and errors (the absolute error test), the ratio test's
per-grid log-likelihood ratios (candidate against baseline, batch by batch), both arms'
cumulative latency histograms and JSON-field sums since the rollout started, and the
candidate's requests and errors in the current step (``min_requests`` and the critical
check). It is persisted with the rollout state, so a restarted proxy resumes it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from proxy.rollout.analysis import Arm
from proxy.rollout.sequential import fold_ratio

Histogram = tuple[tuple[float, int], ...]
Field = tuple[int, float, float]


def merge(a: Iterable[tuple[float, int]], b: Iterable[tuple[float, int]]) -> Histogram:
    """Two histograms of (bucket value, count) pairs added, sorted by value. (``a``, the
    large cumulative one, is copied at C speed; only ``b``, one look's increment, is walked
    in Python, and the sort is skipped when ``b`` brings no new bucket.)"""
    out = dict(a)
    fresh = False
    for value, count in b:
        if count:
            old = out.get(value)
            fresh = fresh or old is None
            out[value] = count if old is None else old + count
    items = out.items()
    return tuple(sorted(items)) if fresh else tuple(items)


def _add(a: Field, b: Field) -> Field:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2]


@dataclass(frozen=True, slots=True)
class Evidence:
    """Cumulative figures since the rollout started (``step_*``: since the step began)."""

    candidate: Arm = field(default_factory=lambda: Arm(0, 0))
    baseline: Arm = field(default_factory=lambda: Arm(0, 0))
    ratio_loglr: tuple[float, ...] = ()
    step_requests: int = 0
    step_errors: int = 0

    def fold(self, base: Arm, cand: Arm, theta: float) -> Evidence:
        """Add one look's increments (``theta``: the ratio test's null boundary)."""
        return Evidence(
            candidate=Arm(self.candidate.requests + cand.requests,
                          self.candidate.errors + cand.errors,
                          merge(self.candidate.latency, cand.latency),
                          _add(self.candidate.field, cand.field)),
            baseline=Arm(self.baseline.requests + base.requests,
                         self.baseline.errors + base.errors,
                         merge(self.baseline.latency, base.latency),
                         _add(self.baseline.field, base.field)),
            ratio_loglr=fold_ratio(self.ratio_loglr, theta, cand.requests, cand.errors,
                                   base.requests, base.errors),
            step_requests=self.step_requests + cand.requests,
            step_errors=self.step_errors + cand.errors)

    def new_step(self) -> Evidence:
        """The same evidence at the start of a new step."""
        return replace(self, step_requests=0, step_errors=0)

    def to_json(self) -> dict[str, Any]:
        def arm(a: Arm) -> dict[str, Any]:
            return {"requests": a.requests, "errors": a.errors,
                    "latency": [[v, c] for v, c in a.latency], "field": list(a.field)}
        return {"candidate": arm(self.candidate), "baseline": arm(self.baseline),
                "ratio_loglr": list(self.ratio_loglr), "step_requests": self.step_requests,
                "step_errors": self.step_errors}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Evidence:
        """Read :meth:`to_json`'s shape; ``None`` (a state stored before evidence was
        kept) is empty evidence."""
        if not data:
            return cls()

        def arm(d: dict[str, Any]) -> Arm:
            n, s, ss = d.get("field", (0, 0.0, 0.0))
            return Arm(int(d["requests"]), int(d["errors"]),
                       tuple((float(v), int(c)) for v, c in d.get("latency", ())),
                       (int(n), float(s), float(ss)))
        return cls(candidate=arm(data["candidate"]), baseline=arm(data["baseline"]),
                   ratio_loglr=tuple(float(x) for x in data.get("ratio_loglr", ())),
                   step_requests=int(data.get("step_requests", 0)),
                   step_errors=int(data.get("step_errors", 0)))
