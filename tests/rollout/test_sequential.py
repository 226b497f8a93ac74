"""The anytime-valid tests against independent computations: closed forms against
numerical integration and scipy.stats.binom, the martingale identity, seeded validity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import beta as beta_dist
from scipy.stats import binom

from proxy.rollout.sequential import (
    RATIO_GRID,
    fold_ratio,
    log_e_above,
    log_e_below,
    log_e_ratio,
    mean_cs,
    prior,
)


def quad_e(k: int, n: int, p0: float, above: bool) -> float:
    """The mixture by numerical integration: ∫ L(p)/L(p0) π(p) dp over the truncated prior."""
    a, b = prior(p0)
    lo, hi = (p0, 1.0) if above else (0.0, p0)
    mass = beta_dist.sf(p0, a, b) if above else beta_dist.cdf(p0, a, b)

    def f(p: float) -> float:
        return float(math.exp(k * math.log(p / p0) + (n - k) * math.log((1 - p) / (1 - p0)))
                     * beta_dist.pdf(p, a, b) / mass)
    value, _ = integrate.quad(f, lo, hi, limit=200, points=[min(max(k / n, lo), hi)]
                              if n else None)
    return value


@pytest.mark.parametrize(("k", "n", "p0"), [(0, 0, 0.01), (0, 100, 0.01), (3, 100, 0.01),
                                            (12, 300, 0.01), (5, 40, 0.2), (30, 60, 0.5),
                                            (2, 500, 0.05), (40, 50, 0.9)])
def test_mixtures_match_numerical_integration(k: int, n: int, p0: float) -> None:
    assert math.exp(log_e_above(k, n, p0)) == pytest.approx(quad_e(k, n, p0, True), rel=1e-6)
    assert math.exp(log_e_below(k, n, p0)) == pytest.approx(quad_e(k, n, p0, False),
                                                            rel=1e-6)


@pytest.mark.parametrize(("n", "p0"), [(1, 0.01), (50, 0.01), (300, 0.01), (80, 0.3)])
def test_mixture_is_a_martingale_at_the_limit_and_shrinks_inside(n: int, p0: float) -> None:
    # E[M_n] = 1 exactly at p = p0 (Fubini), and < 1 on the null side.
    ks = np.arange(n + 1)
    up = np.array([log_e_above(int(k), n, p0) for k in ks])
    down = np.array([log_e_below(int(k), n, p0) for k in ks])

    def mean(log_e: np.ndarray, p: float) -> float:
        return float(np.exp(binom.logpmf(ks, n, p) + log_e).sum())
    assert mean(up, p0) == pytest.approx(1.0, rel=1e-9)
    assert mean(down, p0) == pytest.approx(1.0, rel=1e-9)
    assert mean(up, p0 * 0.8) < 1.0
    assert mean(down, min(p0 * 1.2, 0.99)) < 1.0


def test_ratio_batch_is_the_binomial_likelihood_ratio_mixture() -> None:
    theta, n_c, n_b, x_c, x_b = 2.0, 300, 9700, 7, 90
    state = fold_ratio((), theta, n_c, x_c, n_b, x_b)
    rho = [g * theta * n_c / (g * theta * n_c + n_b) for g in RATIO_GRID]
    r0 = theta * n_c / (theta * n_c + n_b)
    expected = [binom.pmf(x_c, x_c + x_b, r) / binom.pmf(x_c, x_c + x_b, r0) for r in rho]
    assert [math.exp(v) for v in state] == pytest.approx(expected, rel=1e-9)
    assert math.exp(log_e_ratio(state)) == pytest.approx(float(np.mean(expected)), rel=1e-9)
    # E[e] = 1 at φ = θ: the batch is a martingale increment.
    total = x_c + x_b
    xs = np.arange(total + 1)
    e = [math.exp(log_e_ratio(fold_ratio((), theta, n_c, int(x), n_b, total - int(x))))
         for x in xs]
    assert float((binom.pmf(xs, total, r0) * e).sum()) == pytest.approx(1.0, rel=1e-9)


def test_ratio_batches_multiply_and_empty_batches_change_nothing() -> None:
    one = fold_ratio((), 1.5, 100, 2, 1000, 9)
    two = fold_ratio(one, 1.5, 50, 4, 400, 1)
    assert two == pytest.approx([a + b for a, b in zip(one, fold_ratio((), 1.5, 50, 4, 400, 1),
                                                       strict=True)])
    assert fold_ratio(two, 1.5, 100, 0, 1000, 0) == two
    assert fold_ratio(two, 1.5, 0, 0, 1000, 5) == two
    assert log_e_ratio(()) == 0.0
    with pytest.raises(ValueError):
        fold_ratio((), 1.5, 10, 11, 10, 0)


def test_limits_outside_zero_one_are_refused() -> None:
    for p0 in (0.0, 1.0):
        with pytest.raises(ValueError):
            log_e_above(0, 1, p0)
    with pytest.raises(ValueError):
        log_e_below(3, 2, 0.1)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), k=st.integers(0, 3000), p0=st.floats(0.001, 0.5))
def test_monotone_in_errors_and_more_clean_requests_never_hurt(n: int, k: int,
                                                               p0: float) -> None:
    k = min(k, n - 1)
    # One more error (same n): more evidence of "above", less of "below".
    assert log_e_above(k + 1, n, p0) >= log_e_above(k, n, p0)
    assert log_e_below(k + 1, n, p0) <= log_e_below(k, n, p0)
    # One more clean request: never closer to a rollback, never further from a pass.
    assert log_e_above(k, n + 1, p0) <= log_e_above(k, n, p0)
    assert log_e_below(k, n + 1, p0) >= log_e_below(k, n, p0)


def test_absolute_test_false_alarms_stay_under_alpha_over_many_looks() -> None:
    """Type-I error over 60 looks at the limit itself: ≤ α (a per-look binomial test at
    α = 0.05 fails about half of these runs)."""
    rng = np.random.default_rng(11)
    alpha, p0, runs, looks, batch = 0.05, 0.02, 1500, 60, 50
    errors = rng.binomial(batch, p0, size=(runs, looks)).cumsum(axis=1)
    bar = math.log(1 / alpha)
    crossed = 0
    for row in errors:
        n = 0
        for k in row:
            n += batch
            if log_e_above(int(k), n, p0) >= bar:
                crossed += 1
                break
    assert crossed / runs <= alpha


def test_ratio_test_false_alarms_stay_under_alpha_at_the_boundary() -> None:
    rng = np.random.default_rng(12)
    alpha, theta, runs, looks = 0.05, 2.0, 1500, 40
    n_c, n_b, rate_b = 200, 1800, 0.02
    bar = math.log(1 / alpha)
    crossed = 0
    for _ in range(runs):
        state: tuple[float, ...] = ()
        x_b = rng.poisson(n_b * rate_b, looks)
        x_c = rng.poisson(n_c * rate_b * theta, looks)  # exactly at φ = θ
        for xc, xb in zip(x_c, x_b, strict=True):
            state = fold_ratio(state, theta, n_c, int(xc), n_b, int(xb))
            if log_e_ratio(state) >= bar:
                crossed += 1
                break
    assert crossed / runs <= alpha


def test_mean_cs_formula_and_coverage() -> None:
    lo, hi = mean_cs(0.3, 0.01, 0.02, 0.05)
    half = math.sqrt(0.01 * 0.03 / 0.02 * (math.log(3.0) - 2 * math.log(0.05)))
    assert (lo, hi) == pytest.approx((0.3 - half, 0.3 + half))
    assert mean_cs(0.3, 0.0, 0.02, 0.05) == (-math.inf, math.inf)
    rng = np.random.default_rng(5)
    missed = 0
    for _ in range(300):
        x = rng.normal(1.0, 2.0, 2000)
        n = np.arange(1, 2001)
        mean = x.cumsum() / n
        for t in range(49, 2000, 50):
            var = float(x[: t + 1].var(ddof=1)) / (t + 1)
            lo, hi = mean_cs(float(mean[t]) - 1.0, var, 4.0 / 100, 0.05)
            if not lo <= 0.0 <= hi:
                missed += 1
                break
    assert missed / 300 <= 0.05
