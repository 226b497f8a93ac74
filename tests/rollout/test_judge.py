"""The rollout judge: a decision table (each row names its rule) and seeded false-alarm runs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from proxy.rollout.analysis import Arm, Policy, Verdict, judge


def hist(values_ms: list[float] | np.ndarray) -> tuple[tuple[float, int], ...]:
    counts = Counter(round(float(v), 1) for v in values_ms)
    return tuple(sorted(counts.items()))


def arm(n: int, errors: int = 0, ms: float = 20.0, spread: float = 0.0) -> Arm:
    values = np.linspace(ms - spread, ms + spread, n) if spread else np.full(n, ms)
    return Arm(n, errors, hist(values))


NOISE = np.random.default_rng(3).normal(0, 0.05, 2000)
JSON = Policy(min_requests=100, latency_quantile=0.9, json_path="confidence",
              json_max_drop=0.05)


def field_of(values: np.ndarray) -> tuple[int, float, float]:
    return (len(values), float(values.sum()), float((values**2).sum()))


P = Policy(min_requests=100, max_error_rate=0.01, max_latency_ratio=1.5, latency_quantile=0.9)
P99 = Policy(min_requests=100, latency_quantile=0.99)
HEALTH = Policy(min_requests=100, health_only=True)

ROWS = [
    ("identical arms pass", P, arm(2000, 10, 20, 5), arm(500, 2, 20, 5), Verdict.PASS, ""),
    ("below min_requests holds", P, arm(2000), arm(99), Verdict.HOLD, "99 of 100"),
    ("a hold is not a failure even with errors under critical", P, arm(2000), arm(50, 10),
     Verdict.HOLD, "50 of 100"),
    ("critical breach fails before min_requests", P, arm(2000), arm(20, 10), Verdict.FAIL,
     "10/20"),
    ("critical needs critical_min_requests", P, arm(2000), arm(19, 19), Verdict.HOLD, ""),
    ("error rate far above limit fails", P, arm(2000), arm(1000, 100), Verdict.FAIL,
     "above 1.00%"),
    ("error rate above limit but not significant passes", P, arm(2000, 20), arm(100, 2),
     Verdict.PASS, ""),
    ("error rate at 1.2% of 1000 is not significant", P, arm(20000, 200), arm(1000, 12),
     Verdict.PASS, ""),
    ("error rate at 3% of 1000 is significant", P, arm(20000, 200), arm(1000, 30),
     Verdict.FAIL, "binomial"),
    ("worse than baseline by more than the margin fails even under the limit",
     Policy(min_requests=100, max_error_rate=0.1, latency_quantile=0.9),
     arm(20000, 20), arm(2000, 160), Verdict.FAIL, "worse than baseline"),
    ("worse than baseline within the margin passes",
     Policy(min_requests=100, max_error_rate=0.1, latency_quantile=0.9),
     arm(20000, 20), arm(2000, 80), Verdict.PASS, ""),
    ("small expected counts skip the baseline comparison",
     Policy(min_requests=10, max_error_rate=0.5, latency_quantile=0.5),
     arm(100, 0), arm(10, 1), Verdict.PASS, ""),
    ("latency ratio above limit and significant fails", P, arm(2000, 0, 20, 2),
     arm(500, 0, 100, 2), Verdict.FAIL, "Mann-Whitney"),
    ("latency ratio within limit passes", P, arm(2000, 0, 20, 2), arm(500, 0, 25, 2),
     Verdict.PASS, ""),
    ("p99 needs 368 samples: holds at 367", P99, arm(5000, 0, 20, 2), arm(367, 0, 20, 2),
     Verdict.HOLD, "needs 368"),
    ("p99 judged at 368 samples", P99, arm(5000, 0, 20, 2), arm(368, 0, 20, 2), Verdict.PASS,
     ""),
    ("baseline short of quantile samples holds", P, arm(20, 0, 20), arm(500, 0, 20),
     Verdict.HOLD, "baseline 20"),
    ("error failure dominates a latency hold", P99, arm(5000), arm(200, 40), Verdict.FAIL,
     "binomial"),
    ("health mode ignores latency", HEALTH, arm(2000, 0, 20), arm(500, 0, 200), Verdict.PASS,
     ""),
    ("health mode ignores the baseline's rate", HEALTH, arm(20000, 0), arm(2000, 10),
     Verdict.PASS, ""),
    ("health mode still fails an absolute error breach", HEALTH, arm(20000, 0),
     arm(1000, 50), Verdict.FAIL, "above"),
    ("zero-latency baseline with slower candidate fails", P, arm(2000, 0, 0.0),
     arm(500, 0, 5.0), Verdict.FAIL, "Mann-Whitney"),
    ("latency ratio high on a few outliers only is not significant",
     Policy(min_requests=100, latency_quantile=0.9, max_latency_ratio=1.5),
     arm(2000, 0, 20, 1), Arm(200, 0, ((19.0, 90), (20.0, 80), (100.0, 30))), Verdict.PASS,
     "not significant"),
    ("json field mean dropped significantly fails", JSON,
     Arm(2000, 0, hist(np.full(2000, 20.0)), field_of(np.full(2000, 0.9) + NOISE)),
     Arm(500, 0, hist(np.full(500, 20.0)), field_of(np.full(500, 0.6) + NOISE[:500])),
     Verdict.FAIL, "dropped"),
    ("json field drop within max_drop passes", JSON,
     Arm(2000, 0, hist(np.full(2000, 20.0)), field_of(np.full(2000, 0.9) + NOISE)),
     Arm(500, 0, hist(np.full(500, 20.0)), field_of(np.full(500, 0.88) + NOISE[:500])),
     Verdict.PASS, "Welch"),
    ("json field never seen holds", JSON, arm(2000, 0, 20, 1), arm(500, 0, 20, 1),
     Verdict.HOLD, "field seen in 0"),
]


@pytest.mark.parametrize(("rule", "policy", "base", "cand", "verdict", "detail"), ROWS,
                         ids=[r[0] for r in ROWS])
def test_decision_table(rule: str, policy: Policy, base: Arm, cand: Arm, verdict: Verdict,
                        detail: str) -> None:
    j = judge(policy, base, cand)
    assert j.verdict is verdict, (rule, j)
    text = " ".join(c.detail for c in j.checks) + " " + j.reason
    assert detail in text, (rule, text)


def test_table_has_at_least_20_rules() -> None:
    assert len(ROWS) >= 20


def _window(rng: np.random.Generator, n: int, error_rate: float, ms: float) -> Arm:
    errors = int(rng.binomial(n, error_rate))
    latency = rng.lognormal(np.log(ms), 0.25, n)
    return Arm(n, errors, hist(latency))


@pytest.mark.parametrize("cand_error_rate", [0.005, 0.008])
def test_no_false_rollback_in_30_consecutive_analyses(cand_error_rate: float) -> None:
    rng = np.random.default_rng(20261129)
    policy = Policy(min_requests=1000, max_error_rate=0.01, latency_quantile=0.99)
    for _ in range(30):
        base = _window(rng, 19_000, 0.005, 20.0)
        cand = _window(rng, 1_000, cand_error_rate, 20.0)
        j = judge(policy, base, cand)
        assert j.verdict is Verdict.PASS, j.reason


def test_a_truly_bad_candidate_is_caught() -> None:
    rng = np.random.default_rng(1)
    policy = Policy(min_requests=1000, max_error_rate=0.01, latency_quantile=0.99)
    assert judge(policy, _window(rng, 19_000, 0.005, 20), _window(rng, 1000, 0.1, 20)).verdict \
        is Verdict.FAIL
    assert judge(policy, _window(rng, 19_000, 0.0, 20), _window(rng, 1000, 0.0, 100)).verdict \
        is Verdict.FAIL


def _accumulated(value: float, n: int) -> tuple[int, float, float]:
    """(n, sum, sum of squares) summed one response at a time, as the proxy does: the
    rounding leaves ``squares - n * mean**2`` a few ulps off zero, either sign."""
    total = squares = 0.0
    for _ in range(n):
        total += value
        squares += value * value
    return (n, total, squares)


@pytest.mark.parametrize("n", range(2, 400, 7))
def test_constant_json_field_is_judged_the_same_whatever_the_window_size(n: int) -> None:
    # The regression behind a flaky end-to-end test: constant predictions (0.9 vs 0.5)
    # gave a variance of exactly 0 for some window sizes and a rounding residue for others,
    # and the two branches disagreed in their message.
    base = Arm(2000, 0, arm(2000).latency, _accumulated(0.9, n))
    cand = Arm(2000, 0, arm(2000).latency, _accumulated(0.5, n))
    j = judge(JSON, base, cand)
    check = next(c for c in j.checks if c.name == "json:confidence")
    assert check.passed is False
    assert "dropped by 0.4" in check.detail and "no variance" in check.detail
    same = judge(JSON, base, Arm(2000, 0, arm(2000).latency, _accumulated(0.9, n)))
    assert next(c for c in same.checks if c.name == "json:confidence").passed is True


def test_constant_json_field_drop_at_the_limit_passes() -> None:
    base = Arm(2000, 0, arm(2000).latency, (4, 4.0, 4.0))  # constant 1.0
    at = Arm(2000, 0, arm(2000).latency, (4, 3.5, 3.0625))  # constant 0.875
    policy = Policy(min_requests=100, latency_quantile=0.9, json_path="confidence",
                    json_max_drop=0.125)
    assert next(c for c in judge(policy, base, at).checks if c.name.startswith("json")).passed
    below = Arm(2000, 0, arm(2000).latency, (4, 3.4, 2.89))  # constant 0.85: drop 0.15
    assert next(c for c in judge(policy, base, below).checks
                if c.name.startswith("json")).passed is False
