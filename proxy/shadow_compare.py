"""Comparing a primary response with its shadow's (pure).

Status codes first; then JSON bodies — the value at ``json_path`` when one is configured,
the whole document otherwise — numbers within ``rel_tol``/``abs_tol`` (``math.isclose``),
everything else (labels, strings, booleans, null, shapes) exactly; non-JSON bodies are
compared byte for byte. The result carries a short, human-readable reason for the report's
ring of recent mismatches.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from proxy.config import Compare

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Observed:
    """One side's answer: status, captured body (None when over the capture cap)."""

    status: int
    body: bytes | None
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    matched: bool
    detail: str = ""


def at_path(doc: Any, path: str) -> tuple[bool, Any]:
    """Follow ``a.b[0].c`` (dots for keys, ``[i]`` for list items); ``(found, value)``."""
    value = _at_path(doc, path)
    return (value is not _MISSING, None if value is _MISSING else value)


def json_number(body: bytes | bytearray, path: str) -> float | None:
    """The number at ``path`` of a JSON body, or None (not JSON, missing, not a number)."""
    doc = _json(bytes(body))
    if doc is _MISSING:
        return None
    value = _at_path(doc, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _at_path(doc: Any, path: str) -> Any:
    """Follow ``a.b[0].c``; ``_MISSING`` when the path does not exist."""
    node = doc
    for part in path.replace("[", ".[").split("."):
        if not part:
            continue
        if part.startswith("[") and part.endswith("]"):
            index = int(part[1:-1])
            if not isinstance(node, list) or not -len(node) <= index < len(node):
                return _MISSING
            node = node[index]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def _diff(a: Any, b: Any, cfg: Compare, where: str) -> str | None:
    """First difference between two JSON values, or None when they agree."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return None if a == b and type(a) is type(b) else f"{where}: {a!r} != {b!r}"
    if isinstance(a, int | float) and isinstance(b, int | float):
        if math.isclose(a, b, rel_tol=cfg.rel_tol, abs_tol=cfg.abs_tol):
            return None
        return f"{where}: {a!r} vs {b!r} (beyond rel_tol={cfg.rel_tol:g}, abs_tol={cfg.abs_tol:g})"
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _diff(x, y, cfg, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            only = sorted(set(a) ^ set(b))[:3]
            return f"{where}: keys differ ({', '.join(map(str, only))})"
        for key in a:
            found = _diff(a[key], b[key], cfg, f"{where}.{key}")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {str(a)[:60]!r} != {str(b)[:60]!r}"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _MISSING


def compare(primary: Observed, shadow: Observed, cfg: Compare) -> Verdict | None:
    """Compare two answers; ``None`` when they cannot be compared (a body not captured)."""
    if primary.status != shadow.status:
        return Verdict(False, f"status {primary.status} vs {shadow.status}")
    if primary.body is None or shadow.body is None:
        return None
    a, b = _json(primary.body), _json(shadow.body)
    if a is _MISSING or b is _MISSING:
        if primary.body == shadow.body:
            return Verdict(True)
        return Verdict(False, f"bodies differ ({len(primary.body)} vs {len(shadow.body)} bytes)")
    root = "$"
    if cfg.json_path:
        root = f"$.{cfg.json_path}"
        a, b = _at_path(a, cfg.json_path), _at_path(b, cfg.json_path)
        if a is _MISSING or b is _MISSING:
            side = "primary" if a is _MISSING else "shadow"
            return Verdict(False, f"{root} missing in the {side} response")
    found = _diff(a, b, cfg, root)
    return Verdict(found is None, found or "")
