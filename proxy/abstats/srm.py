"""Sample ratio mismatch: chi-square goodness of fit of randomised units to the weights.

Count randomised units only (no pins, shadow copies or hash fallbacks; distinct keys for
hash splits). During a ramp, expected counts follow the weights in force over time
(:func:`expected_counts_over_time`), never the current weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _st

#: GrowthBook's default SRM threshold.
SRM_P_THRESHOLD = 0.001
#: No flag until every arm's expected count reaches this many units.
SRM_MIN_UNITS = 8.0


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Chi-square statistic, its p-value, and whether the split is flagged as an SRM."""

    chi2: float
    p_value: float
    flagged: bool

    def to_json(self) -> dict[str, object]:
        """Contract §9 ``srm`` object (plus ``chi2``; ``None`` when infinite)."""
        return {"p_value": self.p_value, "flagged": self.flagged,
                "chi2": self.chi2 if math.isfinite(self.chi2) else None}


def srm_check(observed: Sequence[int], expected: Sequence[float],
              threshold: float = SRM_P_THRESHOLD,
              min_units: float = SRM_MIN_UNITS) -> SrmResult:
    """Pearson goodness of fit: ``χ² = Σ (O_i − E_i)²/E_i``, ``E_i = N·w_i/Σw``,
    ``p = chi2.sf(χ², k − 1)`` over the ``k`` arms with positive weight.

    ``expected`` may be weights or expected counts (from :func:`expected_counts_over_time`):
    either is rescaled to the observed total ``N``. Flagged when ``p < threshold`` (0.001)
    and every arm's *expected* count is at least ``min_units`` (8). The guard is on expected
    counts, not observed ones, so a dead arm (0 observed of many expected) is still flagged.
    An arm of weight 0 that received units is a certain mismatch: ``χ² = ∞``, ``p = 0``,
    flagged whatever the counts.
    Oracle: ``scipy.stats.chisquare(observed, expected)``.
    """
    if len(observed) != len(expected):
        raise ValueError("observed and expected differ in length")
    if any(o < 0 for o in observed) or any(w < 0 or not math.isfinite(w) for w in expected):
        raise ValueError("counts and weights must be non-negative")
    arms = [(o, w) for o, w in zip(observed, expected, strict=True) if w > 0]
    stray = sum(o for o, w in zip(observed, expected, strict=True) if w == 0)
    n = sum(o for o, _ in arms)
    total_w = sum(w for _, w in arms)
    if stray:
        return SrmResult(math.inf, 0.0, True)
    if len(arms) < 2 or n == 0:
        return SrmResult(0.0, 1.0, False)
    exp = [n * w / total_w for _, w in arms]
    chi2 = math.fsum((o - e) ** 2 / e for (o, _), e in zip(arms, exp, strict=True))
    p = float(_st.chi2.sf(chi2, len(arms) - 1))
    return SrmResult(chi2, p, p < threshold and min(exp) >= min_units)


def expected_counts_over_time(
        windows: Sequence[tuple[int, Sequence[float]]]) -> list[float]:
    """Expected units per arm over windows of constant weights (a ramp):
    ``E_i = Σ_w n_w · w_{i,w} / Σ_j w_{j,w}``, where ``n_w`` randomised units arrived
    while weights ``w_{·,w}`` were in force. Windows with no units or all-zero weights
    add nothing."""
    if not windows:
        return []
    k = len(windows[0][1])
    totals = [0.0] * k
    for n_w, weights in windows:
        if len(weights) != k:
            raise ValueError("every window needs one weight per arm")
        if n_w < 0 or any(w < 0 for w in weights):
            raise ValueError("counts and weights must be non-negative")
        s = math.fsum(weights)
        if n_w == 0 or s == 0:
            continue
        for i, w in enumerate(weights):
            totals[i] += n_w * w / s
    return totals
