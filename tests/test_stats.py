"""proxy.stats against statsmodels/scipy oracles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sst
from statsmodels.stats.proportion import proportion_confint

from proxy.stats import paired_latency, wilson_interval, z_crit

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
