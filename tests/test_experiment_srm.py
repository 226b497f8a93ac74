"""The report's sample-ratio check counts arms at weight 0: a unit on an arm expected to
get none is a mismatch (pure table tests, then the real service on a real SQLite store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scipy import stats as st

from control.store import open_store
from proxy.app import ProxyState
from proxy.config_load import parse_settings
from proxy.experiment.book import ExperimentBook, Segment, Totals
from proxy.experiment.report import srm
from proxy.experiment.service import NS_COUNTS, ExperimentService

ABC = ["a", "b", "c"]
HALF_ZERO = {"a": 50.0, "b": 50.0, "c": 0.0}

# (case, segments as (weights, units), flagged, p-value: "zero" (p = 0, chi2 null), "live"
# (the chi-square of a and b alone) or "all" (the chi-square of the three arms))
CASES: list[tuple[str, list[tuple[dict[str, float], dict[str, int]]], bool, str]] = [
    ("weight 0 throughout, no unit: the live arms alone decide",
     [(HALF_ZERO, {"a": 500, "b": 480})], False, "live"),
    ("weight 0 throughout, exactly one unit: flagged",
     [(HALF_ZERO, {"a": 500, "b": 480, "c": 1})], True, "zero"),
    ("one unit flags whatever the counts (under the 8-unit guard)",
     [(HALF_ZERO, {"a": 1, "c": 1})], True, "zero"),
    ("a weight-0 variant missing from the segment's weights is weight 0 too",
     [({"a": 50.0, "b": 50.0}, {"a": 500, "b": 480, "c": 1})], True, "zero"),
    ("weight 0 in every segment of a ramp, one unit: flagged",
     [({"a": 90.0, "b": 10.0, "c": 0.0}, {"a": 90, "b": 10}),
      (HALF_ZERO, {"a": 50, "b": 50, "c": 1})], True, "zero"),
    ("weight 0 in one segment only: a straggler there is counted, not flagged",
     [({"a": 40.0, "b": 40.0, "c": 20.0}, {"a": 400, "b": 400, "c": 200}),
      (HALF_ZERO, {"a": 500, "b": 500, "c": 1})], False, "all"),
]


def totals(segments: list[tuple[dict[str, float], dict[str, int]]]) -> Totals:
    return Totals({}, tuple(Segment(dict(w), dict(u)) for w, u in segments))


@pytest.mark.parametrize(("segments", "flagged", "p_rule"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_srm_counts_arms_at_weight_zero(
        segments: list[tuple[dict[str, float], dict[str, int]]], flagged: bool,
        p_rule: str) -> None:
    got = srm(totals(segments), ABC)
    observed = {v: sum(u.get(v, 0) for _, u in segments) for v in ABC}
    assert got["observed"] == observed
    assert got["flagged"] is flagged
    if p_rule == "zero":
        assert got["p_value"] == 0.0 and got["chi2"] is None  # infinite statistic
    elif p_rule == "live":  # the zero arm adds neither a term nor a degree of freedom
        oracle = st.chisquare([observed["a"], observed["b"]])
        assert got["p_value"] == pytest.approx(oracle.pvalue, rel=1e-12)
        assert got["expected"]["c"] == 0.0
    else:  # "all": a positive expected count: the plain three-arm chi-square
        expected = list(got["expected"].values())
        oracle = st.chisquare(list(observed.values()), expected)
        assert got["p_value"] == pytest.approx(oracle.pvalue, rel=1e-12)
        assert got["expected"]["c"] > 0


def test_weight_zero_arms_were_dropped_before() -> None:
    """The case the report used to miss: it still matches the old answer without the unit,
    and flips with it."""
    clean = srm(totals([(HALF_ZERO, {"a": 500, "b": 480})]), ABC)
    stray = srm(totals([(HALF_ZERO, {"a": 500, "b": 480, "c": 1})]), ABC)
    assert (clean["flagged"], stray["flagged"]) == (False, True)
    assert stray["expected"] == {"a": 490.5, "b": 490.5, "c": 0.0}


def settings(tmp_path: Path) -> dict[str, Any]:
    return {"version": 1, "state": f"sqlite:///{tmp_path}/s.db",
            "backends": {"b": {"endpoints": ["http://127.0.0.1:9"]}},
            "routes": [{"name": "r", "variants": {"a": "b", "c": "b"},
                        "split": {"weights": {"a": 100, "c": 0}},
                        "experiment": {"name": "ab", "control": "a"}}]}


async def test_report_flags_units_on_a_weight_zero_variant(tmp_path: Path) -> None:
    """One process's contribution puts a unit on the variant the route gives weight 0 (a
    process with a stale split table, say): the report merged from the store flags it."""
    weights = {"a": 100.0, "c": 0.0}
    state = ProxyState(parse_settings(settings(tmp_path)))
    async with open_store(state.settings.state) as store:
        state.store, state.audit = store, store.audit
        await state.start_runtime()
        svc = ExperimentService(state)
        await svc.sync()
        for host, stray in ((0, 0), (1, 1)):
            book = ExperimentBook(("a", "c"))
            for i in range(400):
                book.record("a", i % 2 == 0, 0.01, weights=lambda: weights, weights_key=1,
                            unit=None, fallback=False)
            for _ in range(stray):
                book.record("c", True, 0.01, weights=lambda: weights, weights_key=1,
                            unit=None, fallback=False)
            await store.kv_put(NS_COUNTS, f"ab/host:{host}", book.to_json())
        report = await svc.look("ab")
    assert report["srm"]["observed"] == {"a": 800, "c": 1}
    assert report["srm"]["expected"] == {"a": 801.0, "c": 0.0}
    assert report["srm"]["flagged"] is True and report["srm"]["p_value"] == 0.0
