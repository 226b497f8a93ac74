"""Parsing audit times: RFC 3339 for the API, friendlier forms for the CLI.

The admin API's query models (:mod:`control.api.fields`) and the CLI
(:mod:`control.cli_audit`) parse times here, so a bad value fails the same way: an
:class:`~proxy.errors.InvalidInputError` whose ``field`` names the parameter (the API
answers 422, the CLI exits 2). Everything here is pure.

Times are RFC 3339 date-times *with* an offset (``2024-05-01T12:00:00Z``,
``2024-05-01T14:00:00+02:00``); a time without one is ambiguous and refused.
:func:`parse_cli_time` is the friendlier variant for people typing dates: it also takes
``2024-05-01`` (midnight UTC) and a time without an offset (read as UTC).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from control.audit.chain import format_ts
from proxy.errors import InvalidInputError

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
