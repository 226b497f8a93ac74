"""JSON from untrusted bytes: RFC 8259 numbers only, and a bounded nesting depth.

Python's :func:`json.loads` accepts ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON), turns
``1e400`` into ``inf``, and recurses once per nesting level, so a deep enough document is a
``RecursionError`` rather than an answer. :func:`loads` refuses all of these with a
:class:`JsonInputError` whose message names the problem.
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
    """Parse ``data``; raise :class:`JsonInputError` for anything but finite, bounded JSON."""
    try:
        value = json.loads(data, parse_constant=_no_constant, parse_float=_finite)
    except JsonInputError:
        raise
    except RecursionError:
        raise JsonInputError(f"nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonInputError(str(exc)) from None
    if depth(value, max_depth) > max_depth:
        raise JsonInputError(f"nested deeper than {max_depth} levels")
    return value
