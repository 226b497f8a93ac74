"""The rollout judge on accumulated evidence: a decision table (each row names its rule),
boundaries exactly at, just below and just above every threshold, and the one-line
explanations."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import pytest

from proxy.rollout.analysis import Arm, Judgement, Policy, Verdict
from proxy.rollout.evidence import Evidence
from proxy.rollout.judge import alpha_shares, judge
from proxy.rollout.quantiles import quantile_bounds
from proxy.rollout.sequential import log_e_above, log_e_below, log_e_ratio, mean_cs


def hist(values_ms: list[float] | np.ndarray) -> tuple[tuple[float, int], ...]:
    counts = Counter(round(float(v), 1) for v in values_ms)
    return tuple(sorted(counts.items()))


def arm(n: int, errors: int = 0, ms: float = 20.0, spread: float = 0.0) -> Arm:
    values = np.linspace(ms - spread, ms + spread, n) if spread else np.full(n, ms)
    return Arm(n, errors, hist(values))


def ev(base: Arm, cand: Arm, p: Policy | None = None) -> Evidence:
    """The evidence of one look with these arms (the step holds all of it)."""
    return Evidence().fold(base, cand, (p or P).max_error_ratio)


NOISE = np.random.default_rng(3).normal(0, 0.05, 2000)
JSON = Policy(min_requests=100, latency_quantile=0.9, json_path="confidence",
              json_max_drop=0.05)


def field_of(values: np.ndarray) -> tuple[int, float, float]:
    return (len(values), float(values.sum()), float((values**2).sum()))


P = Policy(min_requests=100, max_error_rate=0.01, max_latency_ratio=1.5, latency_quantile=0.9)
P99 = Policy(min_requests=100, latency_quantile=0.99)
HEALTH = Policy(min_requests=100, health_only=True)
LOOSE = Policy(min_requests=100, max_error_rate=0.1, latency_quantile=0.9)

ROWS = [
    ("clean candidate with enough data passes", P, arm(20000, 10, 20, 5), arm(2000, 0, 20, 5),
     Verdict.PASS, "below the limit"),
    ("below min_requests holds", P, arm(2000), arm(99), Verdict.HOLD, "99 of 100"),
    ("a hold is not a failure even with errors under critical", P, arm(2000), arm(50, 10),
     Verdict.HOLD, "50 of 100"),
    ("critical breach fails before min_requests", P, arm(2000), arm(20, 10), Verdict.FAIL,
     "10/20"),
    ("critical needs critical_min_requests", P, arm(2000), arm(19, 19), Verdict.HOLD, ""),
    ("error rate far above the limit fails", P, arm(2000), arm(1000, 100), Verdict.FAIL,
     "above the 1.00% limit"),
    ("a few errors in a small sample neither fail nor pass", P, arm(2000, 20), arm(100, 2),
     Verdict.HOLD, "not yet shown below"),
    ("24 requests of a 15%-failing candidate never pass",
     Policy(min_requests=20, max_error_rate=0.05, latency_quantile=0.5), arm(2000),
     arm(24, 1, 20, 1), Verdict.HOLD, "1/24"),
    ("error rate at 1.2% of 1000 is not significant", P, arm(20000, 200), arm(1000, 12),
     Verdict.HOLD, "not yet shown below"),
    ("error rate at 3% of 1000 is significant", P, arm(20000, 200), arm(1000, 30),
     Verdict.FAIL, "e(above)="),
    ("far worse than the baseline fails even under the limit", LOOSE,
     arm(20000, 20), arm(2000, 160), Verdict.FAIL, "2x the baseline"),
    ("worse than the baseline within the ratio is not failed", LOOSE,
     arm(20000, 200), arm(2000, 25), Verdict.PASS, "e(> 2x baseline)="),
    ("latency far slower fails", P, arm(2000, 0, 20, 2), arm(500, 0, 100, 2), Verdict.FAIL,
     "ratio in ["),
    ("latency well within the limit passes", P, arm(2000, 0, 20, 2), arm(2000, 0, 22, 2),
     Verdict.PASS, "below the limit"),
    ("p99 of too few samples is not decided", P99, arm(5000, 0, 20, 2), arm(300, 0, 20, 2),
     Verdict.HOLD, "not yet decided"),
    ("error failure dominates a latency hold", P99, arm(5000), arm(200, 40), Verdict.FAIL,
     "above the"),
    ("health mode ignores latency", HEALTH, arm(2000, 0, 20), arm(2000, 0, 200),
     Verdict.PASS, ""),
    ("health mode ignores the baseline's rate", dataclasses.replace(HEALTH, max_error_rate=0.1),
     arm(20000, 0), arm(2000, 10), Verdict.PASS, ""),
    ("health mode still fails an absolute error breach", HEALTH, arm(20000, 0),
     arm(1000, 50), Verdict.FAIL, "above"),
    ("zero-latency baseline with slower candidate fails", P, arm(2000, 0, 0.0),
     arm(500, 0, 5.0), Verdict.FAIL, "above the limit"),
    ("a ratio high on a few outliers only is not a failure",
     Policy(min_requests=100, latency_quantile=0.9, max_latency_ratio=1.5),
     arm(2000, 0, 20, 1), Arm(200, 0, ((19.0, 90), (20.0, 80), (100.0, 30))), Verdict.HOLD,
     "not yet decided"),
    ("json field mean dropped fails", JSON,
     Arm(2000, 0, hist(np.full(2000, 20.0)), field_of(np.full(2000, 0.9) + NOISE)),
     Arm(500, 0, hist(np.full(500, 20.0)), field_of(np.full(500, 0.6) + NOISE[:500])),
     Verdict.FAIL, "above the limit"),
    ("json field drop within max_drop passes", JSON,
     Arm(20000, 0, hist(np.full(20000, 20.0)), field_of(np.full(2000, 0.9) + NOISE)),
     Arm(2000, 0, hist(np.full(2000, 20.0)), field_of(np.full(2000, 0.9) + NOISE[::-1])),
     Verdict.PASS, "below the limit"),
    ("json field never seen holds", JSON, arm(2000, 0, 20, 1), arm(500, 0, 20, 1),
     Verdict.HOLD, "field seen in 0"),
]


@pytest.mark.parametrize(("rule", "policy", "base", "cand", "verdict", "detail"), ROWS,
                         ids=[r[0] for r in ROWS])
def test_decision_table(rule: str, policy: Policy, base: Arm, cand: Arm, verdict: Verdict,
                        detail: str) -> None:
    j = judge(policy, ev(base, cand, policy))
    assert j.verdict is verdict, (rule, j)
    text = " ".join(c.detail for c in j.checks) + " " + j.reason
    assert detail in text, (rule, text)
    assert j.reason and "\n" not in j.reason  # every judgement explains itself in one line
    assert j.critical is (j.checks[0].name == "critical")


def test_table_has_at_least_20_rules() -> None:
    assert len(ROWS) >= 20


def test_alpha_is_split_between_the_tests_that_can_fail() -> None:
    assert alpha_shares(P) == 3 and alpha_shares(HEALTH) == 1 and alpha_shares(JSON) == 4
    j = judge(P, ev(arm(20000, 10, 20, 5), arm(2000, 0, 20, 5)))
    assert "α=0.0033" in j.reason  # 0.01 / 3, spent per check
    assert "n=2000" in j.reason


# -- boundaries: exactly at, just below, just above ----------------------------------------
def alpha_for(log_e: float, k: int) -> float:
    """A policy alpha whose per-test threshold log(1/(alpha/k)) is exactly ``log_e``."""
    guess = k * math.exp(-log_e)
    for step in range(-200, 201):
        a = guess
        for _ in range(abs(step)):
            a = math.nextafter(a, math.inf if step > 0 else 0.0)
        if math.log(1 / (a / k)) == log_e:
            return a
    raise AssertionError("no float alpha hits the threshold exactly")


def _error(p: Policy, e: Evidence) -> bool | None:
    return next(c for c in judge(p, e).checks if c.name == "error_rate").passed


def test_absolute_fail_boundary() -> None:
    e = ev(arm(0), arm(1000, 25))
    up = log_e_above(25, 1000, 0.01)
    at = dataclasses.replace(HEALTH, alpha=alpha_for(up, 1))
    assert _error(at, e) is False  # e-value == 1/α fails
    assert _error(dataclasses.replace(at, alpha=math.nextafter(at.alpha, 0.0)), e) is None
    assert _error(dataclasses.replace(at, alpha=at.alpha * 1.01), e) is False


def test_absolute_pass_boundary() -> None:
    e = ev(arm(0), arm(1500, 2))
    down = log_e_below(2, 1500, 0.01)
    at = dataclasses.replace(HEALTH, alpha=alpha_for(down, 1))
    assert _error(at, e) is True
    assert _error(dataclasses.replace(at, alpha=math.nextafter(at.alpha, 0.0)), e) is None


def test_relative_fail_boundary() -> None:
    p = dataclasses.replace(LOOSE, min_requests=1)
    e = ev(arm(20000, 40), arm(2000, 30), p)
    ratio = log_e_ratio(e.ratio_loglr)
    assert log_e_above(30, 2000, 0.1) < ratio  # the absolute test is nowhere near
    at = dataclasses.replace(p, alpha=alpha_for(ratio, 3))
    assert _error(at, e) is False
    assert _error(dataclasses.replace(at, alpha=math.nextafter(at.alpha, 0.0)), e) is not False


def _latency(p: Policy, e: Evidence) -> bool | None:
    return next(c for c in judge(p, e).checks if c.name == "latency").passed


def test_latency_boundaries() -> None:
    e = ev(arm(5000, 0, 20, 2), arm(5000, 0, 40, 2))
    lc, uc = quantile_bounds(e.candidate.latency, 0.9, 0.01 / 3)
    lb, ub = quantile_bounds(e.baseline.latency, 0.9, 0.01 / 3)
    low, high = lc / ub, uc / lb
    p = dataclasses.replace(P, max_latency_ratio=low)
    assert _latency(p, e) is None  # exactly at the limit: not shown above it
    assert _latency(dataclasses.replace(p, max_latency_ratio=low * (1 - 1e-12)), e) is False
    assert _latency(dataclasses.replace(p, max_latency_ratio=high), e) is None
    assert _latency(dataclasses.replace(p, max_latency_ratio=high * (1 + 1e-12)), e) is True


def test_json_boundaries() -> None:
    base = Arm(5000, 0, hist(np.full(5000, 20.0)), field_of(np.full(2000, 0.9) + NOISE))
    cand = Arm(5000, 0, hist(np.full(5000, 20.0)), field_of(np.full(2000, 0.7) + NOISE[::-1]))
    e = ev(base, cand)
    (nb, sb, ssb), (nc, sc, ssc) = e.baseline.field, e.candidate.field
    vb = (ssb - sb * sb / nb) / (nb - 1)
    vc = (ssc - sc * sc / nc) / (nc - 1)
    lo, hi = mean_cs(sb / nb - sc / nc, vb / nb + vc / nc, (vb + vc) / 100, 0.01 / 4)

    def field(drop: float) -> bool | None:
        p = dataclasses.replace(JSON, json_max_drop=drop)
        return next(c for c in judge(p, e).checks if c.name.startswith("json")).passed
    assert field(lo * (1 - 1e-9)) is False
    assert field(lo * (1 + 1e-9)) is None
    assert field(hi * (1 + 1e-9)) is True
    assert field(hi * (1 - 1e-9)) is None


def test_min_requests_and_critical_boundaries() -> None:
    p = dataclasses.replace(HEALTH, min_requests=100, critical_min_requests=20)
    assert judge(p, ev(arm(0), arm(99))).checks[0].name == "min_requests"
    assert judge(p, ev(arm(0), arm(100))).checks[0].name == "error_rate"
    crit = judge(p, ev(arm(0), arm(20, 10)))  # exactly 50 % of exactly 20
    assert crit.critical and crit.verdict is Verdict.FAIL
    assert not judge(p, ev(arm(0), arm(20, 9))).critical
    assert not judge(p, ev(arm(0), arm(19, 10))).critical
    # the critical check reads the step, not the whole rollout
    e = dataclasses.replace(ev(arm(0), arm(20, 10)), step_requests=40, step_errors=20)
    assert judge(p, e).critical
    assert not judge(p, dataclasses.replace(e, step_errors=19)).critical


def test_zero_and_full_limits_are_exact() -> None:
    zero = dataclasses.replace(HEALTH, max_error_rate=0.0)
    assert _error(zero, ev(arm(0), arm(100, 1))) is False
    assert _error(zero, ev(arm(0), arm(100, 0))) is True
    assert _error(dataclasses.replace(HEALTH, max_error_rate=1.0), ev(arm(0), arm(100, 40))) \
        is True


def test_extra_checks_join_the_verdict() -> None:
    from proxy.rollout.analysis import Check
    e = ev(arm(20000, 10, 20, 5), arm(2000, 0, 20, 5))
    j: Judgement = judge(P, e, [Check("prom", False, "query above max")])
    assert j.verdict is Verdict.FAIL and "query above max" in j.reason
    assert judge(P, e, [Check("prom", None, "no data")]).verdict is Verdict.HOLD
