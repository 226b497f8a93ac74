"""Strict JSON for admin request bodies: no NaN/Infinity, no number that overflows, a
bounded depth, UTF-8 only without a byte order mark, unique keys — each refused with a
message naming the problem, never a RecursionError."""

from __future__ import annotations

import re

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
    (b"\xff\xfe{", "not UTF-8 (bad byte at offset 0)"),
    ('{"a": 1, "a": 2}', "duplicate key 'a' in an object"),
    ('{"w": {"a": 1}, "x": [{"k": 1, "j": 2, "k": 3}]}', "duplicate key 'k' in an object"),
    (b"\xef\xbb\xbf{}", "starts with a byte order mark"),
    ("\ufeff{}", "starts with a byte order mark"),
    ('{"a": 1}'.encode("utf-16"), "not UTF-8"),  # json.loads would guess UTF-16
    ('{"a": "x\\ud800"}', "\\ud800 is a lone surrogate"),
    ('{"\\udfff": 1}', "\\udfff is a lone surrogate"),
    ('[["\\ude00\\ud83d"]]', "\\ude00 is a lone surrogate"),  # a pair in the wrong order
])
def test_refused_with_the_problem_named(text: str | bytes, problem: str) -> None:
    with pytest.raises(JsonInputError, match=re.escape(problem)):
        strict_json.loads(text)


def test_accepted() -> None:
    assert strict_json.loads(nested(64)) is not None
    assert strict_json.loads('{"w": 1e308, "x": -0.0, "y": 12345678901234567890}') == {
        "w": 1e308, "x": -0.0, "y": 12345678901234567890}
    assert strict_json.depth(1) == 0 and strict_json.depth([]) == 1
    assert strict_json.depth({"a": [1, {"b": []}]}) == 4
    # a key may repeat across objects, only not within one; UTF-8 text is fine
    assert strict_json.loads('{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}') == {
        "a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}
    assert strict_json.loads('{"é": "ü"}'.encode()) == {"é": "ü"}
    assert strict_json.loads('["\\ud83d\\ude00", "\\\\ud800"]') == ["\U0001f600", "\\ud800"]
