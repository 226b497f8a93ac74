"""The async audit log over a state store: append, verify, query, export.

``append`` runs inside the caller's transaction, so an event commits or rolls back with
the change it describes. Appends are serialised across processes *before* the chain's
head is read, or two writers would both link to the same ``prev_hash``: a SQLite write
transaction is ``BEGIN IMMEDIATE`` and so already exclusive, and on PostgreSQL
``tx.lock(AUDIT_LOCK_KEY)`` takes ``pg_advisory_xact_lock``, held until commit or
rollback (a row lock cannot serve: the head row changes under every append, and an
empty table has no row to lock). Under READ COMMITTED the head is read after the lock
is granted, so it is the newest; should a caller ever run an older snapshot, the
``seq`` primary key turns the stale head into a failed insert, never a forked chain.

``verify``, ``query`` and ``export`` only read, in read-only transactions, a batch at a
time, so they never hold a lock for long.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import yaml

from control.audit.chain import (
    GENESIS_HASH,
    AuditEvent,
    ChainHead,
    EventType,
    ExportFormat,
    Severity,
    VerifyResult,
    canonical_json,
    chain_event,
    format_ts,
    utc_now,
    verify_chain,
)
from proxy.errors import InvalidInputError, StoreError

if TYPE_CHECKING:
    from control.store.base import Row, Store, Transaction

AUDIT_LOCK_KEY = 0x5357_0A0D  # advisory-lock key serialising appends (PostgreSQL)
CSV_COLUMNS = ("seq", "id", "ts", "type", "actor", "severity", "resource", "details",
               "prev_hash", "hash")  # fmt: skip
COLUMNS = "seq, id, ts, type, actor, severity, resource, details_json, prev_hash, hash"


class AuditFilters(TypedDict, total=False):
    type: str  # a prefix: "rollout." matches the family, "rollout.step" the type
    actor: str
    resource: str
    severity: Severity | str
    since: datetime | str  # inclusive
    until: datetime | str  # exclusive
    max_seq: int  # inclusive: read the log as it was when this seq was its head


def _ts_param(value: datetime | str, field: str) -> str:
    try:
        dt = datetime.fromisoformat(value) if isinstance(value, str) else value
        return format_ts(dt if dt.utcoffset() is not None else dt.replace(tzinfo=UTC))
    except ValueError as exc:
        raise InvalidInputError(f"not an RFC 3339 time: {value!r}", field=field) from exc


def _where(filters: AuditFilters) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if prefix := filters.get("type"):
        clauses.append("substr(type, 1, CAST(? AS INTEGER)) = ?")
        params += [len(prefix), prefix]
    for name in ("actor", "resource"):
        if (value := filters.get(name)) is not None:
            clauses.append(f"{name} = ?")
            params.append(str(value))
    if (severity := filters.get("severity")) is not None:
        try:
            params.append(str(Severity(severity)))
        except ValueError:
            raise InvalidInputError(f"bad severity {severity!r}", field="severity") from None
        clauses.append("severity = ?")
    if (since := filters.get("since")) is not None:
        clauses.append("ts >= ?")
        params.append(_ts_param(since, "since"))
    if (until := filters.get("until")) is not None:
        clauses.append("ts < ?")
        params.append(_ts_param(until, "until"))
    if (max_seq := filters.get("max_seq")) is not None:
        clauses.append("seq <= ?")
        params.append(int(max_seq))
    return clauses, params


def _to_events(rows: list[Row]) -> list[AuditEvent]:
    try:
        return [AuditEvent.from_row(row) for row in rows]
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreError(f"unreadable audit row: {exc}") from exc


class AuditLog:
    """Append, verify, query and export the audit chain kept in ``store``."""

    def __init__(
        self,
        store: Store,
        *,
        hmac_key: bytes | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._store = store
        self._key = hmac_key
        self._clock = clock

    async def append(
        self,
        tx: Transaction,
        type: EventType | str,
        actor: str,
        resource: str,
        details: Mapping[str, Any] | None = None,
        severity: Severity | str = Severity.INFO,
    ) -> AuditEvent:
        """Append one event inside ``tx``; it commits or rolls back with ``tx``."""
        await tx.lock(AUDIT_LOCK_KEY)  # before reading the head, so no one else appends
        row = await tx.fetchone("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        prev = ChainHead(int(row["seq"]), str(row["hash"])) if row else None
        ev = chain_event(
            prev, ts=self._clock(), type=type, actor=actor, resource=resource,
            details=details, severity=severity, key=self._key,
        )  # fmt: skip
        await tx.execute(
            f"INSERT INTO audit_events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ev.seq, ev.id, ev.ts, str(ev.type), ev.actor, str(ev.severity), ev.resource,
             canonical_json(ev.details), ev.prev_hash, ev.hash),
        )  # fmt: skip
        return ev

    async def record(
        self,
        type: EventType | str,
        actor: str,
        resource: str,
        details: Mapping[str, Any] | None = None,
        severity: Severity | str = Severity.INFO,
    ) -> AuditEvent:
        """Append one event in a transaction of its own."""
        async with self._store.transaction() as tx:
            return await self.append(tx, type, actor, resource, details, severity)

    async def head(self) -> ChainHead | None:
        """The newest event's ``seq`` and ``hash`` (``None`` for an empty log)."""
        async with self._store.transaction(readonly=True) as tx:
            row = await tx.fetchone("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
        return ChainHead(int(row["seq"]), str(row["hash"])) if row else None

    async def verify(self, *, batch_size: int = 1000) -> VerifyResult:
        """Check the whole chain, oldest first, a batch per read-only transaction."""
        prev_seq: int | None = None
        prev_hash, checked = GENESIS_HASH, 0
        while True:
            where = "" if prev_seq is None else "WHERE seq > ?"
            params = [] if prev_seq is None else [prev_seq]
            async with self._store.transaction(readonly=True) as tx:
                rows = await tx.fetchall(
                    f"SELECT {COLUMNS} FROM audit_events {where} ORDER BY seq LIMIT ?",
                    (*params, batch_size),
                )
            if not rows:
                return VerifyResult(True, checked)
            events: list[AuditEvent] = []
            for row in rows:
                try:
                    events.append(AuditEvent.from_row(row))
                except (ValueError, TypeError, KeyError):
                    break
            result = verify_chain(events, self._key, prev_hash=prev_hash, prev_seq=prev_seq or 0)
            checked += result.checked
            if not result.ok:
                return replace(result, checked=checked)
            if len(events) < len(rows):
                bad = rows[len(events)]
                return VerifyResult(False, checked + 1, str(bad["id"]), int(bad["seq"]),
                                    "row is not a readable event")  # fmt: skip
            prev_seq, prev_hash = events[-1].seq, events[-1].hash

    async def query(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        after: int | None = None,
        newest_first: bool = False,
        **filters: Unpack[AuditFilters],
    ) -> list[AuditEvent]:
        """Events matching every filter, by ``seq``; ``after`` is a keyset cursor (a seq)."""
        if not 1 <= limit <= 10_000:
            raise InvalidInputError("limit must be 1..10000", field="limit")
        if offset < 0:
            raise InvalidInputError("offset must be >= 0", field="offset")
        clauses, params = _where(filters)
        if after is not None:
            clauses.append("seq < ?" if newest_first else "seq > ?")
            params.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        async with self._store.transaction(readonly=True) as tx:
            rows = await tx.fetchall(
                f"SELECT {COLUMNS} FROM audit_events {where} ORDER BY seq {order} LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
        return _to_events(rows)

    async def iter_events(
        self, *, batch_size: int = 500, **filters: Unpack[AuditFilters]
    ) -> AsyncIterator[AuditEvent]:
        """Every matching event, oldest first, read a batch at a time."""
        after: int | None = None
        while batch := await self.query(limit=batch_size, after=after, **filters):
            for ev in batch:
                yield ev
            after = batch[-1].seq

    async def export_chunks(
        self, fmt: ExportFormat | str, **filters: Unpack[AuditFilters]
    ) -> AsyncIterator[str]:
        """The matching events as json, jsonl, yaml or csv text, in pieces (streamable)."""
        try:
            form = ExportFormat(fmt)
        except ValueError:
            raise InvalidInputError(f"unknown export format {fmt!r}", field="format") from None
        first = True
        if form is ExportFormat.JSON:
            yield "["
        elif form is ExportFormat.CSV:
            yield _csv_line(list(CSV_COLUMNS))
        async for ev in self.iter_events(**filters):
            data = ev.to_dict()
            if form is ExportFormat.JSON:
                yield ("\n" if first else ",\n") + json.dumps(data, ensure_ascii=False)
            elif form is ExportFormat.JSONL:
                yield json.dumps(data, ensure_ascii=False) + "\n"
            elif form is ExportFormat.YAML:
                yield yaml.safe_dump([data], sort_keys=False, allow_unicode=True)
            else:
                yield _csv_line([*(data[c] for c in CSV_COLUMNS[:7]),
                                 canonical_json(ev.details), ev.prev_hash, ev.hash])  # fmt: skip
            first = False
        if form is ExportFormat.JSON:
            yield "]\n" if first else "\n]\n"
        elif form is ExportFormat.YAML and first:
            yield "[]\n"

    async def export(self, fmt: ExportFormat | str, **filters: Unpack[AuditFilters]) -> str:
        return "".join([chunk async for chunk in self.export_chunks(fmt, **filters)])


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue()
