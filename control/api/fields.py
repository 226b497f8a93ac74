"""The typed inputs of the admin API: each constraint validates *and* describes itself.

A handler's path, query and body are pydantic models built from the annotated types here
(see :class:`control.api.ApiRoute`); :mod:`control.api.openapi` reads the JSON Schema of
the very same models, so the document and the validation cannot disagree.

Patterns are Python regular expressions, checked with Python's :mod:`re` (a trailing
``$`` means the end of the text, as in JSON Schema, not "before a final newline"), so
the string in the document is the rule the server applies. They use explicit ASCII
classes (``[0-9]``, not ``\\d``; :data:`WHITE_SPACE`, not ``\\s``), which read the same
in every regex dialect (Python's, ECMA-262's, and the Rust one schemathesis checks with).

Query values arrive as text: :data:`QueryInt` takes only ASCII digits (``"5"``, not
``" 5"`` or ``"5.0"``), and :data:`Time` only RFC 3339 date-times with an offset. A time
outside what Python can represent (``0001-01-01T00:00:00+01:00``) is clamped to the
nearest representable instant, and times before year 1000 read as 1000-01-01 (the log has
nothing older, and the log's fixed-width timestamps start there).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainValidator,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from control.versions import MAX_VERSION_LENGTH
from proxy.config import NAME_RULE

__all__ = [
    "DIGITS",
    "NOT_BLANK",
    "TEXT",
    "WHITE_SPACE",
    "Body",
    "Commit",
    "DatasetDigest",
    "FilterText",
    "Float",
    "MetricName",
    "Name",
    "NonBlank",
    "OneOf",
    "Params",
    "Pattern",
    "PromotionId",
    "QueryInt",
    "RoutePath",
    "SemVer",
    "Sha256",
    "Time",
    "Uri",
    "VersionRef",
    "check_exactly_one",
    "exactly_one",
    "one_of",
    "parse_time",
]


class Params(BaseModel):
    """Path or query parameters: unknown ones are refused (a typo would widen a filter)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Body(BaseModel):
    """A JSON request body: no unknown keys, no type coercion (``"1"`` is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass(frozen=True, slots=True)
class Pattern:
    """A string constraint: ``regex`` must match (Python ``re.search``); ``rule`` words the
    refusal, e.g. ``"is not a valid name: use [a-z0-9]..."``."""

    regex: str
    rule: str

    def _compiled(self) -> re.Pattern[str]:
        # JSON Schema's ``$`` is the end of the text; Python's also matches before a "\n".
        regex = self.regex[:-1] + r"\Z" if self.regex.endswith("$") else self.regex
        return re.compile(regex)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        compiled, rule = self._compiled(), self.rule

        def check(value: str) -> str:
            if compiled.search(value) is None:
                raise PydanticCustomError("pattern", f"{value[:80]!r} {rule}")
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        if json_schema.get("pattern", self.regex) != self.regex:  # JSON Schema has one
            raise TypeError(f"two patterns on one value: {json_schema['pattern']!r} and "
                            f"{self.regex!r}; write one that says both")
        json_schema["pattern"] = self.regex
        return json_schema


@dataclass(frozen=True, slots=True)
class OneOf:
    """A string constraint: one of ``values`` (an ``enum`` in the document)."""

    values: tuple[str, ...]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        allowed, shown = frozenset(self.values), ", ".join(self.values)

        def check(value: str) -> str:
            if value not in allowed:
                raise PydanticCustomError("enum", f"{value[:80]!r} is not one of {shown}")
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["enum"] = list(self.values)
        return json_schema


def one_of(values: Iterable[str]) -> OneOf:
    return OneOf(tuple(values))


#: A finite JSON number (a :class:`Body` is strict: ``true`` and ``"1"`` are refused).
#: Bounds go in the same ``Field``: ``Annotated[float, Field(ge=0, allow_inf_nan=False)]``.
Float = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[str, Pattern(f"^{NAME_RULE}$", f"is not a valid name: use {NAME_RULE}")]
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
SEMVER_RE = (rf"{_NUM}\.{_NUM}\.{_NUM}(?:-{_PRE}(?:\.{_PRE})*)?"
             r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?")
SemVer = Annotated[str, Field(max_length=MAX_VERSION_LENGTH), Pattern(
    f"^{SEMVER_RE}$", "is not a SemVer 2.0 version (MAJOR.MINOR.PATCH[-PRE][+BUILD])")]
VersionRef = Annotated[str, Field(max_length=200), Pattern(
    f"^{NAME_RULE}@{SEMVER_RE}$", "is not MODEL@SEMVER, e.g. sentiment@2.1.0")]
PromotionId = Annotated[str, Pattern(r"^prm-[0-9a-f]{12}$", "is not a promotion id (prm-<12 hex>)")]
Sha256 = Annotated[str, Pattern(r"^[0-9a-f]{64}$", "is not a SHA-256 (64 lowercase hex digits)")]
Commit = Annotated[str, Pattern(r"^[0-9a-f]{7,64}$",
                                "is not a commit: 7 to 64 lowercase hex digits")]
DatasetDigest = Annotated[str, Pattern(r"^[A-Za-z0-9][A-Za-z0-9:._+-]{0,199}$",
                                       "is not a digest such as sha256:HEX (letters, digits, "
                                       "':._+-')")]
#: White space as *any* of Python, ECMA-262 and Unicode call it, spelled out: ``\s``
#: means three slightly different sets in the three regex dialects that read this document.
WHITE_SPACE = (r"\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
               r"\u3000\ufeff")
Uri = Annotated[str, Pattern(
    rf"^[a-z][a-z0-9+.-]*://[^\x00-\x1f\x7f{WHITE_SPACE}]{{1,2040}}$",
    "is not a URI such as s3://bucket/key")]
MetricName = Annotated[str, Pattern(r"^[ -~]{1,128}$",
                                    "is not a metric name: 1 to 128 printable ASCII characters")]
#: Free text, stored as text: anything but NUL (which PostgreSQL text cannot hold).
TEXT = Pattern(r"^[^\x00]*$", "must not contain NUL characters")
#: Free text that must say something: a character outside :data:`WHITE_SPACE` (which
#: holds every character ``str.strip()`` removes), and no NUL.
NOT_BLANK = Pattern(rf"^[^\x00]*[^\x00{WHITE_SPACE}][^\x00]*$",
                    "must not be blank (nor contain NUL characters)")
NonBlank = Annotated[str, NOT_BLANK]
#: A filter value (actor, resource): non-empty, without control characters.
FilterText = Annotated[str, Field(max_length=1000), Pattern(
    r"^[^\x00-\x1f\x7f]+$", "must be non-empty text without control characters")]


def _query_int(value: object) -> object:
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,18}", value):
        raise PydanticCustomError("int", f"{value[:80]!r} is not an integer")
    return value


#: Put it *after* any bounds: ``Annotated[int, Field(ge=1, le=1000), DIGITS]`` (bounds
#: placed after a validator would be enforced but left out of the JSON Schema).
DIGITS = BeforeValidator(_query_int)
QueryInt = Annotated[int, DIGITS]

_RFC3339 = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                      r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})")
MIN_TIME = datetime(1000, 1, 1, tzinfo=UTC)
MAX_TIME = datetime.max.replace(tzinfo=UTC)


def parse_time(value: object) -> datetime:
    """An RFC 3339 date-time (with an offset) as an aware UTC datetime, clamped to
    [:data:`MIN_TIME`, :data:`MAX_TIME`]."""
    m = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise PydanticCustomError("time", f"{str(value)[:80]!r} is not an RFC 3339 time such "
                                  "as 2024-05-01T12:00:00Z")
    date, hh, mm, ss, frac, offset = m.groups()
    leap = ss == "60"  # RFC 3339 allows a leap second: read 23:59:60 as the next second
    text = f"{date}T{hh}:{mm}:{'59' if leap else ss}{(frac or '')[:7]}"
    text += "+00:00" if offset in ("Z", "z") else offset
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        raise PydanticCustomError("time", f"{value!r} is not a valid time") from None
    offset_delta = local.utcoffset() or timedelta(0)
    naive = local.replace(tzinfo=None)
    try:
        utc = (naive - offset_delta).replace(tzinfo=UTC)
        if leap:
            utc += timedelta(seconds=1)
    except OverflowError:
        return MIN_TIME if offset_delta > timedelta(0) else MAX_TIME
    return max(MIN_TIME, utc)


Time = Annotated[datetime, PlainValidator(parse_time, json_schema_input_type=str),
                 WithJsonSchema({"type": "string", "format": "date-time"})]


def exactly_one(*names: str) -> dict[str, Any]:
    """JSON Schema for "exactly one of ``names`` is given (not null)", for a model's
    ``json_schema_extra``; the model checks it with :func:`check_exactly_one`."""
    return {"oneOf": [{"required": [n], "properties": {n: {"not": {"type": "null"}}}}
                      for n in names]}


def check_exactly_one(model: BaseModel, *names: str) -> None:
    """Refuse a model where not exactly one of ``names`` is set (422 naming the first)."""
    given = [n for n in names if getattr(model, n) is not None]
    if len(given) != 1:
        raise PydanticCustomError("exactly_one", f"give exactly one of {' and '.join(names)}",
                                  {"field": names[0]})


class RoutePath(Params):
    """``{route}``: a route name (an unknown one is a 404)."""

    route: Name = Field(description="route name")
