"""One treatment against the control: everything contract §9's ``comparisons`` reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from proxy.abstats.proportions import (
    fisher_p_value,
    is_small_sample,
    newcombe_interval,
    relative_difference,
)
from proxy.abstats.sequential import DEFAULT_N_STAR, SequentialState, sequential_update
from proxy.stats import two_proportion_z

Verdict = Literal["treatment better", "treatment worse", "inconclusive"]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Treatment vs control on a success rate (see :func:`compare_proportions`)."""

    diff: float
    rel_diff: float | None
    rel_diff_ci95: tuple[float, float] | None
    p_value: float
    test_used: Literal["z_pooled", "fisher_exact"]
    z_p_value: float
    fisher_p_value: float | None
    ci95: tuple[float, float]
    ci99: tuple[float, float]
    sequential_p_value: float
    sequential_cs: tuple[float, float]
    latency_p_value: float | None
    verdict: Verdict
    sequential_state: SequentialState = field(default_factory=SequentialState)

    def to_json(self) -> dict[str, object]:
        """Contract §9 ``comparisons[variant]`` keys plus extras (``rel_diff_ci95``,
        ``test_used``, ``fisher_p_value``, ``z_p_value``, ``sequential_cs``). ``rel_diff``
        is ``null`` when the control rate is 0; a missing latency test reads 1.0."""
        return {
            "diff": self.diff,
            "rel_diff": self.rel_diff,
            "p_value": self.p_value,
            "ci95": list(self.ci95),
            "ci99": list(self.ci99),
            "sequential_p_value": self.sequential_p_value,
            "latency_p_value": 1.0 if self.latency_p_value is None else self.latency_p_value,
            "verdict": self.verdict,
            "rel_diff_ci95": None if self.rel_diff_ci95 is None else list(self.rel_diff_ci95),
            "test_used": self.test_used,
            "fisher_p_value": self.fisher_p_value,
            "z_p_value": self.z_p_value,
            "sequential_cs": list(self.sequential_cs),
        }


def compare_proportions(x_t: int, n_t: int, x_c: int, n_c: int, *,
                        state: SequentialState | None = None,
                        alpha: float = 0.05,
                        n_star: float = DEFAULT_N_STAR,
                        latency_p_value: float | None = None,
                        decide_on: Literal["sequential", "fixed"] = "sequential",
                        srm_flagged: bool = False) -> Comparison:
    """Assemble the comparison of treatment ``x_t/n_t`` against control ``x_c/n_c``.

    * ``diff = p̂_t − p̂_c``; ``rel_diff = p̂_t/p̂_c − 1`` with the Katz log interval
      (:func:`~proxy.abstats.proportions.relative_difference`).
    * ``p_value``: pooled two-proportion z-test (:func:`proxy.stats.two_proportion_z`,
      1 when the pooled rate is 0 or 1) — or, when an expected 2×2 cell count is under 5,
      Fisher's exact test; ``test_used`` says which.
    * ``ci95``/``ci99``: Newcombe hybrid score intervals.
    * ``sequential_p_value``: the always-valid mSPRT p-value, updated from ``state`` (the
      caller persists ``sequential_state``); ``sequential_cs`` the look's ``1 − α``
      confidence sequence.
    * ``verdict``: by default (``decide_on="sequential"``) "treatment better"/"treatment
      worse" when the sequential p-value is below ``alpha`` (0.05), by the sign of ``diff``,
      else "inconclusive" — valid however often the report is read. ``decide_on="fixed"``
      uses ``p_value`` instead (only sound at a pre-planned final look). With small counts
      Fisher's p must also be below ``alpha``; an SRM (``srm_flagged``) forces
      "inconclusive".
    """
    prev = state if state is not None else SequentialState()
    new_state, p_seq, cs_low, cs_high = sequential_update(prev, x_t, n_t, x_c, n_c,
                                                          alpha, n_star)
    empty = n_t == 0 or n_c == 0
    diff = 0.0 if empty else x_t / n_t - x_c / n_c
    rel = relative_difference(x_t, n_t, x_c, n_c, 0.95)
    rel_ci = None if rel.low is None or rel.high is None else (rel.low, rel.high)
    z_p = two_proportion_z(x_t, n_t, x_c, n_c)
    small = not empty and is_small_sample(x_t, n_t, x_c, n_c)
    fisher = fisher_p_value(x_t, n_t, x_c, n_c) if small else None
    p_value = fisher if fisher is not None else z_p
    deciding = p_seq if decide_on == "sequential" else p_value
    significant = deciding < alpha and (fisher is None or fisher < alpha)
    verdict: Verdict = "inconclusive"
    if significant and not srm_flagged and diff != 0:
        verdict = "treatment better" if diff > 0 else "treatment worse"
    return Comparison(
        diff=diff,
        rel_diff=rel.estimate,
        rel_diff_ci95=rel_ci,
        p_value=p_value,
        test_used="fisher_exact" if fisher is not None else "z_pooled",
        z_p_value=z_p,
        fisher_p_value=fisher,
        ci95=newcombe_interval(x_t, n_t, x_c, n_c, 0.95),
        ci99=newcombe_interval(x_t, n_t, x_c, n_c, 0.99),
        sequential_p_value=p_seq,
        sequential_cs=(cs_low, cs_high),
        latency_p_value=latency_p_value,
        verdict=verdict,
        sequential_state=new_state,
    )
