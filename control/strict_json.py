"""JSON from untrusted bytes: RFC 8259 only, with a bounded nesting depth.

Python's :func:`json.loads` accepts ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON), turns
``1e400`` into ``inf``, keeps the last of duplicate keys (``{"a": 1, "a": 2}`` — another
parser may keep the first, so two components could read one body two ways), guesses UTF-16
and UTF-32 from bytes and silently drops a UTF-8 byte order mark, and recurses once per
nesting level, so a deep enough document is a ``RecursionError`` rather than an answer.
:func:`loads` refuses all of these with a :class:`JsonInputError` whose message names the
problem: bytes must be UTF-8 (RFC 8259 §8.1) without a byte order mark (which the RFC lets
a parser refuse), object keys unique (§4 leaves duplicates' meaning undefined), and no
string may hold a lone surrogate (``"\\ud800"``: valid syntax, but no character, §8.2 —
it made storing the body fail with a 500).
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64


class JsonInputError(ValueError):
    """The bytes are not JSON this API accepts; the message says why."""


def _no_constant(name: str) -> Any:
    raise JsonInputError(f"{name} is not a JSON number; send a finite number or null")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError(f"the number {text[:40]} is out of range (not a finite double)")
    return value


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonInputError(f"duplicate key {key[:60]!r} in an object")
            seen.add(key)
    return obj


def _check_strings(value: Any) -> None:
    """Refuse a string or key holding a lone surrogate: ``"\\ud800"`` is valid JSON syntax
    but no Unicode character (RFC 8259 §8.2), and cannot be stored or encoded as UTF-8."""
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise JsonInputError(
                    f"\\u{ord(item[exc.start]):04x} is a lone surrogate escape, not a "
                    "character") from None


def depth(value: Any, limit: int | None = None) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` and ``{}`` are 1); stops early
    once past ``limit``. Iterative, so any depth is safe to measure."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if limit is not None and deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``data``; raise :class:`JsonInputError` for anything but finite, bounded JSON
    in UTF-8 with unique keys."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonInputError(f"not UTF-8 (bad byte at offset {exc.start})") from None
    if data.startswith("\ufeff"):
        raise JsonInputError("starts with a byte order mark (U+FEFF); send UTF-8 without one")
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite,
                           object_pairs_hook=_unique)
    except JsonInputError:
        raise
    except RecursionError:
        raise JsonInputError(f"nested deeper than {max_depth} levels") from None
    except ValueError as exc:
        raise JsonInputError(str(exc)) from None
    if depth(value, max_depth) > max_depth:
        raise JsonInputError(f"nested deeper than {max_depth} levels")
    if "\\u" in data or not data.isascii():  # else no string can hold a surrogate
        _check_strings(value)
    return value
