"""Statistics splitway reports: pure functions over counts and samples.

Formulas and their oracles are in the project's statistics reference; every function here
is checked against scipy/statsmodels in ``tests/test_stats.py``. Critical values always come
from ``norm.ppf`` (never the literal 1.96).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _st


def z_crit(confidence: float) -> float:
    """Two-sided critical value: ``norm.ppf(1 - (1 - confidence) / 2)``."""
    return float(_st.norm.ppf(1 - (1 - confidence) / 2))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k/n`` (``(0, 0)`` when ``n == 0``).

    Oracle: ``statsmodels.stats.proportion.proportion_confint(k, n, method="wilson")``."""
    if n <= 0:
        return (0.0, 0.0)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..n={n}")
    z = z_crit(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At k = 0 (k = n) the bound is exactly 0 (1); float rounding must not move it.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return (lo, hi)


@dataclass(frozen=True, slots=True)
class PairedLatency:
    """Paired latency difference (shadow − primary) over requests both sides served."""

    n: int
    median_diff_ms: float
    shadow_slower_fraction: float
    p_value: float  # two-sided Wilcoxon signed-rank; 1.0 when it cannot be computed


def paired_latency(diffs_ms: Sequence[float]) -> PairedLatency:
    """Summarise paired differences; Wilcoxon signed-rank (``scipy.stats.wilcoxon``,
    zero differences dropped as Wilcoxon's original method) tests a median of zero."""
    n = len(diffs_ms)
    if n == 0:
        return PairedLatency(0, 0.0, 0.0, 1.0)
    ordered = sorted(diffs_ms)
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    slower = sum(1 for d in diffs_ms if d > 0) / n
    nonzero = [d for d in diffs_ms if d != 0]
    p = 1.0
    if len(nonzero) >= 10:
        p = float(_st.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedLatency(n, median, slower, p)


def binomial_above(k: int, n: int, limit: float) -> float:
    """One-sided exact binomial p-value that the true rate exceeds ``limit``.

    Oracle: ``scipy.stats.binomtest(k, n, limit, alternative="greater")``."""
    if n == 0:
        return 1.0
    return float(_st.binomtest(k, n, limit, alternative="greater").pvalue)


def two_proportion_z(x_t: int, n_t: int, x_c: int, n_c: int,
                     alternative: str = "two-sided") -> float:
    """Pooled two-proportion z-test p-value (treatment ``t`` vs control ``c``);
    ``alternative="larger"`` tests ``p_t > p_c``. 1.0 when the pooled rate is 0 or 1.

    Oracle: ``statsmodels.stats.proportion.proportions_ztest([x_t, x_c], [n_t, n_c])``."""
    if n_t == 0 or n_c == 0:
        return 1.0
    pooled = (x_t + x_c) / (n_t + n_c)
    if pooled in (0.0, 1.0):
        return 1.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    z = (x_t / n_t - x_c / n_c) / se
    if alternative == "larger":
        return float(_st.norm.sf(z))
    return float(2 * _st.norm.sf(abs(z)))


def mann_whitney_counts(values: Sequence[float], a: Sequence[int], b: Sequence[int],
                        alternative: str = "two-sided") -> float:
    """Mann–Whitney U p-value from two histograms over the same sorted ``values``.

    Exact midranks over the bucket counts (ties are whole buckets), tie-corrected variance,
    continuity correction — the asymptotic test of
    ``scipy.stats.mannwhitneyu(x, y, method="asymptotic", use_continuity=True)`` where ``x``
    and ``y`` repeat each value by its count. ``alternative="greater"``: ``a`` tends larger.
    """
    n1, n2 = sum(a), sum(b)
    n = n1 + n2
    if n1 == 0 or n2 == 0 or n < 2:
        return 1.0
    below = 0
    rank_sum = 0.0
    tie_term = 0.0
    for ca, cb in zip(a, b, strict=True):
        t = ca + cb
        if t:
            rank_sum += ca * (below + (t + 1) / 2)
            tie_term += t**3 - t
            below += t
    u1 = rank_sum - n1 * (n1 + 1) / 2
    u2 = n1 * n2 - u1
    if alternative == "greater":
        u, factor = u1, 1
    elif alternative == "less":
        u, factor = u2, 1
    else:
        u, factor = max(u1, u2), 2
    sd = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    if sd == 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / sd
    return float(min(1.0, max(0.0, factor * _st.norm.sf(z))))


def samples_for_quantile(q: float, confidence: float = 0.95) -> int:
    """Fewest samples for a two-sided order-statistic interval of the ``q`` quantile:
    the largest sample must exceed it with probability ≥ 1 − α/2, i.e.
    ``n ≥ ln(α/2) / ln(q)`` (368 for the p99 at 95 %)."""
    alpha = 1 - confidence
    return math.ceil(math.log(alpha / 2) / math.log(q))


def diff_above_margin(x_t: int, n_t: int, x_c: int, n_c: int, margin: float) -> float:
    """One-sided Wald p-value that ``p_t − p_c > margin`` (unpooled variance).

    Oracle: ``statsmodels.stats.proportion.test_proportions_2indep(x_t, n_t, x_c, n_c,
    value=margin, method="wald", compare="diff", alternative="larger")``."""
    if n_t == 0 or n_c == 0:
        return 1.0
    pt, pc = x_t / n_t, x_c / n_c
    var = pt * (1 - pt) / n_t + pc * (1 - pc) / n_c
    if var == 0:
        return 0.0 if pt - pc > margin else 1.0
    return float(_st.norm.sf((pt - pc - margin) / math.sqrt(var)))
