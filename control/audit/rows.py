"""Reading stored audit rows strictly: anything that is not a well-formed event is tampering.

Someone with write access to the database can put anything in a row: ``NaN``, ``1e400``,
JSON nested 100,000 deep, bytes that are not UTF-8, an unknown type, a NULL, a number where
text belongs. :func:`read_row` turns a row into an :class:`AuditEvent` or raises
:class:`UnreadableRow` naming the column and the problem; it never lets a parser's
``RecursionError``, an ``inf`` that cannot be hashed or a lone surrogate that cannot be
encoded escape to the caller. Verification reports an unreadable row as the first bad
event; queries and exports show it as an :class:`UnreadableEvent`: its columns as stored,
so the evidence stays visible (each value cut to 4 KiB), and the reason.

The SQLite store hands text columns over as bytes (``CAST(... AS BLOB)``, see
:mod:`control.audit.log`) because its driver raises on the first non-UTF-8 value; they are
decoded here, strictly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from control import strict_json
from control.audit.chain import MAX_DETAILS_DEPTH, AuditEvent, EventType, Severity, canonical_json

TEXT_COLUMNS = ("id", "ts", "type", "actor", "severity", "resource", "details_json",
                "prev_hash", "hash")  # fmt: skip
#: Longest stored value an unreadable row shows (a tampered row may hold megabytes).
MAX_SHOWN = 4096
_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", re.ASCII)
_HASH = re.compile(r"[0-9a-f]{64}")


class UnreadableRow(ValueError):
    """A stored row that is not a well-formed audit event; the message says why."""


def parse_details(text: str) -> dict[str, Any]:
    """A ``details`` JSON object: finite numbers, at most :data:`MAX_DETAILS_DEPTH` deep,
    text that encodes as UTF-8."""
    try:
        value = strict_json.loads(text, max_depth=MAX_DETAILS_DEPTH)
    except (strict_json.JsonInputError, RecursionError) as exc:
        raise UnreadableRow(f"details: {exc or 'nested too deep'}") from None
    if not isinstance(value, dict):
        raise UnreadableRow("details: not a JSON object")
    if "\\u" in text:  # only an escape can make a lone surrogate, which cannot be hashed
        try:
            canonical_json(value).encode("utf-8")
        except UnicodeEncodeError:
            raise UnreadableRow("details: holds a \\u escape that is not a character") from None
    return value


def _text(row: Mapping[str, Any], name: str) -> str:
    try:
        value = row[name]
    except KeyError:
        raise UnreadableRow(f"{name}: column missing") from None
    kind = type(value)  # exact types first: this runs for every column of every row
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bytes or isinstance(value, bytes | bytearray | memoryview):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableRow(f"{name}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if value is None:
        raise UnreadableRow(f"{name}: NULL")
    if isinstance(value, str):
        return value
    raise UnreadableRow(f"{name}: {type(value).__name__}, not text")


def row_seq(row: Mapping[str, Any]) -> int | None:
    """The row's ``seq`` when it is a positive integer (the table's key: it always is)."""
    seq = row.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None


def read_row(row: Mapping[str, Any]) -> AuditEvent:
    """The event a stored row holds; :class:`UnreadableRow` when it holds none."""
    seq = row_seq(row)
    if seq is None:
        raise UnreadableRow("seq: not a positive integer")
    text = {name: _text(row, name) for name in TEXT_COLUMNS}
    ts = text["ts"]
    if not _TS.fullmatch(ts):
        raise UnreadableRow(f"ts: {ts[:40]!r} is not a UTC time like 2024-05-01T12:00:00.000000Z")
    try:
        datetime.fromisoformat(ts)
    except ValueError:
        raise UnreadableRow(f"ts: {ts!r} is not a valid time") from None
    try:
        etype = EventType(text["type"])
    except ValueError:
        raise UnreadableRow(f"type: unknown event type {text['type'][:60]!r}") from None
    try:
        severity = Severity(text["severity"])
    except ValueError:
        raise UnreadableRow(f"severity: unknown severity {text['severity'][:20]!r}") from None
    for name in ("prev_hash", "hash"):
        if not _HASH.fullmatch(text[name]):
            raise UnreadableRow(f"{name}: not 64 hex digits")
    return AuditEvent(
        seq=seq, id=text["id"], ts=ts, type=etype, actor=text["actor"], severity=severity,
        resource=text["resource"], details=parse_details(text["details_json"]),
        prev_hash=text["prev_hash"], hash=text["hash"],
    )  # fmt: skip


def _shown(value: Any) -> Any:
    """A stored value as evidence: text as is, bytes with ``\\xNN`` for what is not UTF-8,
    cut to :data:`MAX_SHOWN` characters (the database keeps the whole of it)."""
    if isinstance(value, bytes | bytearray | memoryview):
        value = bytes(value).decode("utf-8", "backslashreplace")
    elif not (value is None or isinstance(value, str | int | float | bool)):
        value = repr(value)
    if isinstance(value, str) and len(value) > MAX_SHOWN:
        return f"{value[:MAX_SHOWN]}...[cut: {len(value)} characters in all]"
    return value


@dataclass(frozen=True, slots=True)
class UnreadableEvent:
    """A row that is not a well-formed event, as queries and exports show it."""

    seq: int
    id: str
    stored: dict[str, Any]  # column -> value as stored (shown as text)
    reason: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any], reason: str) -> UnreadableEvent:
        stored = {name: _shown(row.get(name)) for name in ("seq", *TEXT_COLUMNS)}
        seq = row_seq(row) or 0
        ident = stored["id"] if isinstance(stored["id"], str) else f"evt-{seq}"
        return cls(seq, ident, stored, reason)

    def to_dict(self) -> dict[str, Any]:
        """The event's ten fields as stored (``details``: the stored text) + ``unreadable``."""
        s = self.stored
        return {
            "seq": s["seq"], "id": self.id, "ts": s["ts"], "type": s["type"],
            "actor": s["actor"], "severity": s["severity"], "resource": s["resource"],
            "details": s["details_json"], "prev_hash": s["prev_hash"], "hash": s["hash"],
            "unreadable": self.reason,
        }  # fmt: skip


AuditRecord = AuditEvent | UnreadableEvent


def read_record(row: Mapping[str, Any]) -> AuditRecord:
    """:func:`read_row`, or the row as an :class:`UnreadableEvent` with the reason."""
    try:
        return read_row(row)
    except UnreadableRow as exc:
        return UnreadableEvent.from_row(row, str(exc))
