"""The experiment report (contract §9), computed from merged counts (pure).

Per variant: requests, successes, rate, latency quantiles (HdrHistogram's convention), and
each custom metric's mean. Against the control, for every other variant:
:func:`proxy.abstats.compare_proportions` (pooled z-test or Fisher for small counts,
Newcombe intervals, relative difference, always-valid p-value from its persisted running
minimum, verdict on it), Mann–Whitney on the latency histograms, and Welch's t for every
custom metric both arms have. The sample-ratio check compares the units of every segment
with the weights that were in force then; a flagged SRM turns every verdict inconclusive.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

from proxy.abstats import (
    MeanStats,
    SequentialState,
    compare_proportions,
    expected_counts_over_time,
    srm_check,
    welch_test,
)
from proxy.experiment.book import Moments, Totals
from proxy.observe import buckets_ms, quantiles_ms
from proxy.stats import mann_whitney_counts

if TYPE_CHECKING:
    from proxy.runtime import RouteRuntime


def latency_p_value(a: HdrHistogram, b: HdrHistogram) -> float:
    """Two-sided Mann–Whitney U over two histograms' buckets."""
    ba, bb = buckets_ms(a), buckets_ms(b)
    values = sorted({v for v, _ in ba} | {v for v, _ in bb})
    ca, cb = [0] * len(values), [0] * len(values)
    for v, c in ba:
        ca[bisect_left(values, v)] += c
    for v, c in bb:
        cb[bisect_left(values, v)] += c
    return mann_whitney_counts(values, ca, cb)


def _mean(m: Moments) -> dict[str, float | int | None]:
    sd = math.sqrt(m.variance) if m.n > 1 else None
    return {"n": m.n, "mean": m.mean, "sd": sd}


def srm(totals: Totals, variants: list[str]) -> dict[str, Any]:
    """The ``srm`` object: units per variant against the weights in force over time.

    Every variant is checked, those whose weight was 0 in every segment included: a unit
    there (expected 0, observed > 0) is flagged at once with ``p_value`` 0 and ``chi2``
    null, whatever the counts. An arm at 0 in some segments only has a positive expected
    count and takes part in the chi-square as usual: a request is recorded when it ends,
    so one chosen before a weight change may land in the next segment.
    """
    windows = []
    observed = [0] * len(variants)
    for seg in totals.segments:
        n = sum(seg.units.values())
        windows.append((n, [seg.weights.get(v, 0.0) for v in variants]))
        for i, v in enumerate(variants):
            observed[i] += seg.units.get(v, 0)
    if not windows or sum(observed) == 0:
        return {"p_value": 1.0, "flagged": False, "observed": observed, "expected": observed}
    expected = expected_counts_over_time(windows)
    # Every arm goes to the check, those at weight 0 throughout included: a unit on an arm
    # expected to get none is a certain mismatch (srm_check flags it with p = 0).
    result = srm_check(observed, expected)
    return {**result.to_json(), "observed": dict(zip(variants, observed, strict=True)),
            "expected": dict(zip(variants, expected, strict=True))}


def build_report(meta: dict[str, Any], totals: Totals, rr: RouteRuntime,
                 ) -> tuple[dict[str, Any], dict[str, float]]:
    """The report, and the new running minima of the sequential p-values to persist."""
    control = meta["control"]
    names = list(rr.config.variants)
    arms = totals.arms
    variants: dict[str, Any] = {}
    for v in names:
        arm = arms.get(v)
        if arm is None:
            variants[v] = {"requests": 0, "successes": 0, "rate": 0.0,
                           "latency_ms": {"p50": 0.0, "p95": 0.0, "p99": 0.0}, "metrics": {}}
            continue
        variants[v] = {"requests": arm.requests, "successes": arm.successes,
                       "rate": arm.successes / arm.requests if arm.requests else 0.0,
                       "latency_ms": quantiles_ms(arm.latency, (50, 95, 99)),
                       "metrics": {k: _mean(m) for k, m in arm.metrics.items()}}
    ratio = srm(totals, names)
    comparisons: dict[str, Any] = {}
    seq: dict[str, float] = {}
    c_arm = arms.get(control)
    for v in names:
        if v == control:
            continue
        t_arm = arms.get(v)
        x_t, n_t = (t_arm.successes, t_arm.requests) if t_arm else (0, 0)
        x_c, n_c = (c_arm.successes, c_arm.requests) if c_arm else (0, 0)
        lat = latency_p_value(t_arm.latency, c_arm.latency) if t_arm and c_arm else 1.0
        cmp = compare_proportions(x_t, n_t, x_c, n_c,
                                  state=SequentialState(meta.get("seq", {}).get(v, 1.0)),
                                  latency_p_value=lat, srm_flagged=ratio["flagged"])
        seq[v] = cmp.sequential_state.p_value
        doc: dict[str, Any] = dict(cmp.to_json())
        metrics: dict[str, Any] = {}
        doc["metrics"] = metrics
        if t_arm and c_arm:
            for name in sorted(set(t_arm.metrics) & set(c_arm.metrics)):
                mt, mc = t_arm.metrics[name], c_arm.metrics[name]
                if mt.n > 1 and mc.n > 1:
                    w = welch_test(MeanStats(mt.n, mt.mean, mt.m2),
                                   MeanStats(mc.n, mc.mean, mc.m2))
                    metrics[name] = {"diff": w.diff, "p_value": w.p_value,
                                            "ci95": [w.ci_low, w.ci_high]}
        comparisons[v] = doc
    report = {"name": meta["name"], "route": meta["route"], "control": control,
              "state": meta["state"], "winner": meta.get("winner"),
              "variants": variants, "comparisons": comparisons, "srm": ratio}
    return report, seq


def series_point(t: float, report: dict[str, Any]) -> dict[str, Any]:
    """One point of the cumulative-difference plot."""
    return {"t": t, "diffs": {v: [c["diff"], *c["ci95"]]
                              for v, c in report["comparisons"].items()}}
