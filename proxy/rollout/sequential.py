"""Anytime-valid tests for rollout judgement (pure): e-processes whose false-alarm
probability stays under their level however often they are looked at.

Each function returns the **logarithm of an e-value**: a nonnegative supermartingale under
its null hypothesis, started at 1, so by Ville's inequality the probability that it EVER
reaches ``1/α`` is at most ``α`` (``log_e >= log(1/α)`` is the rejection rule at every
look). Looking every half second or once a minute spends the same ``α``.

* :func:`log_e_above` / :func:`log_e_below` — Bernoulli rate against a limit ``p0``:
  the beta-binomial mixture of likelihood ratios ``L(p)/L(p0)`` over a Beta prior truncated
  to the alternative side (``p > p0``, resp. ``p < p0``). For every ``p'`` on the null side
  each ``L(p)/L(p0)`` is a supermartingale (its one-step mean is
  ``p'·p/p0 + (1−p')(1−p)/(1−p0) <= 1``), hence so is the mixture. Closed form with
  ``betaln`` and the regularised incomplete beta function; exact for any count.
* :func:`fold_ratio` / :func:`log_e_ratio` — candidate versus baseline error counts
  (Lindon, Sanden & Shirikian, KDD 2022): given a batch's ``E`` errors, the candidate's
  share is ``Binomial(E, ρ(φ))`` with ``ρ(φ) = φ·n_c/(φ·n_c + n_b)`` and ``φ`` the ratio of
  the error rates. Null ``φ <= θ``; a uniform mixture over a fixed grid of ``φ > θ``,
  folded batch by batch (the state is one log-likelihood ratio per grid point). Exact for
  Poisson counts; for Bernoulli requests at equal rates the candidate's share is
  hypergeometric, which is dominated in convex order by the binomial (Hoeffding 1963), so
  the test stays conservative; at unequal small rates it is a close approximation.
* :func:`mean_cs` — a confidence sequence for a difference of means from the normal
  mixture (the mSPRT of Johari et al.): approximate, because the variance is estimated.

The quantile confidence sequences built on :func:`log_e_above` / :func:`log_e_below` are in
:mod:`proxy.rollout.quantiles`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import betainc, betaincc, betaln, logsumexp

#: The mixture grid of the ratio test, as multiples of θ (log-spaced from 1.25θ to 20θ).
RATIO_GRID: tuple[float, ...] = tuple(float(x) for x in np.geomspace(1.25, 20.0, 9))


def prior(p0: float) -> tuple[float, float]:
    """The Beta(a, b) prior of the mixtures around ``p0``: mean ``p0`` and one
    pseudo-observation on the rarer side (Beta(1, 99) at 1 %, Beta(99, 1) at 0.99)."""
    c = 1.0 / min(p0, 1.0 - p0)
    return c * p0, c * (1.0 - p0)


#: Below this an incomplete beta from scipy has lost relative precision (a subnormal, or
#: boost's series far in a tail): enough to break monotonicity between neighbouring counts.
TINY = 1e-100


def _log(x: float) -> float:
    # A tail mass under TINY is read as 0: the e-value in that direction becomes 0 instead
    # of a badly rounded small number. That never changes a decision: mass that small on
    # one side of the limit means the observed rate lies on the other side, where the
    # likelihood ratio against the limit is at most 1 (no evidence either way: log e <= 0,
    # below every threshold log(1/alpha)).
    return math.log(x) if x >= TINY else -math.inf


def _check(k: int, n: int, p0: float) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"{k} events of {n} trials")
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"limit {p0!r} is not strictly between 0 and 1")


def log_e_above(k: int, n: int, p0: float) -> float:
    """Log e-value of "the rate is above ``p0``" after ``k`` events in ``n`` trials
    (null: rate <= ``p0``)."""
    _check(k, n, p0)
    a, b = prior(p0)
    num = betaln(a + k, b + n - k) + _log(float(betaincc(a + k, b + n - k, p0)))
    den = betaln(a, b) + _log(float(betaincc(a, b, p0)))
    return float(num - den - k * math.log(p0) - (n - k) * math.log1p(-p0))


def log_e_below(k: int, n: int, p0: float) -> float:
    """Log e-value of "the rate is below ``p0``" after ``k`` events in ``n`` trials
    (null: rate >= ``p0``)."""
    _check(k, n, p0)
    a, b = prior(p0)
    num = betaln(a + k, b + n - k) + _log(float(betainc(a + k, b + n - k, p0)))
    den = betaln(a, b) + _log(float(betainc(a, b, p0)))
    return float(num - den - k * math.log(p0) - (n - k) * math.log1p(-p0))


def _share(phi: float, n_c: int, n_b: int) -> float:
    return phi * n_c / (phi * n_c + n_b)


def fold_ratio(loglr: Sequence[float], theta: float, n_c: int, x_c: int, n_b: int,
               x_b: int) -> tuple[float, ...]:
    """Fold one batch (candidate ``x_c`` errors of ``n_c`` requests, baseline ``x_b`` of
    ``n_b``) into the per-grid-point log-likelihood ratios of :data:`RATIO_GRID`
    (``()`` is the empty state). A batch with no error or an arm without requests carries
    no information about ``φ`` and changes nothing."""
    state = tuple(loglr) if loglr else (0.0,) * len(RATIO_GRID)
    if not (0 <= x_c <= n_c and 0 <= x_b <= n_b) or theta <= 0:
        raise ValueError("a batch has more errors than requests, or θ <= 0")
    if n_c == 0 or n_b == 0 or x_c + x_b == 0:
        return state
    r0 = _share(theta, n_c, n_b)
    out = []
    for log_lr, g in zip(state, RATIO_GRID, strict=True):
        r = _share(theta * g, n_c, n_b)
        out.append(log_lr + x_c * math.log(r / r0) + x_b * math.log((1 - r) / (1 - r0)))
    return tuple(out)


def log_e_ratio(loglr: Sequence[float]) -> float:
    """Log e-value of "the candidate's error rate is above θ × the baseline's"."""
    if not loglr:
        return 0.0
    return float(logsumexp(np.asarray(loglr)) - math.log(len(loglr)))


def mean_cs(diff: float, var: float, tau2: float, alpha: float) -> tuple[float, float]:
    """A (1 − ``alpha``) confidence sequence for a difference of means whose estimate
    ``diff`` has variance ``var``, from a normal mixture of variance ``tau2``:
    ``diff ± sqrt(V(V+τ²)/τ² · (ln((V+τ²)/V) − 2 ln α))``. Infinite while ``var`` is 0
    with no spread to estimate (callers decide exact cases)."""
    if var <= 0 or tau2 <= 0:
        return -math.inf, math.inf
    half = math.sqrt(var * (var + tau2) / tau2
                     * (math.log((var + tau2) / var) - 2 * math.log(alpha)))
    return diff - half, diff + half
