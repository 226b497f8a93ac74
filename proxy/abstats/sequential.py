"""Always-valid p-values and confidence sequences: the normal-mixture SPRT (mSPRT).

Johari, Koomen, Pekelis & Walsh, "Always valid inference" (2017/2022); GrowthBook's
sequential testing is the same method with the parametrisation of ``τ²`` below. With
``V = p̂_t(1 − p̂_t)/n_t + p̂_c(1 − p̂_c)/n_c``, ``d = p̂_t − p̂_c`` and a normal mixing
prior of variance ``τ²`` on ``d``::

    Λ_n = sqrt(V/(V + τ²)) · exp(τ² d² / (2V(V + τ²)))
    p_n = min(p_{n−1}, 1/Λ_n),  p_0 = 1
    CS_n = d ± sqrt(V(V + τ²)/τ² · (ln((V + τ²)/V) − 2 ln α))

GrowthBook: ``n = n_t + n_c``, ``s² = n·V``, ``τ² = ρ²·s²``,
``ρ = sqrt((−2 ln α + ln(−2 ln α + 1))/N*)``; ``N*`` (default 5000 units in both arms) is
the sample size at which one tends to decide. ``0 ∉ CS_n`` exactly when ``1/Λ_n < α``.

Guard ("events"): an arm's events are the smaller of its successes and its failures,
``min(x, n − x)``; while either arm has fewer than :data:`MIN_EVENTS` (5) — the usual
``np ≥ 5`` and ``n(1 − p) ≥ 5`` condition for the normal approximation, which also implies
``V > 0`` — the look reports ``1/Λ = 1`` and the trivial sequence ``[−1, 1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Fewest events (``min(successes, failures)``) per arm before the test says anything.
MIN_EVENTS = 5
#: GrowthBook's default tuning: the total sample size (both arms) where decisions happen.
DEFAULT_N_STAR = 5000.0


def sequential_rho(alpha: float, n_star: float = DEFAULT_N_STAR) -> float:
    """GrowthBook's mixing scale ``ρ = sqrt((−2 ln α + ln(−2 ln α + 1))/N*)``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha} outside (0, 1)")
    if not n_star > 0:
        raise ValueError(f"n_star={n_star} must be positive")
    m = -2 * math.log(alpha)
    return math.sqrt((m + math.log(m + 1)) / n_star)


def _moments(x_t: ArrayLike, n_t: ArrayLike, x_c: ArrayLike, n_c: ArrayLike,
             alpha: float, n_star: float
             ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64],
                        NDArray[np.bool_]]:
    """``(d, V, τ², usable)`` element-wise; ``usable`` is the events guard."""
    xt, nt, xc, nc = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                           for a in (x_t, n_t, x_c, n_c)))
    ok = ((np.minimum(xt, nt - xt) >= MIN_EVENTS)
          & (np.minimum(xc, nc - xc) >= MIN_EVENTS))
    rho2 = sequential_rho(alpha, n_star) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        pt = np.where(ok, xt / nt, 0.5)
        pc = np.where(ok, xc / nc, 0.5)
        v = pt * (1 - pt) / nt + pc * (1 - pc) / nc
    ok = ok & (v > 0)
    v = np.where(ok, v, 1.0)
    d = pt - pc
    return d, v, rho2 * (nt + nc) * v, ok


def msprt_p_values(x_t: ArrayLike, n_t: ArrayLike, x_c: ArrayLike, n_c: ArrayLike,
                   alpha: float = 0.05, n_star: float = DEFAULT_N_STAR) -> NDArray[np.float64]:
    """Per-look ``min(1, 1/Λ_n)``, element-wise over broadcast arrays of counts (1 where the
    events guard fails). The always-valid p-value is its running minimum over looks,
    ``np.minimum.accumulate(..., axis=-1)`` (see :func:`always_valid_p_values`)."""
    d, v, tau2, ok = _moments(x_t, n_t, x_c, n_c, alpha, n_star)
    log_lam = 0.5 * np.log(v / (v + tau2)) + tau2 * d * d / (2 * v * (v + tau2))
    p = np.minimum(1.0, np.exp(-log_lam))
    return np.where(ok, p, 1.0)


def always_valid_p_values(x_t: ArrayLike, n_t: ArrayLike, x_c: ArrayLike, n_c: ArrayLike,
                          alpha: float = 0.05,
                          n_star: float = DEFAULT_N_STAR) -> NDArray[np.float64]:
    """Always-valid p-values ``p_n = min(p_{n−1}, 1/Λ_n)`` over the looks on the last axis
    (cumulative counts per look, e.g. shape ``(experiments, looks)``)."""
    return np.minimum.accumulate(msprt_p_values(x_t, n_t, x_c, n_c, alpha, n_star), axis=-1)


def confidence_sequence(x_t: int, n_t: int, x_c: int, n_c: int, alpha: float = 0.05,
                        n_star: float = DEFAULT_N_STAR) -> tuple[float, float]:
    """The look's ``1 − α`` confidence sequence for ``d``:
    ``d ± sqrt(V(V + τ²)/τ² · (ln((V + τ²)/V) − 2 ln α))``, clipped to ``[−1, 1]``;
    ``[−1, 1]`` while the events guard fails."""
    d_a, v_a, tau2_a, ok_a = _moments(x_t, n_t, x_c, n_c, alpha, n_star)
    if not bool(ok_a):
        return (-1.0, 1.0)
    d, v, tau2 = float(d_a), float(v_a), float(tau2_a)
    half = math.sqrt(v * (v + tau2) / tau2 * (math.log((v + tau2) / v) - 2 * math.log(alpha)))
    return (max(-1.0, d - half), min(1.0, d + half))


@dataclass(frozen=True, slots=True)
class SequentialState:
    """What must persist between looks: the running-minimum always-valid p-value."""

    p_value: float = 1.0


def sequential_update(state: SequentialState, x_t: int, n_t: int, x_c: int, n_c: int,
                      alpha: float = 0.05, n_star: float = DEFAULT_N_STAR
                      ) -> tuple[SequentialState, float, float, float]:
    """One look at cumulative counts: ``p_n = min(p_{n−1}, 1/Λ_n)``.

    Returns ``(new_state, p_n, cs_low, cs_high)``: ``p_n`` is the always-valid p-value
    (the running minimum, equal to ``new_state.p_value``), ``(cs_low, cs_high)`` this look's
    confidence sequence (:func:`confidence_sequence`). Pure: the caller persists the state.
    """
    for x, n in ((x_t, n_t), (x_c, n_c)):
        if n < 0 or not 0 <= x <= max(n, 0):
            raise ValueError(f"count {x} outside 0..n={n}")
    p_look = float(msprt_p_values(x_t, n_t, x_c, n_c, alpha, n_star))
    p = min(state.p_value, p_look)
    low, high = confidence_sequence(x_t, n_t, x_c, n_c, alpha, n_star)
    return SequentialState(p), p, low, high
