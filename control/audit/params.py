"""Parsing audit query parameters: RFC 3339 times, type prefixes, filters, pages.

The admin API (:mod:`control.api.audit`) and the CLI (:mod:`control.cli_audit`) read the
same filters, so both parse them here and a bad value fails the same way: an
:class:`~proxy.errors.InvalidInputError` whose ``field`` names the parameter (the API
answers 422, the CLI exits 2). Everything here is pure.

Times are RFC 3339 date-times *with* an offset (``2024-05-01T12:00:00Z``,
``2024-05-01T14:00:00+02:00``); a time without one is ambiguous and refused.
:func:`parse_cli_time` is the friendlier variant for people typing dates: it also takes
``2024-05-01`` (midnight UTC) and a time without an offset (read as UTC).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from control.audit.chain import EventType, Severity, format_ts
from control.audit.filters import AuditFilters
from proxy.errors import InvalidInputError

#: Filters accepted by every audit read (query, export, report use a subset).
FILTER_FIELDS = ("type", "actor", "resource", "severity", "since", "until")
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_rfc3339(value: str, field: str) -> datetime:
    """An aware UTC datetime from an RFC 3339 date-time; 422 naming ``field`` otherwise."""
    text = value.strip()
    if not _RFC3339.match(text):
        raise InvalidInputError(
            f"{field}: {value!r} is not an RFC 3339 time such as 2024-05-01T12:00:00Z",
            field=field,
        )
    text = text.replace("t", "T").replace("z", "Z").replace(" ", "T")
    frac = re.search(r"\.(\d+)", text)
    if frac and len(frac.group(1)) > 6:  # Python keeps microseconds: drop the rest
        text = text.replace(frac.group(0), frac.group(0)[:7])
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise InvalidInputError(f"{field}: {value!r} is not a valid time", field=field) from None


def parse_cli_time(value: str, field: str) -> str:
    """A date or date-time typed on the command line, as an RFC 3339 UTC string."""
    text = value.strip()
    if _DATE.match(text):
        text += "T00:00:00Z"
    elif re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$", text):
        text = text + (":00" if text.count(":") == 1 else "") + "Z"
    return format_ts(parse_rfc3339(text, field))


def check_type_prefix(prefix: str) -> str:
    """A ``type`` filter must match at least one event type (``rollout.`` or ``rollout.step``)."""
    if not any(t.value.startswith(prefix) for t in EventType):
        raise InvalidInputError(
            f"type: {prefix!r} matches no audit event type (e.g. 'rollout.' or "
            "'weights.changed')",
            field="type",
        )
    return prefix


def parse_filters(params: Mapping[str, str]) -> AuditFilters:
    """The audit filters among ``params`` (other keys are ignored here), validated."""
    filters: AuditFilters = {}
    if (prefix := params.get("type")) is not None:
        filters["type"] = check_type_prefix(prefix)
    for name in ("actor", "resource"):
        if (value := params.get(name)) is not None:
            if not value:
                raise InvalidInputError(f"{name}: must not be empty", field=name)
            filters[name] = value
    if (severity := params.get("severity")) is not None:
        try:
            filters["severity"] = Severity(severity)
        except ValueError:
            raise InvalidInputError(
                f"severity: {severity!r} is not one of info, warning, critical",
                field="severity",
            ) from None
    since = parse_rfc3339(params["since"], "since") if "since" in params else None
    until = parse_rfc3339(params["until"], "until") if "until" in params else None
    if since is not None and until is not None and until <= since:
        raise InvalidInputError("until: must be later than since", field="until")
    if since is not None:
        filters["since"] = since
    if until is not None:
        filters["until"] = until
    return filters


def check_known(params: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    """Refuse a parameter the operation does not know (a typo would silently widen it)."""
    for name in params:
        if name not in allowed:
            raise InvalidInputError(
                f"{name}: unknown parameter (expected one of {', '.join(allowed)})", field=name
            )


@dataclass(frozen=True, slots=True)
class Page:
    """One page request of ``GET /api/v1/audit``: its size, cursor and direction."""

    limit: int = DEFAULT_LIMIT
    after: int | None = None  # the cursor: the seq of the last event already seen
    newest_first: bool = False


def parse_page(params: Mapping[str, str]) -> Page:
    """``limit`` (1..1000), ``cursor`` (a previous ``next_cursor``) and ``order``."""
    limit = DEFAULT_LIMIT
    if (raw := params.get("limit")) is not None:
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
            raise InvalidInputError(f"limit: must be an integer 1..{MAX_LIMIT}", field="limit")
        limit = int(raw)
    after = None
    if (cursor := params.get("cursor")) is not None:
        if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
            raise InvalidInputError("cursor: not a cursor this API returned", field="cursor")
        after = int(cursor)
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise InvalidInputError("order: must be asc or desc", field="order")
    return Page(limit, after, order == "desc")
