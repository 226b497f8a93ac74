"""Judging one analysis window: candidate against baseline, same window (pure).

:func:`judge` returns ``pass``, ``fail`` or ``hold`` with every check's figures. The rules,
chosen so that noise alone does not roll a healthy version back:

* **critical** — ``critical_error_rate`` (50 %) of errors over at least
  ``critical_min_requests`` (20) candidate requests fails at once, without waiting for
  ``min_requests``: a broken version must not take traffic for a whole step.
* **enough data** — below ``min_requests`` candidate requests, or below the samples an
  order-statistic interval of the latency quantile needs (368 for a p99), the judge
  *holds*. A hold is not a failure.
* **error rate** — fails when the candidate's rate is above ``max_error_rate`` *and* the
  one-sided exact binomial test says it is above it (p < ``alpha``), or when it is
  significantly worse than the baseline's over the same window by more than a margin of
  half the allowed rate (one-sided Wald test of ``p_c − p_b > max_error_rate / 2``,
  p < ``alpha_vs_baseline``; skipped when an expected cell count is under 5). The margin
  keeps a candidate that stays well inside the user's tolerance (0.8 % against a 0.5 %
  baseline and a 1 % limit) from being rolled back, while a jump from 0.1 % to 8 % under a
  10 % limit is caught. A candidate truly at 0.8 % against a 1 % limit fails a 1,000-request
  window with probability ≈ 0.1 %, not the 18 % of a bare threshold.
* **latency** — fails when the candidate/baseline quantile ratio is above
  ``max_latency_ratio`` *and* a one-sided Mann–Whitney test (candidate slower) agrees
  (p < ``alpha``).

* **custom** — a numeric JSON field of the responses (``json_metric``: fails when the
  candidate's mean is significantly below the baseline's by more than ``max_drop``,
  one-sided Welch test) and PromQL queries (``prometheus``: fleet-wide figures against a
  ``max``/``min``; evaluated by the controller and passed in as ``extra`` checks).

In ``health`` mode (rolling updates, blue-green's pinned phase with no baseline traffic) only
the critical and absolute error checks apply.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from scipy import stats as _st

from proxy.stats import (
    binomial_above,
    diff_above_margin,
    mann_whitney_counts,
    samples_for_quantile,
)


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    FAIL = "fail"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the judge needs from the route's ``rollout.analysis`` settings."""

    min_requests: int = 1000
    max_error_rate: float = 0.01
    max_latency_ratio: float = 1.5
    latency_quantile: float = 0.99
    alpha: float = 0.01
    alpha_vs_baseline: float = 0.001
    critical_error_rate: float = 0.5
    critical_min_requests: int = 20
    health_only: bool = False
    json_path: str | None = None  # the response field compared by the json_metric check
    json_max_drop: float = 0.0


@dataclass(frozen=True, slots=True)
class Arm:
    """One variant's figures over the window; ``latency`` is a histogram of
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
        total = sum(c for _, c in self.latency)
        if total == 0:
            return 0.0
        rank = max(1, math.ceil(q * total))
        seen = 0
        for value, count in self.latency:
            seen += count
            if seen >= rank:
                return value
        return self.latency[-1][0]

    def summary(self) -> dict[str, object]:
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": self.error_rate,
                "latency_ms": {"p50": self.quantile(0.5), "p99": self.quantile(0.99)}}


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


def _aligned(a: Arm, b: Arm) -> tuple[list[float], list[int], list[int]]:
    values = sorted({v for v, _ in a.latency} | {v for v, _ in b.latency})
    ca, cb = [0] * len(values), [0] * len(values)
    for v, c in a.latency:
        ca[bisect_left(values, v)] += c
    for v, c in b.latency:
        cb[bisect_left(values, v)] += c
    return values, ca, cb


def _error_check(p: Policy, base: Arm, cand: Arm) -> Check:
    rate = cand.error_rate
    p_abs = binomial_above(cand.errors, cand.requests, p.max_error_rate)
    if rate > p.max_error_rate and p_abs < p.alpha:
        return Check("error_rate", False,
                     f"candidate {cand.errors}/{cand.requests} = {rate:.2%} is above "
                     f"{p.max_error_rate:.2%} (binomial p={p_abs:.2g} < {p.alpha})")
    if not p.health_only and base.requests:
        pooled = (cand.errors + base.errors) / (cand.requests + base.requests)
        small = min(cand.requests, base.requests) * min(pooled, 1 - pooled) < 5
        margin = p.max_error_rate / 2
        p_rel = 1.0 if small else diff_above_margin(cand.errors, cand.requests, base.errors,
                                                    base.requests, margin)
        if p_rel < p.alpha_vs_baseline:
            return Check("error_rate", False,
                         f"candidate {rate:.2%} is worse than baseline {base.error_rate:.2%} "
                         f"by more than {margin:.2%} (Wald p={p_rel:.2g} < "
                         f"{p.alpha_vs_baseline})")
    return Check("error_rate", True,
                 f"candidate {cand.errors}/{cand.requests} = {rate:.2%} "
                 f"(limit {p.max_error_rate:.2%}, p={p_abs:.2g}); baseline {base.error_rate:.2%}")


def _latency_check(p: Policy, base: Arm, cand: Arm) -> Check:
    q = p.latency_quantile
    need = samples_for_quantile(q)
    if cand.requests < need or base.requests < need:
        return Check("latency", None, f"p{q * 100:g} needs {need} samples per side "
                                      f"(candidate {cand.requests}, baseline {base.requests})")
    cq, bq = cand.quantile(q), base.quantile(q)
    ratio = cq / bq if bq > 0 else (math.inf if cq > 0 else 1.0)
    label = f"p{q * 100:g} candidate {cq:.1f} ms / baseline {bq:.1f} ms = {ratio:.2f}"
    if ratio <= p.max_latency_ratio:
        return Check("latency", True, f"{label} (limit {p.max_latency_ratio})")
    values, ca, cb = _aligned(cand, base)
    p_mw = mann_whitney_counts(values, ca, cb, "greater")
    if p_mw < p.alpha:
        return Check("latency", False, f"{label} above {p.max_latency_ratio}, "
                                       f"Mann-Whitney p={p_mw:.2g} < {p.alpha}")
    return Check("latency", True, f"{label} above {p.max_latency_ratio} but Mann-Whitney "
                                  f"p={p_mw:.2g}: not significant")


def _sample_variance(n: int, total: float, squares: float) -> float:
    """Sample variance from (n, sum, sum of squares); a variance lost in the rounding of
    ``squares - n * mean**2`` (a constant field) is exactly 0, not a few ulps either way."""
    mean = total / n
    spread = squares - n * mean * mean
    if spread <= 1e-12 * max(squares, 1e-300):
        return 0.0
    return spread / (n - 1)


def _field_check(p: Policy, base: Arm, cand: Arm) -> Check:
    """One-sided Welch test that the candidate's mean of the JSON field is below the
    baseline's by more than ``json_max_drop``."""
    (nb, sb, ssb), (nc, sc, ssc) = base.field, cand.field
    name = f"json:{p.json_path}"
    if nb < 2 or nc < 2:
        return Check(name, None, f"field seen in {nc} candidate / {nb} baseline responses")
    mb, mc = sb / nb, sc / nc
    vb, vc = _sample_variance(nb, sb, ssb), _sample_variance(nc, sc, ssc)
    se = math.sqrt(vb / nb + vc / nc)
    label = f"mean candidate {mc:.4g} vs baseline {mb:.4g} (max drop {p.json_max_drop:g})"
    if se == 0:  # both sides constant: the drop is known exactly, no test needed
        if mb - mc > p.json_max_drop:
            return Check(name, False, f"{label}: dropped by {mb - mc:.4g}, no variance")
        return Check(name, True, f"{label}, no variance")
    df = se**4 / ((vb / nb) ** 2 / max(nb - 1, 1) + (vc / nc) ** 2 / max(nc - 1, 1))
    p_drop = float(_st.t.sf((mb - mc - p.json_max_drop) / se, df))
    if p_drop < p.alpha:
        return Check(name, False, f"{label}: dropped, Welch p={p_drop:.2g} < {p.alpha}")
    return Check(name, True, f"{label} (Welch p={p_drop:.2g})")


def judge(p: Policy, base: Arm, cand: Arm, extra: Sequence[Check] = ()) -> Judgement:
    """Judge one window (see the module docstring for the rules); ``extra`` are checks
    made elsewhere (PromQL queries) that join the verdict."""
    if cand.requests >= p.critical_min_requests and cand.error_rate >= p.critical_error_rate:
        check = Check("critical", False, f"candidate {cand.errors}/{cand.requests} errors "
                                         f"≥ {p.critical_error_rate:.0%}")
        return Judgement(Verdict.FAIL, (check,), critical=True, reason=check.detail)
    if cand.requests < p.min_requests:
        check = Check("min_requests", None,
                      f"candidate has {cand.requests} of {p.min_requests} requests")
        return Judgement(Verdict.HOLD, (check,), reason=check.detail)
    checks: list[Check] = [_error_check(p, base, cand)]
    if not p.health_only:
        checks.append(_latency_check(p, base, cand))
        if p.json_path is not None:
            checks.append(_field_check(p, base, cand))
    return _combine([*checks, *extra])


def _combine(checks: Sequence[Check]) -> Judgement:
    failed = [c for c in checks if c.passed is False]
    if failed:
        return Judgement(Verdict.FAIL, tuple(checks), reason="; ".join(c.detail for c in failed))
    held = [c for c in checks if c.passed is None]
    if held:
        return Judgement(Verdict.HOLD, tuple(checks), reason="; ".join(c.detail for c in held))
    return Judgement(Verdict.PASS, tuple(checks))


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
    return _combine(checks)
