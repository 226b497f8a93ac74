"""Strict JSON for admin request bodies: no NaN/Infinity, no number that overflows, a
bounded depth — each refused with a message naming the problem, never a RecursionError."""

from __future__ import annotations

import pytest

from control import strict_json
from control.strict_json import JsonInputError


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(("text", "problem"), [
    ('{"w": NaN}', "NaN is not a JSON number"),
    ('{"w": Infinity}', "Infinity is not a JSON number"),
    ('{"w": -Infinity}', "-Infinity is not a JSON number"),
    ('{"w": 1e400}', "1e400 is out of range"),
    ('{"w": -1.5e999}', "-1.5e999 is out of range"),
    (nested(65), "nested deeper than 64 levels"),
    (nested(100_000), "nested deeper than 64 levels"),
    ('{"a": ' * 65 + "1" + "}" * 65, "nested deeper than 64 levels"),
    ("{not json", "Expecting property name"),
    (b"\xff\xfe{", "can't decode"),
])
def test_refused_with_the_problem_named(text: str | bytes, problem: str) -> None:
    with pytest.raises(JsonInputError, match=problem.replace("[", r"\[")):
        strict_json.loads(text)


def test_accepted() -> None:
    assert strict_json.loads(nested(64)) is not None
    assert strict_json.loads('{"w": 1e308, "x": -0.0, "y": 12345678901234567890}') == {
        "w": 1e308, "x": -0.0, "y": 12345678901234567890}
    assert strict_json.depth(1) == 0 and strict_json.depth([]) == 1
    assert strict_json.depth({"a": [1, {"b": []}]}) == 4
