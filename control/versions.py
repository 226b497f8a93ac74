"""Model names and SemVer 2.0 version strings: validation and precedence ordering.

Names follow the same rule as every other name in splitway (``[a-z0-9][a-z0-9._-]{0,63}``,
:data:`proxy.config.NAME_RULE`): lowercase, no ``/``, no ``%``, no white space, and never
starting with a dot, so a name can never climb out of a path, a URL or a SQL literal.
Anything else is refused with :class:`~proxy.errors.InvalidInputError` (422) naming the
field, before any storage is touched.

Versions are strict SemVer 2.0 (parsed by the ``semver`` package, no leading ``v``, no
missing minor/patch, no leading zeros), at most 128 characters.

Ordering. SemVer precedence ignores build metadata (``1.0.0+a`` and ``1.0.0+b`` have
the same precedence), yet each version string is a unique identifier in the registry,
so both may be registered. :func:`sort_key` makes the order total: precedence first,
then the build metadata as a string (no build metadata sorts first). It never
contradicts precedence: when precedence differs, the order is the precedence order.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import total_ordering
from typing import Any

import semver

from proxy.config import NAME_RE, NAME_RULE
from proxy.errors import InvalidInputError

MAX_VERSION_LENGTH = 128

__all__ = [
    "MAX_VERSION_LENGTH",
    "NAME_RULE",
    "SortKey",
    "check_name",
    "check_version",
    "is_valid_name",
    "newest_first",
    "parse_version",
    "sort_key",
]


def is_valid_name(name: object) -> bool:
    """Whether ``name`` is a valid model (or backend, tag) name."""
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def check_name(name: object, field: str = "model") -> str:
    """``name`` if it is valid, else a 422 naming ``field``."""
    if not is_valid_name(name):
        raise InvalidInputError(f"{name!r} is not a valid name: use {NAME_RULE}", field=field)
    assert isinstance(name, str)
    return name


def parse_version(text: object, field: str = "version") -> semver.Version:
    """The parsed SemVer 2.0 version, or a 422 naming ``field``."""
    if not isinstance(text, str) or len(text) > MAX_VERSION_LENGTH:
        raise InvalidInputError(
            f"{text!r} is not a SemVer 2.0 version of at most {MAX_VERSION_LENGTH} characters",
            field=field)
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        raise InvalidInputError(
            f"{text!r} is not a SemVer 2.0 version (MAJOR.MINOR.PATCH[-PRE][+BUILD])",
            field=field) from None


def check_version(text: object, field: str = "version") -> str:
    """``text`` if it is a valid version string, else a 422 naming ``field``."""
    parse_version(text, field)
    assert isinstance(text, str)
    return text


@total_ordering
class SortKey:
    """A total order on version strings, consistent with SemVer precedence."""

    __slots__ = ("build", "version")

    def __init__(self, text: str) -> None:
        parsed = parse_version(text)
        self.version = parsed.replace(build=None)
        self.build = parsed.build or ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SortKey):
            return NotImplemented
        return self.version == other.version and self.build == other.build

    def __lt__(self, other: Any) -> bool:
        if not isinstance(other, SortKey):
            return NotImplemented
        cmp = self.version.compare(other.version)
        return cmp < 0 if cmp else self.build < other.build

    def __hash__(self) -> int:
        return hash((str(self.version), self.build))


def sort_key(text: str) -> SortKey:
    """The key that sorts version strings by precedence (ties by build metadata)."""
    return SortKey(text)


def newest_first(versions: Iterable[str]) -> list[str]:
    """The version strings, highest precedence first."""
    return sorted(versions, key=sort_key, reverse=True)
