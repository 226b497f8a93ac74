"""Two independent proportions: Newcombe's interval, relative difference, small counts.

Notation (statistics reference): treatment ``t``, control ``c``, ``p̂ = x/n``,
``d = p̂_t − p̂_c``. Critical values come from ``norm.ppf`` via :func:`proxy.stats.z_crit`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as _st

from proxy.stats import wilson_interval, z_crit

#: Fisher's exact test replaces the z-test when an expected 2×2 cell count is below this.
SMALL_EXPECTED_COUNT = 5.0


def _check(x: int, n: int) -> None:
    if n < 0 or not 0 <= x <= max(n, 0):
        raise ValueError(f"count {x} outside 0..n={n}")


def newcombe_interval(x_t: int, n_t: int, x_c: int, n_c: int,
                      confidence: float = 0.95) -> tuple[float, float]:
    """Newcombe hybrid score interval for ``d = p̂_t − p̂_c`` (Newcombe 1998, method 10).

    With Wilson limits ``(l_t, u_t)`` and ``(l_c, u_c)`` at the same confidence::

        L = d − sqrt((p̂_t − l_t)² + (u_c − p̂_c)²)
        U = d + sqrt((u_t − p̂_t)² + (p̂_c − l_c)²)

    ``(0, 0)`` while an arm is empty (no data: the neutral value of contract §9).
    Oracle: ``statsmodels.stats.proportion.confint_proportions_2indep(x_t, n_t, x_c, n_c,
    method="newcomb", alpha=1 - confidence)``; 56/70 vs 48/80 gives (0.0524, 0.3339) at 95 %.
    """
    _check(x_t, n_t)
    _check(x_c, n_c)
    if n_t == 0 or n_c == 0:
        return (0.0, 0.0)
    p_t, p_c = x_t / n_t, x_c / n_c
    l_t, u_t = wilson_interval(x_t, n_t, confidence)
    l_c, u_c = wilson_interval(x_c, n_c, confidence)
    d = p_t - p_c
    low = d - math.hypot(p_t - l_t, u_c - p_c)
    high = d + math.hypot(u_t - p_t, p_c - l_c)
    return (max(-1.0, low), min(1.0, high))


@dataclass(frozen=True, slots=True)
class RelativeDiff:
    """Relative difference ``p̂_t/p̂_c − 1`` and its interval; ``None`` where undefined."""

    estimate: float | None
    low: float | None
    high: float | None
    method: str  # "katz-log", "katz-log-adjusted-upper", "undefined" or "no-data"


def relative_difference(x_t: int, n_t: int, x_c: int, n_c: int,
                        confidence: float = 0.95) -> RelativeDiff:
    """Relative difference ``RR − 1`` with ``RR = p̂_t/p̂_c`` and the Katz log interval.

    Katz et al. (1978) log interval for the risk ratio, shifted by −1::

        ln RR ± z · sqrt(1/x_t − 1/n_t + 1/x_c − 1/n_c),   z = norm.ppf(1 − α/2)

    Oracle: ``confint_proportions_2indep(..., compare="ratio", method="log")``.

    Zero counts, where ``ln RR`` is undefined:

    * ``x_t = 0 < x_c``: the estimate is −1 and so is the lower limit (the ratio cannot be
      below 0); the upper limit is the log-adjusted one (0.5 added to ``x`` and ``n`` of both
      arms; oracle ``method="log-adjusted"``).
    * ``x_c = 0`` (``p̂_c = 0``): the ratio is undefined, every field is ``None``.
    * an empty arm: no data, estimate and limits 0 (contract §9's neutral values).

    At ``p̂_t = p̂_c = 1`` the Katz variance is 0 and the interval collapses to (0, 0).
    """
    _check(x_t, n_t)
    _check(x_c, n_c)
    if n_t == 0 or n_c == 0:
        return RelativeDiff(0.0, 0.0, 0.0, "no-data")
    if x_c == 0:
        return RelativeDiff(None, None, None, "undefined")
    z = z_crit(confidence)
    if x_t == 0:
        a_t, m_t, a_c, m_c = x_t + 0.5, n_t + 0.5, x_c + 0.5, n_c + 0.5
        log_rr = math.log((a_t / m_t) / (a_c / m_c))
        half = z * math.sqrt(1 / a_t - 1 / m_t + 1 / a_c - 1 / m_c)
        return RelativeDiff(-1.0, -1.0, math.expm1(log_rr + half), "katz-log-adjusted-upper")
    log_rr = math.log((x_t / n_t) / (x_c / n_c))
    var = max(0.0, 1 / x_t - 1 / n_t + 1 / x_c - 1 / n_c)
    half = z * math.sqrt(var)
    return RelativeDiff(math.expm1(log_rr), math.expm1(log_rr - half),
                        math.expm1(log_rr + half), "katz-log")


def expected_cell_counts(x_t: int, n_t: int, x_c: int, n_c: int) -> tuple[float, ...]:
    """Expected counts of the 2×2 table under independence: ``E = row total · column total
    / N`` for (t success, t failure, c success, c failure); all 0 when ``N = 0``."""
    n = n_t + n_c
    if n == 0:
        return (0.0, 0.0, 0.0, 0.0)
    s = x_t + x_c
    f = n - s
    return (n_t * s / n, n_t * f / n, n_c * s / n, n_c * f / n)


def is_small_sample(x_t: int, n_t: int, x_c: int, n_c: int) -> bool:
    """True when an expected cell count is below 5 (Cochran's rule): the normal
    approximation is not trusted and Fisher's exact test is reported instead."""
    return min(expected_cell_counts(x_t, n_t, x_c, n_c)) < SMALL_EXPECTED_COUNT


def fisher_p_value(x_t: int, n_t: int, x_c: int, n_c: int) -> float:
    """Two-sided Fisher exact p-value of ``[[x_t, n_t − x_t], [x_c, n_c − x_c]]``
    (``scipy.stats.fisher_exact``); 1.0 while an arm is empty."""
    _check(x_t, n_t)
    _check(x_c, n_c)
    if n_t == 0 or n_c == 0:
        return 1.0
    res = _st.fisher_exact([[x_t, n_t - x_t], [x_c, n_c - x_c]], alternative="two-sided")
    return float(min(1.0, res.pvalue))
