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
