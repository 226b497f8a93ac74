"""Comparison of primary and shadow answers (table) and deterministic sampling."""

from __future__ import annotations

import json
import math

import pytest

from proxy.config import Compare
from proxy.mirror import sampled
from proxy.shadow_compare import Observed, compare


def j(doc: object, status: int = 200) -> Observed:
    return Observed(status, json.dumps(doc).encode(), "application/json")


P = Compare(json_path="predictions", rel_tol=1e-3, abs_tol=1e-6)
ROWS = [
    # (name, primary, shadow, cfg, matched or None, detail fragment)
    ("same status and prediction", j({"predictions": [0.5]}), j({"predictions": [0.5]}), P,
     True, ""),
    ("status differs", j({}), j({}, 500), P, False, "status 200 vs 500"),
    ("number within rel_tol", j({"predictions": [100.0]}), j({"predictions": [100.05]}), P,
     True, ""),
    ("number beyond rel_tol", j({"predictions": [0.5]}), j({"predictions": [0.51]}), P,
     False, "$.predictions[0]"),
    ("other fields ignored with json_path", j({"model": "a", "predictions": [1]}),
     j({"model": "b", "predictions": [1]}), P, True, ""),
    ("label must match exactly", j({"predictions": ["cat"]}), j({"predictions": ["dog"]}), P,
     False, "'cat'"),
    ("length differs", j({"predictions": [1, 2]}), j({"predictions": [1]}), P, False, "2 items"),
    ("path missing in shadow", j({"predictions": [1]}), j({"scores": [1]}), P, False,
     "missing in the shadow"),
    ("nested path", j({"out": {"labels": [{"p": 0.2}]}}), j({"out": {"labels": [{"p": 0.2}]}}),
     Compare(json_path="out.labels[0].p"), True, ""),
    ("bool is not a number", j({"predictions": [True]}), j({"predictions": [1]}), P, False, ""),
    ("whole document without json_path", j({"a": 1, "b": [1.0]}), j({"a": 1, "b": [1.0000001]}),
     Compare(), True, ""),
    ("keys differ", j({"a": 1}), j({"b": 1}), Compare(), False, "keys differ"),
    ("bytes equal", Observed(200, b"raw\x00bytes"), Observed(200, b"raw\x00bytes"), P, True, ""),
    ("bytes differ", Observed(200, b"abc"), Observed(200, b"abd"), P, False, "bodies differ"),
    ("abs_tol near zero", j({"predictions": [0.0]}), j({"predictions": [1e-9]}), P, True, ""),
    ("body not captured", Observed(200, None), j({}), P, None, ""),
]


@pytest.mark.parametrize(("name", "a", "b", "cfg", "matched", "detail"), ROWS,
                         ids=[r[0] for r in ROWS])
def test_compare(name: str, a: Observed, b: Observed, cfg: Compare, matched: bool | None,
                 detail: str) -> None:
    verdict = compare(a, b, cfg)
    if matched is None:
        assert verdict is None
        return
    assert verdict is not None and verdict.matched is matched
    assert detail in verdict.detail


def test_sampling_is_deterministic_and_proportional() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    picked = [sampled(i, 30) for i in ids]
    assert picked == [sampled(i, 30) for i in ids]
    n, p = len(ids), 0.3
    assert abs(sum(picked) - n * p) <= 4 * math.sqrt(n * p * (1 - p))
    assert all(sampled(i, 100) for i in ids[:100])
    assert not any(sampled(i, 0) for i in ids[:100])
