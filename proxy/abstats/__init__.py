"""Pure statistics of A/B experiments (contract §9), over counts and sufficient statistics.

Formulas, oracles and sources are in the project's statistics reference; each function's
docstring gives its formula. Runtime dependencies: numpy and scipy only. Tests check
everything against scipy/statsmodels (``tests/test_abstats.py``, ``tests/test_sequential.py``).
"""

from __future__ import annotations

from proxy.abstats.compare import Comparison, Verdict, compare_proportions
from proxy.abstats.means import MeanStats, WelchResult, welch_test
from proxy.abstats.power import cohens_h, sample_size_per_arm
from proxy.abstats.proportions import (
    SMALL_EXPECTED_COUNT,
    RelativeDiff,
    expected_cell_counts,
    fisher_p_value,
    is_small_sample,
    newcombe_interval,
    relative_difference,
)
from proxy.abstats.sequential import (
    DEFAULT_N_STAR,
    MIN_EVENTS,
    SequentialState,
    always_valid_p_values,
    confidence_sequence,
    msprt_p_values,
    sequential_rho,
    sequential_update,
)
from proxy.abstats.srm import (
    SRM_MIN_UNITS,
    SRM_P_THRESHOLD,
    SrmResult,
    expected_counts_over_time,
    srm_check,
)

__all__ = [
    "DEFAULT_N_STAR",
    "MIN_EVENTS",
    "SMALL_EXPECTED_COUNT",
    "SRM_MIN_UNITS",
    "SRM_P_THRESHOLD",
    "Comparison",
    "MeanStats",
    "RelativeDiff",
    "SequentialState",
    "SrmResult",
    "Verdict",
    "WelchResult",
    "always_valid_p_values",
    "cohens_h",
    "compare_proportions",
    "confidence_sequence",
    "expected_cell_counts",
    "expected_counts_over_time",
    "fisher_p_value",
    "is_small_sample",
    "msprt_p_values",
    "newcombe_interval",
    "relative_difference",
    "sample_size_per_arm",
    "sequential_rho",
    "sequential_update",
    "srm_check",
    "welch_test",
]
