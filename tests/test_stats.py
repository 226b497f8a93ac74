"""proxy.stats against statsmodels/scipy oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sst
from statsmodels.stats.proportion import (
    proportion_confint,
    proportions_ztest,
)
from statsmodels.stats.proportion import test_proportions_2indep as sm_two_indep

from proxy.stats import (
    binomial_above,
    diff_above_margin,
    mann_whitney_counts,
    paired_latency,
    samples_for_quantile,
    two_proportion_z,
    wilson_interval,
    z_crit,
)

CASES = [(0, 10), (10, 10), (1, 1), (0, 1), (3, 7), (20, 100), (1, 1000), (999, 1000),
         (5000, 20000), (7, 1_000_000)]


@pytest.mark.parametrize(("k", "n"), CASES)
@pytest.mark.parametrize("conf", [0.95, 0.99, 0.9])
def test_wilson_matches_statsmodels(k: int, n: int, conf: float) -> None:
    lo, hi = proportion_confint(k, n, alpha=1 - conf, method="wilson")
    assert wilson_interval(k, n, conf) == pytest.approx((lo, hi), abs=1e-12)


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_brackets_the_rate(kn: tuple[int, int]) -> None:
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0 <= lo <= k / n <= hi <= 1


def test_wilson_empty_and_invalid() -> None:
    assert wilson_interval(0, 0) == (0.0, 0.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 3)


def test_critical_value_comes_from_the_normal_quantile() -> None:
    assert z_crit(0.95) == pytest.approx(sst.norm.ppf(0.975), abs=1e-15)
    assert z_crit(0.99) == pytest.approx(sst.norm.ppf(0.995), abs=1e-15)


def test_paired_latency_matches_scipy_wilcoxon() -> None:
    rng = np.random.default_rng(7)
    diffs = list(rng.normal(3.0, 5.0, 400))
    got = paired_latency(diffs)
    assert got.n == 400
    assert got.median_diff_ms == pytest.approx(float(np.median(diffs)))
    assert got.p_value == pytest.approx(sst.wilcoxon(diffs).pvalue)
    assert got.shadow_slower_fraction == pytest.approx(np.mean(np.array(diffs) > 0))
    assert paired_latency([]).p_value == 1.0
    assert paired_latency([0.0] * 50).p_value == 1.0  # all ties: nothing to test


@pytest.mark.parametrize(("k", "n", "limit"), [(0, 100, 0.01), (12, 1000, 0.01),
                                                (16, 1000, 0.01), (50, 100, 0.5),
                                                (1000, 1000, 0.01)])
def test_binomial_above_matches_scipy(k: int, n: int, limit: float) -> None:
    assert binomial_above(k, n, limit) == pytest.approx(
        sst.binomtest(k, n, limit, alternative="greater").pvalue, rel=1e-12)
    assert binomial_above(0, 0, 0.5) == 1.0


ZCASES = [(56, 70, 48, 80), (10, 1000, 10, 1000), (30, 1000, 10, 1000), (0, 50, 3, 50),
          (1, 2, 0, 2), (500, 10_000, 460, 10_000)]


@pytest.mark.parametrize(("xt", "nt", "xc", "nc"), ZCASES)
def test_two_proportion_z_matches_statsmodels(xt: int, nt: int, xc: int, nc: int) -> None:
    _, p = proportions_ztest([xt, xc], [nt, nc])
    assert two_proportion_z(xt, nt, xc, nc) == pytest.approx(p, rel=1e-9)
    _, p1 = proportions_ztest([xt, xc], [nt, nc], alternative="larger")
    assert two_proportion_z(xt, nt, xc, nc, "larger") == pytest.approx(p1, rel=1e-9)


def test_two_proportion_z_degenerate() -> None:
    assert two_proportion_z(0, 10, 0, 10) == 1.0
    assert two_proportion_z(10, 10, 10, 10) == 1.0
    assert two_proportion_z(0, 0, 1, 10) == 1.0


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=12),
       st.sampled_from(["two-sided", "greater", "less"]))
def test_mann_whitney_from_counts_matches_scipy(
    pairs: list[tuple[int, int]], alternative: str
) -> None:
    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    if sum(a) == 0 or sum(b) == 0 or len({v for v, (x, y) in enumerate(pairs) if x + y}) < 2:
        return  # scipy has nothing to test (or a zero variance)
    values = [float(v) for v in range(len(pairs))]
    x = np.repeat(values, a)
    y = np.repeat(values, b)
    want = sst.mannwhitneyu(x, y, method="asymptotic", use_continuity=True,
                            alternative=alternative).pvalue
    assert mann_whitney_counts(values, a, b, alternative) == pytest.approx(want, abs=1e-9)


def test_samples_for_quantile() -> None:
    assert samples_for_quantile(0.99) == 368
    assert samples_for_quantile(0.95) == 72
    assert samples_for_quantile(0.5) == 6


@pytest.mark.parametrize(("xt", "nt", "xc", "nc", "margin"),
                         [(160, 2000, 20, 20000, 0.05), (8, 1000, 100, 20000, 0.005),
                          (30, 100, 10, 100, 0.1)])
def test_diff_above_margin_matches_statsmodels(xt: int, nt: int, xc: int, nc: int,
                                               margin: float) -> None:
    want = sm_two_indep(xt, nt, xc, nc, value=margin, method="wald",
                                   compare="diff", alternative="larger").pvalue
    assert diff_above_margin(xt, nt, xc, nc, margin) == pytest.approx(want, rel=1e-9)
