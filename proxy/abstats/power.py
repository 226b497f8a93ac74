"""Sample size for a two-proportion experiment (``splitway experiment plan``)."""

from __future__ import annotations

import math

from scipy import optimize as _opt
from scipy import stats as _st


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's effect size for proportions: ``h = 2·asin(sqrt(p1)) − 2·asin(sqrt(p2))``
    (statsmodels' ``proportion_effectsize(p1, p2)``)."""
    return 2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p2))


def sample_size_per_arm(baseline: float, mde: float, alpha: float = 0.05,
                        power: float = 0.8, two_sided: bool = True) -> int:
    """Units per arm (equal split) to detect an *absolute* change ``mde`` from ``baseline``.

    Arcsine (Cohen's h) normal approximation: with ``h = |cohens_h(baseline + mde,
    baseline)|`` and ``δ(n) = h·sqrt(n/2)``, solve for the smallest ``n`` with

        power = Φ(δ − z_{1−α/2}) + Φ(−δ − z_{1−α/2})   (two-sided)
        power = Φ(δ − z_{1−α})                          (one-sided)

    The closed form ``n = 2·((z_{1−α/2} + z_power)/h)²`` ignores the far tail; the root
    includes it. Oracle: ``ceil(NormalIndPower().solve_power(effect_size=
    proportion_effectsize(baseline + mde, baseline), alpha=alpha, power=power, ratio=1))``.
    """
    p2 = baseline + mde
    if not (0 < baseline < 1 and 0 < p2 < 1):
        raise ValueError("baseline and baseline + mde must lie in (0, 1)")
    if mde == 0:
        raise ValueError("mde must be non-zero")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError("alpha and power must lie in (0, 1)")
    h = abs(cohens_h(p2, baseline))
    z_a = float(_st.norm.ppf(1 - alpha / 2)) if two_sided else float(_st.norm.ppf(1 - alpha))
    z_b = float(_st.norm.ppf(power))
    closed = 2 * ((z_a + z_b) / h) ** 2
    if not two_sided:
        return max(1, math.ceil(closed))

    def gap(n: float) -> float:
        delta = h * math.sqrt(n / 2)
        return float(_st.norm.cdf(delta - z_a) + _st.norm.cdf(-delta - z_a)) - power

    low = 1e-9
    if gap(low) >= 0:  # power ≤ α: any size will do
        return 1
    # The far tail only adds power, so the root lies below the one-tail answer.
    root = float(_opt.brentq(gap, low, closed, xtol=1e-10, rtol=1e-14))
    return max(1, math.ceil(root))
