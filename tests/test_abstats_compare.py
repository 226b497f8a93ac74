"""How :func:`compare_proportions` combines its parts: every part reaches the comparison and
its JSON, an empty arm is neutral on either side, and each verdict rule flips exactly at its
threshold (the boundary cases mutation testing asks for; see docs/rollouts.md)."""

from __future__ import annotations

import math
from typing import Literal

import pytest
from statsmodels.stats.proportion import confint_proportions_2indep

from proxy.abstats import SequentialState, compare_proportions
from proxy.abstats.proportions import relative_difference
from proxy.abstats.sequential import DEFAULT_N_STAR, sequential_update

LARGE = (1090, 10_000, 1000, 10_000)  # no expected cell under 5: the z-test decides
SMALL = (8, 10, 1, 10)  # expected cells under 5: Fisher must agree


@pytest.mark.parametrize("case", [(5, 10, 0, 0), (0, 0, 5, 10), (10, 10, 0, 0)])
def test_one_empty_arm_is_neutral(case: tuple[int, int, int, int]) -> None:
    """One arm without data (not both): no division by its zero count, neutral figures."""
    got = compare_proportions(*case, state=SequentialState(1e-9))
    assert got.diff == 0.0
    assert (got.rel_diff, got.rel_diff_ci95) == (0.0, (0.0, 0.0))
    assert got.ci95 == got.ci99 == (0.0, 0.0)
    assert (got.p_value, got.test_used, got.fisher_p_value) == (1.0, "z_pooled", None)
    assert got.verdict == "inconclusive"  # a carried p below alpha, but no difference


@pytest.mark.parametrize("case", [(56, 70, 48, 80), (20, 100, 35, 100), (3, 3, 2, 7),
                                  (500, 10_000, 560, 10_000)])
def test_relative_interval_is_the_katz_log_interval(case: tuple[int, int, int, int]) -> None:
    got = compare_proportions(*case)
    x_t, n_t, x_c, n_c = case
    low, high = confint_proportions_2indep(x_t, n_t, x_c, n_c, compare="ratio", method="log",
                                           alpha=0.05)
    assert got.rel_diff_ci95 is not None
    assert got.rel_diff_ci95 == pytest.approx((low - 1, high - 1), rel=1e-9)
    assert got.rel_diff == pytest.approx(x_t / n_t / (x_c / n_c) - 1, rel=1e-12)
    assert got.to_json()["rel_diff_ci95"] == list(got.rel_diff_ci95)


@pytest.mark.parametrize(("case", "method"), [((0, 5, 5, 5), "katz-log-adjusted-upper"),
                                              ((3, 3, 0, 7), "undefined")])
def test_relative_interval_at_zero_counts(case: tuple[int, int, int, int],
                                          method: str) -> None:
    got = compare_proportions(*case)
    rel = relative_difference(*case, 0.95)
    assert rel.method == method
    want = None if rel.low is None or rel.high is None else (rel.low, rel.high)
    assert got.rel_diff_ci95 == want
    assert got.to_json()["rel_diff_ci95"] == (None if want is None else list(want))


def test_json_carries_every_part() -> None:
    got = compare_proportions(*SMALL, latency_p_value=0.25)
    doc = got.to_json()
    assert doc["z_p_value"] == got.z_p_value and got.z_p_value != got.p_value
    assert doc["fisher_p_value"] == got.fisher_p_value == got.p_value
    assert doc["test_used"] == "fisher_exact"
    assert doc["sequential_cs"] == list(got.sequential_cs)
    assert doc["sequential_p_value"] == got.sequential_p_value
    assert doc["latency_p_value"] == 0.25
    assert compare_proportions(*SMALL).to_json()["latency_p_value"] == 1.0


@pytest.mark.parametrize("n_star", [100.0, DEFAULT_N_STAR, 50_000.0])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_alpha_and_n_star_reach_the_sequential_test(n_star: float, alpha: float) -> None:
    got = compare_proportions(*LARGE, alpha=alpha, n_star=n_star)
    state, p, low, high = sequential_update(SequentialState(), *LARGE, alpha, n_star)
    assert (got.sequential_p_value, got.sequential_cs, got.sequential_state) == (
        p, (low, high), state)
    if n_star != DEFAULT_N_STAR:  # the tuning changes the figures: the check can tell
        assert got.sequential_cs != compare_proportions(*LARGE, alpha=alpha).sequential_cs


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


# (case, how the verdict is decided, carried running minimum, alpha: a function of the
#  comparison's own p-values, expected verdict)
P_FIXED = compare_proportions(*LARGE).p_value
P_FISHER = compare_proportions(*SMALL).fisher_p_value
assert P_FISHER is not None
BOUNDARIES = [
    ("fixed p exactly at alpha", LARGE, "fixed", 1.0, P_FIXED, "inconclusive"),
    ("fixed p just under alpha", LARGE, "fixed", 1.0, above(P_FIXED), "treatment better"),
    ("carried sequential p exactly at alpha", LARGE, "sequential", 0.01, 0.01, "inconclusive"),
    ("carried sequential p just under alpha", LARGE, "sequential", 0.01, above(0.01),
     "treatment better"),
    ("small counts: Fisher exactly at alpha", SMALL, "sequential", 1e-9, P_FISHER,
     "inconclusive"),
    ("small counts: Fisher just under alpha", SMALL, "sequential", 1e-9, above(P_FISHER),
     "treatment better"),
    ("significant, difference exactly 0", (1000, 10_000, 1000, 10_000), "sequential", 1e-9,
     0.05, "inconclusive"),
    # (at rates 0 and 1 the look itself has no variance: the carried minimum decides)
    ("significant, difference exactly +1", (400, 400, 0, 400), "sequential", 1e-9, 0.05,
     "treatment better"),
    ("significant, difference exactly -1", (0, 400, 400, 400), "sequential", 1e-9, 0.05,
     "treatment worse"),
]


@pytest.mark.parametrize(("case", "decide_on", "carried", "alpha", "verdict"),
                         [b[1:] for b in BOUNDARIES], ids=[b[0] for b in BOUNDARIES])
def test_verdict_flips_exactly_at_each_threshold(case: tuple[int, int, int, int],
                                                 decide_on: Literal["sequential", "fixed"],
                                                 carried: float,
                                                 alpha: float, verdict: str) -> None:
    got = compare_proportions(*case, state=SequentialState(carried), alpha=alpha,
                              decide_on=decide_on)
    assert got.verdict == verdict
    if verdict != "inconclusive":  # the same evidence under an SRM is never trusted
        assert compare_proportions(*case, state=SequentialState(carried), alpha=alpha,
                                   decide_on=decide_on,
                                   srm_flagged=True).verdict == "inconclusive"
