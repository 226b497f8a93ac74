"""Continuous metrics from sufficient statistics: Welch's t-test and interval.

The data plane keeps ``(n, mean, M2)`` per arm (Welford's running update, Chan's merge), so
it never stores samples; ``M2 = Σ (x − mean)²`` and the sample variance is ``M2/(n − 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from scipy import stats as _st


@dataclass(frozen=True, slots=True)
class MeanStats:
    """Sufficient statistics of one arm: count, mean, and ``M2 = Σ (x − mean)²``."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def variance(self) -> float:
        """Sample variance ``M2/(n − 1)`` (Bessel); 0.0 below two observations."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    def add(self, x: float) -> MeanStats:
        """Welford's update: ``δ = x − mean``, ``mean' = mean + δ/n'``,
        ``M2' = M2 + δ·(x − mean')``."""
        n = self.n + 1
        delta = x - self.mean
        mean = self.mean + delta / n
        return MeanStats(n, mean, self.m2 + delta * (x - mean))

    def merge(self, other: MeanStats) -> MeanStats:
        """Chan et al.'s parallel combination: ``δ = mean_b − mean_a``,
        ``mean = mean_a + δ·n_b/n``, ``M2 = M2_a + M2_b + δ²·n_a·n_b/n``."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return MeanStats(n, self.mean + delta * other.n / n,
                         self.m2 + other.m2 + delta * delta * self.n * other.n / n)

    @classmethod
    def from_moments(cls, n: int, mean: float, variance: float) -> MeanStats:
        """From a count, a mean and a sample variance: ``M2 = variance·(n − 1)``."""
        return cls(n, mean, variance * (n - 1) if n > 1 else 0.0)

    @classmethod
    def from_samples(cls, xs: Iterable[float]) -> MeanStats:
        """Fold :meth:`add` over the samples."""
        acc = cls()
        for x in xs:
            acc = acc.add(float(x))
        return acc


@dataclass(frozen=True, slots=True)
class WelchResult:
    """Welch's test of ``mean_t − mean_c``: estimate, t, Welch–Satterthwaite df,
    two-sided p-value and the interval at ``confidence``."""

    diff: float
    t: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float


def welch_test(t: MeanStats, c: MeanStats, confidence: float = 0.95) -> WelchResult:
    """Welch's unequal-variance t-test and interval from sufficient statistics::

        SE² = s_t²/n_t + s_c²/n_c,   t = (mean_t − mean_c)/SE
        df = SE⁴ / ((s_t²/n_t)²/(n_t − 1) + (s_c²/n_c)²/(n_c − 1))
        p = 2·t_df.sf(|t|),          CI = diff ± t_df.ppf(1 − α/2)·SE

    Oracles: ``scipy.stats.ttest_ind(a, b, equal_var=False)`` and statsmodels'
    ``CompareMeans(DescrStatsW(a), DescrStatsW(b)).tconfint_diff(usevar="unequal")``.
    Degenerate cases: an arm with fewer than two observations gives ``p = 1`` and the
    interval ``(−∞, ∞)``; both variances 0 gives ``p = 1`` (equal means) or ``p = 0``
    and the point interval ``(diff, diff)``.
    """
    diff = t.mean - c.mean
    if t.n < 2 or c.n < 2:
        return WelchResult(diff, 0.0, 0.0, 1.0, -math.inf, math.inf)
    vt, vc = t.variance / t.n, c.variance / c.n
    se2 = vt + vc
    df = float(t.n + c.n - 2)
    if se2 <= 0:
        if diff == 0:
            return WelchResult(diff, 0.0, df, 1.0, diff, diff)
        return WelchResult(diff, math.copysign(math.inf, diff), df, 0.0, diff, diff)
    se = math.sqrt(se2)
    a, b = vt / se2, vc / se2  # scaled so that tiny variances cannot underflow
    df = 1 / (a * a / (t.n - 1) + b * b / (c.n - 1))
    stat = diff / se
    p = float(min(1.0, 2 * _st.t.sf(abs(stat), df)))
    q = float(_st.t.ppf(1 - (1 - confidence) / 2, df))
    return WelchResult(diff, stat, df, p, diff - q * se, diff + q * se)
