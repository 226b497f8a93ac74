"""The rollout judge's vocabulary (pure): verdicts, the policy it reads, one arm's figures,
checks and judgements, and the shadow phase's threshold judge.

The live steps are judged on accumulated evidence by :func:`proxy.rollout.judge.judge`;
this module holds the types it shares with the state machine and the controller.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate
from operator import itemgetter


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the judge needs from the route's ``rollout.analysis`` settings."""

    min_requests: int = 1000
    max_error_rate: float = 0.01
    max_error_ratio: float = 2.0  # θ: candidate error rate / baseline's
    max_latency_ratio: float = 1.5
    latency_quantile: float = 0.99
    alpha: float = 0.01  # P(a false rollback over the whole rollout) is at most this
    critical_error_rate: float = 0.5
    critical_min_requests: int = 20
    health_only: bool = False
    json_path: str | None = None  # the response field compared by the json_metric check
    json_max_drop: float = 0.0


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant's figures over an interval; ``latency`` is a histogram of
    (value in ms, count) pairs sorted by value (HdrHistogram buckets)."""

    requests: int
    errors: int
    latency: tuple[tuple[float, int], ...] = ()
    field: tuple[int, float, float] = (0, 0.0, 0.0)  # n, sum, sum of squares

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def quantile(self, q: float) -> float:
        """Nearest-rank quantile over the histogram (0 when empty)."""
        return self._quantiles((q,))[0]

    def _quantiles(self, qs: Sequence[float]) -> list[float]:
        # Cumulative counts at C speed, then a bisection per quantile: the rollout's
        # cumulative histograms hold thousands of buckets and are read at every look.
        cum = list(accumulate(map(itemgetter(1), self.latency)))
        total = cum[-1] if cum else 0
        if total == 0:
            return [0.0 for _ in qs]
        last = len(cum) - 1
        return [self.latency[min(bisect_left(cum, max(1, math.ceil(q * total))), last)][0]
                for q in qs]

    def summary(self) -> dict[str, object]:
        p50, p99 = self._quantiles((0.5, 0.99))
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": self.error_rate,
                "latency_ms": {"p50": p50, "p99": p99}}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool | None  # None: not judged (held)
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    checks: tuple[Check, ...]
    critical: bool = False
    reason: str = ""


def combine(checks: Sequence[Check]) -> Judgement:
    """Fail if any check failed, hold if any was not judged, else pass."""
    failed = [c for c in checks if c.passed is False]
    if failed:
        return Judgement(Verdict.FAIL, tuple(checks), reason="; ".join(c.detail for c in failed))
    held = [c for c in checks if c.passed is None]
    if held:
        return Judgement(Verdict.HOLD, tuple(checks), reason="; ".join(c.detail for c in held))
    return Judgement(Verdict.PASS, tuple(checks), reason="; ".join(c.detail for c in checks))


def judge_shadow(min_compared: int, max_mismatch_rate: float, max_error_rate: float, *,
                 sent: int, errors: int, compared: int, mismatched: int) -> Judgement:
    """Judge a shadow phase from the shadow report's counts: hold until ``min_compared``
    answers were compared, then pass when the mismatch and error rates are within limits."""
    if compared < min_compared:
        check = Check("shadow_compared", None, f"{compared} of {min_compared} answers compared")
        return Judgement(Verdict.HOLD, (check,), reason=check.detail)
    mismatch = mismatched / compared
    error = errors / sent if sent else 0.0
    checks = (
        Check("shadow_mismatch_rate", mismatch <= max_mismatch_rate,
              f"{mismatched}/{compared} = {mismatch:.2%} (limit {max_mismatch_rate:.2%})"),
        Check("shadow_error_rate", error <= max_error_rate,
              f"{errors}/{sent} = {error:.2%} (limit {max_error_rate:.2%})"),
    )
    return combine(checks)
