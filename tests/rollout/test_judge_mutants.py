"""The judge pinned where mutation testing found it loose (see "Mutation testing" in
docs/rollouts.md): each threshold exactly at its boundary, the JSON field's exact branch,
a baseline faster than 1 ms, the shadow judge, and the figures a judgement shows."""

from __future__ import annotations

import dataclasses
import math

import pytest

from proxy.rollout.analysis import Arm, Check, Judgement, Policy, Verdict, combine, judge_shadow
from proxy.rollout.evidence import Evidence
from proxy.rollout.judge import _sample_variance, alpha_shares, judge
from proxy.rollout.sequential import mean_cs


def ev(base: Arm, cand: Arm, p: Policy) -> Evidence:
    return Evidence().fold(base, cand, p.max_error_ratio)


def field_of(values: list[float]) -> tuple[int, float, float]:
    return len(values), math.fsum(values), math.fsum(v * v for v in values)


def check(j: Judgement, prefix: str) -> Check:
    return next(c for c in j.checks if c.name.startswith(prefix))


def arm(n: int, errors: int = 0, field: list[float] | None = None, ms: float = 20.0) -> Arm:
    return Arm(n, errors, ((ms, n),) if n else (), field_of(field) if field else (0, 0.0, 0.0))


HEALTH = Policy(min_requests=100, health_only=True)
LOOSE = Policy(min_requests=1, max_error_rate=0.1, latency_quantile=0.9)


# -- the error check's figures and the critical check ---------------------------------------
def test_error_check_shows_its_limit_and_where_it_decides() -> None:
    zero = judge(dataclasses.replace(HEALTH, max_error_rate=0.0), ev(arm(0), arm(100), HEALTH))
    assert "(limit 0)" in check(zero, "error").detail
    full = judge(dataclasses.replace(HEALTH, max_error_rate=1.0), ev(arm(0), arm(100), HEALTH))
    assert "(no limit)" in check(full, "error").detail
    j = judge(HEALTH, ev(arm(0), arm(1000, 30), HEALTH))
    assert "decides at 100 (α=0.01)" in check(j, "error").detail
    rel = judge(LOOSE, ev(arm(20000, 20), arm(2000, 160), LOOSE))
    assert "≥ 300 (α=0.0033)" in check(rel, "error").detail and rel.verdict is Verdict.FAIL


def test_the_critical_check_is_a_failed_check() -> None:
    j = judge(HEALTH, ev(arm(0), arm(20, 10), HEALTH))
    assert j.critical and j.checks == (Check("critical", False, j.reason),)


# -- latency --------------------------------------------------------------------------------
def test_a_baseline_faster_than_a_millisecond_is_still_compared() -> None:
    p = Policy(min_requests=100, latency_quantile=0.9)
    j = judge(p, ev(arm(5000, ms=0.5), arm(5000, ms=0.5), p))
    lat = check(j, "latency")
    assert lat.passed is True, lat.detail
    assert lat.detail.startswith("p90 candidate [0.5, 0.5] ms (n=5000)")


# -- the JSON field -------------------------------------------------------------------------
JSON = Policy(min_requests=4, latency_quantile=0.5, json_path="score", json_max_drop=0.05)
CONST = [0.9] * 4


@pytest.mark.parametrize(("nb", "nc", "judged"), [(1, 1, False), (1, 2, False), (2, 1, False),
                                                  (2, 2, True), (3, 3, True)])
def test_field_needs_two_values_on_each_side(nb: int, nc: int, judged: bool) -> None:
    j = judge(JSON, ev(arm(4, field=[0.9] * nb), arm(4, field=[0.9] * nc), JSON))
    c = check(j, "json:score")
    assert (c.passed is not None) is judged, c.detail
    if not judged:
        assert c.detail == f"field seen in {nc} candidate / {nb} baseline responses"


@pytest.mark.parametrize(("cand", "at_the_drop", "passed", "detail"), [
    ([0.8] * 4, False, False, "dropped by 0.1, no variance"),
    ([0.85] * 4, True, True, "no variance"),  # a drop of exactly max_drop is within it
    ([0.9] * 4, False, True, "no variance"),
    ([1.0] * 4, False, True, "no variance"),
])
def test_constant_fields_are_judged_exactly(cand: list[float], at_the_drop: bool,
                                           passed: bool, detail: str) -> None:
    drop = math.fsum(CONST) / 4 - math.fsum(cand) / 4  # as the judge computes it
    p = dataclasses.replace(JSON, json_max_drop=drop) if at_the_drop else JSON
    c = check(judge(p, ev(arm(4, field=CONST), arm(4, field=cand), p)), "json:score")
    assert (c.name, c.passed) == ("json:score", passed)
    assert c.detail.startswith("mean candidate ") and c.detail.endswith(detail), c.detail


def test_equal_but_nonzero_variances_are_not_treated_as_exact() -> None:
    """Four values a side with the same spread: the drop of 1 is not yet shown."""
    e = ev(arm(4, field=[1, 3, 1, 3]), arm(4, field=[0, 2, 0, 2]), JSON)
    c = check(judge(JSON, e), "json:score")
    assert c.passed is None and "drop in [" in c.detail


def _field_cs(p: Policy, e: Evidence) -> tuple[float, float]:
    (nb, sb, ssb), (nc, sc, ssc) = e.baseline.field, e.candidate.field
    vb, vc = _sample_variance(nb, sb, ssb), _sample_variance(nc, sc, ssc)
    tau2 = (vb + vc) / max(p.min_requests, 2)
    return mean_cs(sb / nb - sc / nc, vb / nb + vc / nc, tau2, p.alpha / alpha_shares(p))


@pytest.mark.parametrize("min_requests", [1, 2, 3, 100])
def test_field_bounds_exactly_at_the_limit(min_requests: int) -> None:
    base = [0.9 + 0.01 * ((i * 7) % 11 - 5) for i in range(400)]
    cand = [v - 0.2 + 0.003 * ((i * 5) % 7 - 3) for i, v in enumerate(base)]
    p = dataclasses.replace(JSON, min_requests=min_requests)
    e = ev(arm(400, field=base), arm(400, field=cand), p)
    lo, hi = _field_cs(p, e)
    assert 0 < lo < hi

    def passed(limit: float) -> bool | None:
        return check(judge(dataclasses.replace(p, json_max_drop=limit), e), "json").passed
    assert passed(lo) is None  # exactly at the lower bound: not shown above it
    assert passed(math.nextafter(lo, 0.0)) is False
    assert passed(hi) is None  # exactly at the upper bound: not shown below it
    assert passed(math.nextafter(hi, math.inf)) is True


def test_sample_variance_threshold_and_rounding() -> None:
    # spread exactly at the tolerance (1e-12 × the sum of squares) counts as no spread
    n, total, squares = 111_111_111_111, 333_333_333_333.0, 1e12
    assert squares - n * (total / n) ** 2 == 1e-12 * squares == 1.0
    assert _sample_variance(n, total, squares) == 0.0
    # a constant large value whose squares do not add up exactly is still constant
    values = [1000.1] * 10_000
    n, total, squares = len(values), sum(values), sum(v * v for v in values)
    assert squares - n * (total / n) ** 2 != 0.0
    assert _sample_variance(n, total, squares) == 0.0
    # a real spread of tiny values is kept, however small the numbers
    assert _sample_variance(2, 3e-7, 5e-14) == pytest.approx(5e-15, rel=1e-6, abs=0)
    assert _sample_variance(3, 3.0, 3.0) == 0.0
    assert _sample_variance(2, 2.0, 4.0) == 2.0


# -- the vocabulary: quantile, summary, checks, combine ---------------------------------------
@pytest.mark.parametrize(("hist", "q", "want"), [
    ((), 0.5, 0.0),
    (((7.0, 1),), 0.5, 7.0),
    (((1.0, 1), (2.0, 1)), 0.0, 1.0),
    (((1.0, 2), (2.0, 3), (5.0, 1)), 1 / 3, 1.0),  # rank 2 exactly: the first bucket
    (((1.0, 2), (2.0, 3), (5.0, 1)), 0.5, 2.0),
    (((1.0, 2), (2.0, 3), (5.0, 1)), 5 / 6, 2.0),
    (((1.0, 2), (2.0, 3), (5.0, 1)), 0.99, 5.0),
    (((1.0, 2), (2.0, 3), (5.0, 1)), 1.0, 5.0),
    (((1.0, 90), (3.0, 9), (9.0, 1)), 0.99, 3.0),
])
def test_arm_quantile_is_the_nearest_rank(hist: tuple[tuple[float, int], ...], q: float,
                                          want: float) -> None:
    assert Arm(0, 0, hist).quantile(q) == want


def test_arm_summary() -> None:
    a = Arm(200, 3, ((1.0, 90), (3.0, 9), (9.0, 1)))
    assert a.summary() == {"requests": 200, "errors": 3, "error_rate": 0.015,
                           "latency_ms": {"p50": 1.0, "p99": 3.0}}


def test_check_json_and_combined_reasons() -> None:
    assert Check("a", None, "x").to_json() == {"name": "a", "passed": None, "detail": "x"}
    ok, held, bad = Check("a", True, "fine"), Check("b", None, "wait"), Check("c", False, "no")
    assert combine([bad, ok, Check("d", False, "worse")]).reason == "no; worse"
    assert combine([held, ok, Check("e", None, "more")]).reason == "wait; more"
    assert combine([ok, Check("f", True, "good")]).reason == "fine; good"


# -- the shadow phase's threshold judge ----------------------------------------------------
SHADOW = [  # (sent, errors, compared, mismatched, verdict, failed checks)
    (100, 0, 99, 0, Verdict.HOLD, []),
    (100, 0, 100, 1, Verdict.PASS, []),  # mismatch exactly at 1 %: within
    (100, 0, 100, 2, Verdict.FAIL, ["shadow_mismatch_rate"]),
    (100, 1, 100, 0, Verdict.PASS, []),  # errors exactly at 1 %: within
    (100, 2, 100, 0, Verdict.FAIL, ["shadow_error_rate"]),
    (0, 0, 100, 0, Verdict.PASS, []),  # nothing sent: no error rate to hold against it
    (1000, 5, 200, 1, Verdict.PASS, []),
]


@pytest.mark.parametrize(("sent", "errors", "compared", "mismatched", "verdict", "failed"),
                         SHADOW)
def test_shadow_judge_boundaries(sent: int, errors: int, compared: int, mismatched: int,
                                 verdict: Verdict, failed: list[str]) -> None:
    j = judge_shadow(100, 0.01, 0.01, sent=sent, errors=errors, compared=compared,
                     mismatched=mismatched)
    assert j.verdict is verdict
    if verdict is Verdict.HOLD:
        detail = f"{compared} of 100 answers compared"
        assert j.checks == (Check("shadow_compared", None, detail),) and j.reason == detail
        return
    assert [c.name for c in j.checks] == ["shadow_mismatch_rate", "shadow_error_rate"]
    assert [c.name for c in j.checks if c.passed is False] == failed
