"""Experiment bookkeeping, success rules, report pieces and the plot (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.config import Success
from proxy.experiment.book import ExperimentBook, Moments, Segment, Totals, merge
from proxy.experiment.plot import render_svg
from proxy.experiment.report import srm
from proxy.experiment.success import SuccessRule


@given(st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=50),
       st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=50))
def test_moments_merge_equals_one_pass(a: list[float], b: list[float]) -> None:
    ma, mb, mall = Moments(), Moments(), Moments()
    for x in a:
        ma.add(x)
        mall.add(x)
    for x in b:
        mb.add(x)
        mall.add(x)
    merged = ma.merged(mb)
    assert merged.n == len(a) + len(b)
    if merged.n:
        assert merged.mean == pytest.approx(float(np.mean(a + b)), rel=1e-6, abs=1e-3)
    if merged.n > 1:
        assert merged.variance == pytest.approx(float(np.var(a + b, ddof=1)), rel=1e-6,
                                                abs=1e-3)


def test_contributions_merge_and_round_trip() -> None:
    w = {"a": 50.0, "b": 50.0}
    key = object()
    one, two = ExperimentBook(("a", "b")), ExperimentBook(("a", "b"))
    for i in range(10):
        one.record("a", i % 2 == 0, 0.01, weights=lambda: w, weights_key=key, unit=f"u{i}",
                   fallback=False)
        two.record("b", True, 0.02, weights=lambda: w, weights_key=key, unit=None,
                   fallback=False)
    # A key seen before is no new unit; a fallback is not a unit at all.
    one.record("a", True, 0.01, weights=lambda: w, weights_key=key, unit="u1", fallback=False)
    two.record("b", True, 0.02, weights=lambda: w, weights_key=key, unit=None, fallback=True)
    one.record_metric("a", "revenue", 3.0)
    totals = merge([one.to_json(), two.to_json()])
    assert totals.arms["a"].requests == 11 and totals.arms["a"].successes == 6
    assert totals.arms["b"].requests == 11 and totals.arms["b"].latency.get_total_count() == 11
    assert totals.arms["a"].metrics["revenue"].mean == 3.0
    units = {v: sum(s.units.get(v, 0) for s in totals.segments) for v in ("a", "b")}
    assert units == {"a": 10, "b": 10}


def test_segments_follow_weight_changes() -> None:
    book = ExperimentBook(("a", "b"))
    first, second = {"a": 90.0, "b": 10.0}, {"a": 50.0, "b": 50.0}
    book.record("a", True, 0.01, weights=lambda: first, weights_key=1, unit=None,
                fallback=False)
    book.record("b", True, 0.01, weights=lambda: first, weights_key=1, unit=None,
                fallback=False)
    book.record("b", True, 0.01, weights=lambda: second, weights_key=2, unit=None,
                fallback=False)
    assert [s.weights for s in book.segments] == [first, second]
    assert [s.units for s in book.segments] == [{"a": 1, "b": 1}, {"b": 1}]


def test_srm_flags_a_skewed_split_and_respects_ramps() -> None:
    skewed = Totals({}, (Segment({"a": 50, "b": 50}, {"a": 5600, "b": 4400}),))
    assert srm(skewed, ["a", "b"])["flagged"] is True
    fair = Totals({}, (Segment({"a": 50, "b": 50}, {"a": 5030, "b": 4970}),))
    assert srm(fair, ["a", "b"])["flagged"] is False
    # A ramp: 90/10 then 50/50. Against the final weights it would look skewed; against
    # the weights in force over time it is fine.
    ramp = Totals({}, (Segment({"a": 90, "b": 10}, {"a": 9000, "b": 1000}),
                       Segment({"a": 50, "b": 50}, {"a": 5000, "b": 5000})))
    result = srm(ramp, ["a", "b"])
    assert result["flagged"] is False
    assert result["expected"] == {"a": 14000.0, "b": 6000.0}


RULES = [
    (Success(status_below=500), 200, {}, None, True),
    (Success(status_below=500), 503, {}, None, False),
    (Success(status_below=300), 302, {}, None, False),
    (Success(header="x-outcome", equals="1"), 200, {"x-outcome": "1"}, None, True),
    (Success(header="x-outcome", equals="1"), 200, {"x-outcome": "0"}, None, False),
    (Success(header="x-outcome"), 200, {}, None, False),
    (Success(json_field="ok"), 200, {}, b'{"ok": true}', True),
    (Success(json_field="ok"), 200, {}, b'{"ok": false}', False),
    (Success(json_field="result.label", equals="cat"), 200, {}, b'{"result": {"label": "cat"}}',
     True),
    (Success(json_field="ok"), 200, {}, b"not json", False),
    (Success(json_field="ok"), 200, {}, None, False),  # body over the capture cap
]


@pytest.mark.parametrize(("cfg", "status", "headers", "body", "expected"), RULES)
def test_success_rules(cfg: Success, status: int, headers: dict[str, str],
                       body: bytes | None, expected: bool) -> None:
    assert SuccessRule.of(cfg).judge(status, headers, body) is expected


def test_plot_is_valid_svg_with_a_band_per_treatment() -> None:
    series = [{"t": 1000 + i, "diffs": {"b": [0.01 * i, 0.01 * i - 0.02, 0.01 * i + 0.02]}}
              for i in range(10)]
    root = ET.fromstring(render_svg("exp", "a", series))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert len(root.findall(f"{ns}polygon")) == 1 and len(root.findall(f"{ns}polyline")) == 1
    assert ET.fromstring(render_svg("exp", "a", [])).tag == f"{ns}svg"  # empty is fine
