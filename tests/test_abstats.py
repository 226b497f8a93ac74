"""proxy.abstats (proportions, SRM, Welch, sample size, comparison) against scipy/statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sst
from scipy.stats.contingency import expected_freq
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_effectsize,
    proportions_ztest,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from proxy.abstats import (
    MeanStats,
    compare_proportions,
    expected_cell_counts,
    expected_counts_over_time,
    fisher_p_value,
    is_small_sample,
    newcombe_interval,
    relative_difference,
    sample_size_per_arm,
    srm_check,
    welch_test,
)

# (x_t, n_t, x_c, n_c): edge cases (0/n, n/n, tiny counts) and ordinary ones.
PAIRS = [
    (56, 70, 48, 80), (0, 10, 0, 10), (10, 10, 10, 10), (1, 2, 0, 3), (0, 5, 5, 5),
    (3, 3, 0, 7), (1, 1, 0, 1), (20, 100, 35, 100), (500, 10_000, 560, 10_000),
    (7, 1_000_000, 3, 900_000), (999, 1000, 990, 1000), (45, 60, 12, 15),
]
CONFS = [0.95, 0.99, 0.9]


def counts(max_n: int = 5000) -> st.SearchStrategy[tuple[int, int, int, int]]:
    """Strategy for ``(x_t, n_t, x_c, n_c)`` with non-empty arms."""
    arm = st.integers(1, max_n).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n)))
    return st.tuples(arm, arm).map(lambda a: (a[0][0], a[0][1], a[1][0], a[1][1]))


# --- Newcombe -------------------------------------------------------------------------------

def test_newcombe_published_example() -> None:
    lo, hi = newcombe_interval(56, 70, 48, 80, 0.95)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


@pytest.mark.parametrize("case", PAIRS)
@pytest.mark.parametrize("conf", CONFS)
def test_newcombe_matches_statsmodels(case: tuple[int, int, int, int], conf: float) -> None:
    want = confint_proportions_2indep(*case, method="newcomb", alpha=1 - conf)
    assert newcombe_interval(*case, conf) == pytest.approx(want, abs=1e-12)


def test_newcombe_empty_arm_is_neutral() -> None:
    assert newcombe_interval(0, 0, 3, 10) == (0.0, 0.0)
    with pytest.raises(ValueError):
        newcombe_interval(11, 10, 3, 10)


@given(counts())
def test_newcombe_contains_estimate_and_nests(case: tuple[int, int, int, int]) -> None:
    x_t, n_t, x_c, n_c = case
    d = x_t / n_t - x_c / n_c
    lo95, hi95 = newcombe_interval(*case, 0.95)
    lo99, hi99 = newcombe_interval(*case, 0.99)
    assert -1 <= lo99 <= lo95 <= d + 1e-12
    assert d - 1e-12 <= hi95 <= hi99 <= 1


# --- relative difference (Katz log interval) --------------------------------------------------

RATIO_CASES = [c for c in PAIRS if c[0] > 0 and c[2] > 0] + [
    (5, 10, 5, 10), (1, 50, 2, 50), (300, 400, 100, 400), (2, 3, 9, 9),
]


@pytest.mark.parametrize("case", RATIO_CASES)
@pytest.mark.parametrize("conf", CONFS)
def test_relative_interval_matches_statsmodels_log(case: tuple[int, int, int, int],
                                                   conf: float) -> None:
    lo, hi = confint_proportions_2indep(*case, compare="ratio", method="log", alpha=1 - conf)
    got = relative_difference(*case, conf)
    x_t, n_t, x_c, n_c = case
    assert got.method == "katz-log"
    assert got.estimate == pytest.approx((x_t / n_t) / (x_c / n_c) - 1, rel=1e-12)
    assert (got.low, got.high) == pytest.approx((lo - 1, hi - 1), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("case", [(0, 10, 3, 10), (0, 100, 1, 5), (0, 1, 1, 1)])
def test_relative_interval_zero_treatment(case: tuple[int, int, int, int]) -> None:
    _, hi = confint_proportions_2indep(*case, compare="ratio", method="log-adjusted")
    got = relative_difference(*case)
    assert (got.estimate, got.low) == (-1.0, -1.0)
    assert got.high == pytest.approx(hi - 1, rel=1e-10)


def test_relative_difference_undefined_or_empty() -> None:
    assert relative_difference(3, 10, 0, 10).estimate is None
    assert relative_difference(0, 10, 0, 10).low is None
    assert relative_difference(0, 0, 3, 10).estimate == 0.0


@given(counts())
def test_relative_interval_contains_estimate(case: tuple[int, int, int, int]) -> None:
    r95, r99 = relative_difference(*case, 0.95), relative_difference(*case, 0.99)
    if r95.estimate is None:
        assert case[2] == 0
        return
    assert r95.low is not None and r95.high is not None
    assert r99.low is not None and r99.high is not None
    est = r95.estimate
    assert r99.low <= r95.low <= est * (1 + 1e-12) + 1e-12
    assert est * (1 - 1e-12) - 1e-12 <= r95.high <= r99.high


# --- small counts: Fisher -------------------------------------------------------------------

@pytest.mark.parametrize("case", PAIRS)
def test_fisher_and_expected_counts_match_scipy(case: tuple[int, int, int, int]) -> None:
    x_t, n_t, x_c, n_c = case
    table = np.array([[x_t, n_t - x_t], [x_c, n_c - x_c]])
    want = sst.fisher_exact(table).pvalue
    assert fisher_p_value(*case) == pytest.approx(min(1.0, want), rel=1e-12, abs=1e-300)
    if table.sum(axis=0).min() > 0:
        assert expected_cell_counts(*case) == pytest.approx(expected_freq(table).ravel())
        assert is_small_sample(*case) == (expected_freq(table).min() < 5)


def test_small_counts_report_fisher() -> None:
    small = compare_proportions(1, 2, 0, 3)
    assert small.test_used == "fisher_exact"
    assert small.fisher_p_value == pytest.approx(sst.fisher_exact([[1, 1], [0, 3]]).pvalue)
    assert small.p_value == small.fisher_p_value
    big = compare_proportions(500, 10_000, 560, 10_000)
    assert (big.test_used, big.fisher_p_value) == ("z_pooled", None)
    # Expected failures of the treatment arm below 5: Fisher, and a verdict needs it too.
    lopsided = compare_proportions(300, 300, 9_900, 10_000)
    assert lopsided.test_used == "fisher_exact"
    assert lopsided.verdict == "inconclusive"


# --- sample ratio mismatch --------------------------------------------------------------------

SRM_CASES = [
    ([5000, 5000], [50, 50]), ([5200, 4800], [0.5, 0.5]), ([5300, 4700], [1, 1]),
    ([900, 100], [90, 10]), ([1000, 1000, 1000], [1, 1, 1]), ([1, 2], [1, 1]),
    ([40, 60], [0.4, 0.6]), ([0, 100], [1, 1]), ([8, 8, 30], [1, 1, 2]),
    ([10_321, 9_679], [10_000.0, 10_000.0]), ([123, 4567, 8910], [1, 30, 69]),
]


@pytest.mark.parametrize(("observed", "weights"), SRM_CASES)
def test_srm_matches_scipy_chisquare(observed: list[int], weights: list[float]) -> None:
    n, w = sum(observed), sum(weights)
    want = sst.chisquare(observed, [n * x / w for x in weights])
    got = srm_check(observed, weights)
    assert got.chi2 == pytest.approx(want.statistic, rel=1e-10, abs=1e-12)
    assert got.p_value == pytest.approx(want.pvalue, rel=1e-8, abs=1e-300)
    assert got.flagged == bool(want.pvalue < 0.001 and n * min(weights) / w >= 8)


def test_srm_flag_rules() -> None:
    assert srm_check([5300, 4700], [1, 1]).flagged
    assert not srm_check([5100, 4900], [1, 1]).flagged
    assert not srm_check([6, 0], [1, 1]).flagged  # too few units to judge
    assert srm_check([16, 0], [1, 1]).flagged  # a dead arm is still a mismatch
    stray = srm_check([100, 100, 3], [1, 1, 0])
    assert (stray.p_value, stray.flagged) == (0.0, True)
    assert stray.to_json()["chi2"] is None
    assert srm_check([0, 0], [1, 1]) == srm_check([5, 0], [1, 0])
    assert srm_check([0, 0], [1, 1]).to_json() == {"p_value": 1.0, "flagged": False, "chi2": 0.0}
    with pytest.raises(ValueError):
        srm_check([1, 2], [1])


def test_expected_counts_over_time_follow_the_ramp() -> None:
    windows: list[tuple[int, list[float]]] = [
        (1000, [95, 5]), (2000, [0.75, 0.25]), (0, [0, 1]), (4000, [1, 1])]
    assert expected_counts_over_time(windows) == pytest.approx([4450.0, 2550.0])
    # Judged against the ramp, a faithful split is fine; against current weights it is not.
    observed = [4460, 2540]
    assert not srm_check(observed, expected_counts_over_time(windows)).flagged
    assert srm_check(observed, [1, 1]).flagged
    with pytest.raises(ValueError):
        uneven: list[tuple[int, list[float]]] = [(10, [1, 1]), (10, [1])]
        expected_counts_over_time(uneven)
    assert expected_counts_over_time([]) == []


# --- continuous metrics: Welch ----------------------------------------------------------------

def _welch_samples() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2024)
    out = []
    for n_t, n_c, mt, mc, st_, sc in [
        (2, 2, 0, 1, 1, 1), (2, 50, 3, 3, 1, 5), (30, 30, 10, 10, 2, 2), (30, 300, 10, 11, 2, 8),
        (500, 400, 100, 101, 15, 30), (1000, 1000, 0.2, 0.21, 0.05, 0.05), (5, 7, 0, 0, 1, 9),
        (12, 3, -4, 2, 3, 0.5), (200, 20, 50, 40, 1, 20), (3, 3, 1e6, 1e6 + 5, 2, 3),
    ]:
        out.append((rng.normal(mt, st_, n_t), rng.normal(mc, sc, n_c)))
    return out


@pytest.mark.parametrize(("a", "b"), _welch_samples())
@pytest.mark.parametrize("conf", [0.95, 0.99])
def test_welch_matches_scipy_and_statsmodels(a: np.ndarray, b: np.ndarray, conf: float) -> None:
    got = welch_test(MeanStats.from_samples(a), MeanStats.from_samples(b), conf)
    want = sst.ttest_ind(a, b, equal_var=False)
    assert got.t == pytest.approx(want.statistic, rel=1e-8)
    assert got.p_value == pytest.approx(want.pvalue, rel=1e-8)
    assert got.df == pytest.approx(want.df, rel=1e-8)
    lo, hi = CompareMeans(DescrStatsW(a), DescrStatsW(b)).tconfint_diff(
        alpha=1 - conf, usevar="unequal")
    assert (got.ci_low, got.ci_high) == pytest.approx((lo, hi), rel=1e-8, abs=1e-9)
    # The same answer from (n, mean, variance) and from merged partial sums.
    moments = MeanStats.from_moments(len(a), float(np.mean(a)), float(np.var(a, ddof=1)))
    halves = MeanStats.from_samples(a[: len(a) // 2]).merge(MeanStats.from_samples(a[len(a) // 2:]))
    for stats_a in (moments, halves):
        again = welch_test(stats_a, MeanStats.from_samples(b), conf)
        assert again.p_value == pytest.approx(got.p_value, rel=1e-7)


def test_welch_degenerate_cases() -> None:
    one = welch_test(MeanStats.from_samples([1.0]), MeanStats.from_samples([1.0, 2.0]))
    assert (one.p_value, one.ci_low, one.ci_high) == (1.0, -math.inf, math.inf)
    flat = welch_test(MeanStats.from_samples([2.0, 2.0]), MeanStats.from_samples([2.0] * 3))
    assert (flat.p_value, flat.ci_low, flat.ci_high) == (1.0, 0.0, 0.0)
    apart = welch_test(MeanStats.from_samples([3.0, 3.0]), MeanStats.from_samples([2.0] * 3))
    assert (apart.p_value, apart.diff) == (0.0, 1.0)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        assert math.isnan(sst.ttest_ind([2.0, 2.0], [2.0, 2.0, 2.0], equal_var=False).pvalue)


@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40),
       st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=40))
def test_welch_properties(a: list[float], b: list[float]) -> None:
    r95 = welch_test(MeanStats.from_samples(a), MeanStats.from_samples(b), 0.95)
    r99 = welch_test(MeanStats.from_samples(a), MeanStats.from_samples(b), 0.99)
    assert 0.0 <= r95.p_value <= 1.0
    tol = 1e-9 * (1 + abs(r95.diff))
    assert r99.ci_low <= r95.ci_low + tol and r95.ci_low <= r95.diff + tol
    assert r95.diff <= r95.ci_high + tol and r95.ci_high <= r99.ci_high + tol


# --- sample size ------------------------------------------------------------------------------

PLANS = [
    (0.05, 0.01, 0.05, 0.8, True), (0.05, -0.01, 0.05, 0.8, True), (0.1, 0.02, 0.05, 0.8, True),
    (0.5, 0.05, 0.05, 0.9, True), (0.01, 0.002, 0.05, 0.8, True), (0.2, 0.1, 0.05, 0.8, True),
    (0.9, 0.05, 0.01, 0.8, True), (0.3, -0.1, 0.1, 0.95, True), (0.05, 0.01, 0.01, 0.9, True),
    (0.05, 0.01, 0.05, 0.8, False), (0.4, 0.4, 0.05, 0.8, True), (0.02, 0.01, 0.05, 0.5, False),
]


@pytest.mark.parametrize(("baseline", "mde", "alpha", "power", "two_sided"), PLANS)
def test_sample_size_matches_statsmodels(baseline: float, mde: float, alpha: float,
                                         power: float, two_sided: bool) -> None:
    h = abs(proportion_effectsize(baseline + mde, baseline))
    want = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=1,
                                        alternative="two-sided" if two_sided else "larger")
    assert sample_size_per_arm(baseline, mde, alpha, power, two_sided) == math.ceil(want)


def test_sample_size_plan_example_and_validation() -> None:
    assert sample_size_per_arm(0.05, 0.01) == 8143
    for bad in [(0.05, 0.0), (0.0, 0.01), (0.95, 0.06)]:
        with pytest.raises(ValueError):
            sample_size_per_arm(*bad)


# --- the assembled comparison ----------------------------------------------------------------

CONTRACT_KEYS = {"diff", "rel_diff", "p_value", "ci95", "ci99", "sequential_p_value",
                 "latency_p_value", "verdict"}


@pytest.mark.parametrize("case", PAIRS)
def test_comparison_assembles_the_oracles(case: tuple[int, int, int, int]) -> None:
    x_t, n_t, x_c, n_c = case
    got = compare_proportions(*case, latency_p_value=0.3)
    doc = got.to_json()
    assert doc.keys() >= CONTRACT_KEYS
    assert {"rel_diff_ci95", "test_used", "fisher_p_value"} <= doc.keys()
    assert doc["diff"] == pytest.approx(x_t / n_t - x_c / n_c)
    assert doc["ci95"] == pytest.approx(list(newcombe_interval(*case, 0.95)))
    assert doc["ci99"] == pytest.approx(list(newcombe_interval(*case, 0.99)))
    assert doc["latency_p_value"] == 0.3
    pooled = (x_t + x_c) / (n_t + n_c)
    if pooled in (0.0, 1.0):
        assert got.z_p_value == 1.0
    else:
        assert got.z_p_value == pytest.approx(proportions_ztest([x_t, x_c], [n_t, n_c])[1],
                                              rel=1e-9, abs=1e-300)
    want = got.fisher_p_value if is_small_sample(*case) else got.z_p_value
    assert doc["p_value"] == want
    assert 0.0 <= got.p_value <= 1.0 and 0.0 <= got.sequential_p_value <= 1.0


def test_comparison_empty_matches_contract_example() -> None:
    doc = compare_proportions(0, 0, 0, 0).to_json()
    assert {k: doc[k] for k in CONTRACT_KEYS} == {
        "diff": 0.0, "rel_diff": 0.0, "p_value": 1.0, "ci95": [0.0, 0.0], "ci99": [0.0, 0.0],
        "sequential_p_value": 1.0, "latency_p_value": 1.0, "verdict": "inconclusive"}


def test_verdict_rules() -> None:
    better = compare_proportions(1300, 10_000, 1000, 10_000)
    assert better.verdict == "treatment better" and better.sequential_p_value < 0.05
    assert compare_proportions(1000, 10_000, 1300, 10_000).verdict == "treatment worse"
    # Significant at a single fixed look, not under continuous monitoring.
    peek = compare_proportions(1090, 10_000, 1000, 10_000)
    assert peek.p_value < 0.05 < peek.sequential_p_value
    assert peek.verdict == "inconclusive"
    assert compare_proportions(1090, 10_000, 1000, 10_000, decide_on="fixed").verdict == (
        "treatment better")
    assert compare_proportions(1300, 10_000, 1000, 10_000, srm_flagged=True).verdict == (
        "inconclusive")
    # The running minimum carries over through the persisted state.
    carried = compare_proportions(1000, 10_000, 1000, 10_000, state=better.sequential_state)
    assert carried.sequential_p_value == better.sequential_p_value
