"""The mixture SPRT (always-valid p-values) of proxy.abstats.sequential.

No library ships this test, so the oracles are independent derivations: the mixture
likelihood ratio by numerical integration over the normal prior, GrowthBook's closed form of
the confidence sequence's half-width, and seeded simulations (A/A error rate under
continuous peeking, power against a real effect).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate
from scipy import stats as sst

from proxy.abstats import (
    MIN_EVENTS,
    SequentialState,
    always_valid_p_values,
    confidence_sequence,
    msprt_p_values,
    sequential_rho,
    sequential_update,
)

FIXTURES = [
    (50, 1000, 50, 1000), (60, 1000, 50, 1000), (130, 1000, 100, 1000), (5, 100, 12, 100),
    (500, 5000, 560, 5000), (2600, 5000, 2500, 5000), (95, 100, 90, 100), (10, 40, 25, 60),
    (1300, 10_000, 1000, 10_000), (30, 200, 5, 50), (400, 2000, 90, 500),
]


def _v_tau2(case: tuple[int, int, int, int], alpha: float, n_star: float
            ) -> tuple[float, float, float]:
    x_t, n_t, x_c, n_c = case
    pt, pc = x_t / n_t, x_c / n_c
    v = pt * (1 - pt) / n_t + pc * (1 - pc) / n_c
    rho = math.sqrt((-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / n_star)
    return pt - pc, v, rho * rho * (n_t + n_c) * v


def test_rho_is_growthbooks() -> None:
    m = -2 * math.log(0.05)
    assert sequential_rho(0.05, 5000) == pytest.approx(math.sqrt((m + math.log(m + 1)) / 5000))
    for bad in [(0.0, 5000.0), (1.0, 5000.0), (0.05, 0.0)]:
        with pytest.raises(ValueError):
            sequential_rho(*bad)


@pytest.mark.parametrize("case", FIXTURES)
@pytest.mark.parametrize(("alpha", "n_star"), [(0.05, 5000.0), (0.01, 1000.0), (0.1, 20000.0)])
def test_mixture_ratio_matches_numerical_integration(case: tuple[int, int, int, int],
                                                     alpha: float, n_star: float) -> None:
    # Λ = ∫ N(d; θ, V)/N(d; 0, V) · N(θ; 0, τ²) dθ, integrated numerically.
    d, v, tau2 = _v_tau2(case, alpha, n_star)
    tau = math.sqrt(tau2)
    log_scale = d * d / (2 * v)  # keeps the integrand finite: exp(θd/V − θ²/2V − d²/2V)

    def integrand(theta: float) -> float:
        return math.exp(theta * d / v - theta * theta / (2 * v) - log_scale) * float(
            sst.norm.pdf(theta, 0.0, tau))

    peak = d * tau2 / (v + tau2)
    width = math.sqrt(v * tau2 / (v + tau2))
    scaled, _ = integrate.quad(integrand, peak - 12 * width, peak + 12 * width,
                               epsabs=0, epsrel=1e-11, limit=200)
    log_lambda = math.log(scaled) + log_scale
    want = min(1.0, math.exp(-log_lambda))
    got = float(msprt_p_values(*case, alpha=alpha, n_star=n_star))
    assert got == pytest.approx(want, rel=1e-7, abs=1e-300)


@pytest.mark.parametrize("case", FIXTURES)
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_confidence_sequence_matches_growthbook_halfwidth(case: tuple[int, int, int, int],
                                                          alpha: float) -> None:
    # gbstats: sqrt(s²)·sqrt(2(nρ² + 1)·ln(sqrt(nρ² + 1)/α)/(n²ρ²)), s² = n·V.
    d, v, _ = _v_tau2(case, alpha, 5000.0)
    n = case[1] + case[3]
    rho = sequential_rho(alpha, 5000.0)
    half = math.sqrt(n * v) * math.sqrt(
        2 * (n * rho**2 + 1) * math.log(math.sqrt(n * rho**2 + 1) / alpha) / (n**2 * rho**2))
    lo, hi = confidence_sequence(*case, alpha=alpha)
    assert (lo, hi) == pytest.approx((max(-1, d - half), min(1, d + half)), rel=1e-10)


@given(st.integers(20, 20_000), st.integers(20, 20_000), st.floats(0.01, 0.99),
       st.floats(-0.05, 0.05), st.sampled_from([0.01, 0.05, 0.1]))
def test_cs_excludes_zero_exactly_when_p_below_alpha(n_t: int, n_c: int, p: float,
                                                     shift: float, alpha: float) -> None:
    x_c = round(p * n_c)
    x_t = min(n_t, max(0, round((p + shift) * n_t)))
    lo, hi = confidence_sequence(x_t, n_t, x_c, n_c, alpha=alpha)
    p_look = float(msprt_p_values(x_t, n_t, x_c, n_c, alpha=alpha))
    assert 0.0 <= p_look <= 1.0 and -1 <= lo <= hi <= 1
    d = x_t / n_t - x_c / n_c
    assert lo <= d <= hi
    if abs(p_look - alpha) > 1e-9:
        assert (p_look < alpha) == (lo > 0 or hi < 0)


@pytest.mark.parametrize("case", [
    (4, 1000, 50, 1000),  # 4 successes
    (996, 1000, 50, 1000),  # 4 failures
    (0, 1000, 0, 1000),  # V = 0
    (1000, 1000, 1000, 1000),  # V = 0
    (0, 0, 50, 100),  # empty arm
    (30, 100, 4, 4),
])
def test_guard_reports_nothing_below_five_events(case: tuple[int, int, int, int]) -> None:
    state, p, lo, hi = sequential_update(SequentialState(0.2), *case)
    assert (state.p_value, p, lo, hi) == (0.2, 0.2, -1.0, 1.0)
    assert float(msprt_p_values(*case)) == 1.0
    x_t, n_t, x_c, n_c = case
    assert min(x_t, n_t - x_t, x_c, n_c - x_c) < MIN_EVENTS


def test_guard_opens_at_five_events() -> None:
    assert float(msprt_p_values(5, 10, 5, 10)) <= 1.0
    _, _, lo, hi = sequential_update(SequentialState(), 5, 2000, 5, 2000)
    assert -1.0 < lo < 0 < hi < 1.0
    with pytest.raises(ValueError):
        sequential_update(SequentialState(), 11, 10, 5, 10)


def test_update_keeps_the_running_minimum() -> None:
    s0 = SequentialState()
    assert s0.p_value == 1.0
    s1, p1, _, _ = sequential_update(s0, 1300, 10_000, 1000, 10_000)
    assert p1 == s1.p_value == float(msprt_p_values(1300, 10_000, 1000, 10_000)) < 0.05
    s2, p2, lo, hi = sequential_update(s1, 1000, 10_000, 1000, 10_000)
    assert p2 == p1 and s2 == s1  # the evidence already seen is not forgotten
    assert lo < 0 < hi  # ... though this look's sequence alone contains 0


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), min_size=1, max_size=30),
       st.floats(0.02, 0.5), st.floats(0.0, 0.2))
def test_sequential_p_is_valid_and_non_increasing(looks: list[tuple[int, int]],
                                                  base: float, lift: float) -> None:
    state = SequentialState()
    x_t = n_t = x_c = n_c = 0
    last = 1.0
    for add_t, add_c in looks:
        n_t, n_c = n_t + add_t, n_c + add_c
        x_t += round(add_t * min(1.0, base + lift))
        x_c += round(add_c * base)
        state, p, lo, hi = sequential_update(state, x_t, n_t, x_c, n_c)
        assert 0.0 <= p <= last <= 1.0
        assert p == state.p_value and lo <= hi
        last = p


def test_vectorised_path_equals_the_scalar_updates() -> None:
    rng = np.random.default_rng(3)
    n = np.arange(1, 11) * 100
    x_t = rng.binomial(100, 0.3, size=10).cumsum()
    x_c = rng.binomial(100, 0.25, size=10).cumsum()
    path = always_valid_p_values(x_t, n, x_c, n)
    state = SequentialState()
    for i in range(10):
        state, p, _, _ = sequential_update(state, int(x_t[i]), int(n[i]), int(x_c[i]), int(n[i]))
        assert p == pytest.approx(path[i], rel=1e-12)


# --- simulations ----------------------------------------------------------------------------

def _simulate(rate_t: float, rate_c: float, experiments: int, looks: int, per_look: int,
              seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x_t = rng.binomial(per_look, rate_t, size=(experiments, looks)).cumsum(axis=1)
    x_c = rng.binomial(per_look, rate_c, size=(experiments, looks)).cumsum(axis=1)
    n = per_look * np.arange(1, looks + 1)
    return x_t, np.broadcast_to(n, x_t.shape), x_c, np.broadcast_to(n, x_c.shape)


def _naive_z_p(x_t: np.ndarray, n_t: np.ndarray, x_c: np.ndarray, n_c: np.ndarray) -> np.ndarray:
    pooled = (x_t + x_c) / (n_t + n_c)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, (x_t / n_t - x_c / n_c) / se, 0.0)
    return np.asarray(2 * sst.norm.sf(np.abs(z)))


@pytest.mark.parametrize(("rate", "per_look", "seed"), [(0.1, 500, 11), (0.03, 250, 12),
                                                          (0.5, 1000, 13)])
def test_aa_false_positive_rate_under_continuous_peeking(rate: float, per_look: int,
                                                         seed: int) -> None:
    experiments, looks, alpha = 1000, 20, 0.05
    x_t, n_t, x_c, n_c = _simulate(rate, rate, experiments, looks, per_look, seed)
    sequential = always_valid_p_values(x_t, n_t, x_c, n_c, alpha=alpha)
    assert np.all(np.diff(sequential, axis=1) <= 0)
    seq_fpr = float((sequential[:, -1] < alpha).mean())
    naive_fpr = float((_naive_z_p(x_t, n_t, x_c, n_c) < alpha).any(axis=1).mean())
    assert seq_fpr <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / experiments)
    assert naive_fpr > 0.12


def test_sequential_test_detects_a_real_effect() -> None:
    # 13 % vs 10 %, 20 looks of 250 per arm: 5,000 per arm at the last look.
    x_t, n_t, x_c, n_c = _simulate(0.13, 0.10, 400, 20, 250, seed=21)
    sequential = always_valid_p_values(x_t, n_t, x_c, n_c)
    detected = sequential[:, -1] < 0.05
    assert detected.mean() > 0.8
    # ... and when it detects, it points the right way.
    d = x_t[:, -1] / n_t[:, -1] - x_c[:, -1] / n_c[:, -1]
    assert np.all(d[detected] > 0)
