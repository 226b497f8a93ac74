"""The async audit log over a state store: append, verify, query, export, key rotation.

``append`` runs inside the caller's transaction, so an event commits or rolls back with
the change it describes. Appends are serialised across processes *before* the chain's
head is read, or two writers would both link to the same ``prev_hash``: a SQLite write
transaction is ``BEGIN IMMEDIATE`` and so already exclusive, and on PostgreSQL
``tx.lock(AUDIT_LOCK_KEY)`` takes ``pg_advisory_xact_lock``, held until commit or
rollback (a row lock cannot serve: the head row changes under every append, and an
empty table has no row to lock). Under READ COMMITTED the head is read after the lock
is granted, so it is the newest; should a caller ever run an older snapshot, the
``seq`` primary key turns the stale head into a failed insert, never a forked chain.

Every append also checks, under the same lock, that the log's key is the one the chain is
signed with now (``audit_keys``, see :mod:`control.audit.keys`): a process with the wrong
key, or none, refuses to append (:class:`AuditKeyError`) rather than break the chain, even
when another process rotated the key while it ran. The first append of an empty chain
records its key's fingerprint; a chain written before fingerprints were kept is adopted
when its newest event is signed with the key given. :meth:`AuditLog.check_key` runs the
same check at start-up; :meth:`AuditLog.rotate_key` records a key change.

``verify``, ``query`` and ``export`` only read, in read-only transactions, a batch at a
time, so they never hold a lock for long. Rows are read strictly
(:mod:`control.audit.rows`): verification names an unreadable row as the first bad
event, ``read``/``export`` show it as stored with the reason, and ``query``/``iter_events``
(the readers that need events: the compliance report) skip it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Unpack

from control.audit import keystore
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
)
from control.audit.export import export_chunks
from control.audit.filters import AuditFilters, where_clauses
from control.audit.keys import Keyring, describe, fingerprint, rotation_proof
from control.audit.rows import AuditRecord, UnreadableEvent, read_record
from control.audit.verify import ChainVerifier
from proxy.errors import InvalidInputError

if TYPE_CHECKING:
    from control.store.base import Store, Transaction

__all__ = ["AUDIT_LOCK_KEY", "AuditFilters", "AuditLog"]

AUDIT_LOCK_KEY = 0x5357_0A0D  # advisory-lock key serialising appends (PostgreSQL)
ROTATED_RESOURCE = "audit"


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
        self._keyring = Keyring(hmac_key)
        self._clock = clock

    @property
    def key_fingerprint(self) -> str:
        """The fingerprint of the key this log signs with (``"none"``: unkeyed)."""
        return self._keyring.current_fp

    def set_previous_keys(self, keys: tuple[bytes, ...]) -> None:
        """Keys earlier epochs of the chain were signed with (verification only)."""
        self._keyring = Keyring(self._keyring.current, tuple(keys))

    # -- appending -----------------------------------------------------------------------

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
        if type == EventType.AUDIT_KEY_ROTATED:
            raise InvalidInputError("audit.key_rotated is written only by "
                                    "`splitway audit rotate-key`", field="type")
        prev, ts = await self._locked_head(tx)
        ev = chain_event(
            prev, ts=ts, type=type, actor=actor, resource=resource,
            details=details, severity=severity, key=self._keyring.current,
        )  # fmt: skip
        await self._insert(tx, ev)
        return ev

    async def _locked_head(self, tx: Transaction) -> tuple[ChainHead | None, datetime]:
        """Take the append lock, read the head, check this log's key may extend it; the head
        and the time for the next event (read under the lock, so time follows ``seq``)."""
        await tx.lock(AUDIT_LOCK_KEY)  # before reading the head, so no one else appends
        prev, in_force = await keystore.locked_head(tx)
        now = self._clock()
        await keystore.check_key(tx, prev, in_force, self._keyring, format_ts(now))
        return prev, now

    async def _insert(self, tx: Transaction, ev: AuditEvent) -> None:
        await tx.execute(
            f"INSERT INTO audit_events ({keystore.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ev.seq, ev.id, ev.ts, str(ev.type), ev.actor, str(ev.severity), ev.resource,
             canonical_json(ev.details), ev.prev_hash, ev.hash),
        )  # fmt: skip

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
            row = await tx.fetchone(f"SELECT seq, {keystore.text_col(tx.dialect, 'hash')} "
                                    "FROM audit_events ORDER BY seq DESC LIMIT 1")
        return ChainHead(int(row["seq"]), keystore.stored_text(row["hash"])) if row else None

    # -- the key ---------------------------------------------------------------------------

    async def check_key(self) -> str:
        """The start-up check: this log's key is the chain's, and the key record agrees
        with the chain. Returns the fingerprint; raises :class:`AuditKeyError`."""
        async with self._store.transaction() as tx:
            await self._locked_head(tx)
            await keystore.check_announced(tx)
        return self._keyring.current_fp

    async def rotate_key(
        self, new_key: bytes | None, actor: str, reason: str | None = None
    ) -> AuditEvent:
        """Append ``audit.key_rotated`` (signed with this log's key, with the new key's
        proof) and record the new key from the next ``seq`` on, in one transaction. This
        log cannot append afterwards: open one with the new key."""
        old_fp, new_fp = self._keyring.current_fp, fingerprint(new_key)
        if old_fp == new_fp:
            raise InvalidInputError(f"the new key is the key in use ({describe(old_fp)})",
                                    field="key")
        async with self._store.transaction() as tx:
            prev, ts = await self._locked_head(tx)
            seq, prev_hash = (prev.seq + 1, prev.hash) if prev else (1, GENESIS_HASH)
            details: dict[str, Any] = {"from": old_fp, "to": new_fp, "proof": None}
            if new_key is not None:
                details["proof"] = rotation_proof(new_key, seq=seq, prev_hash=prev_hash,
                                                  old_fp=old_fp, new_fp=new_fp)
            if reason:
                details["reason"] = reason
            ev = chain_event(prev, ts=ts, type=EventType.AUDIT_KEY_ROTATED,
                             actor=actor, resource=ROTATED_RESOURCE, details=details,
                             severity=Severity.WARNING, key=self._keyring.current)
            await self._insert(tx, ev)
            await keystore.record_key(tx, ev.seq + 1, new_fp, ev.ts)
        return ev

    # -- verifying -------------------------------------------------------------------------

    async def verify(self, *, batch_size: int = 1000) -> VerifyResult:
        """Check the whole chain, oldest first, a batch per read-only transaction; any row
        that cannot be read as an event is the first bad event."""
        async with self._store.transaction(readonly=True) as tx:
            verifier = ChainVerifier(self._keyring, await keystore.key_record(tx))
        last_seq: int | None = None
        head_id: str | None = None
        while True:
            where = "" if last_seq is None else "WHERE seq > ?"
            params = [] if last_seq is None else [last_seq]
            async with self._store.transaction(readonly=True) as tx:
                rows = await tx.fetchall(
                    f"SELECT {keystore.columns(tx.dialect)} FROM audit_events {where} "
                    "ORDER BY seq LIMIT ?",
                    (*params, batch_size),
                )
            if not rows:
                return verifier.finish(head_id)
            for row in rows:
                record = read_record(row)
                if isinstance(record, UnreadableEvent):
                    return verifier.unreadable(record.id, record.seq or None, record.reason)
                if (bad := verifier.feed(record)) is not None:
                    return bad
                head_id = record.id
            last_seq = int(rows[-1]["seq"])

    # -- reading ---------------------------------------------------------------------------

    async def read(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        after: int | None = None,
        newest_first: bool = False,
        **filters: Unpack[AuditFilters],
    ) -> list[AuditRecord]:
        """Rows matching every filter, by ``seq``, each an event or, when the row is not a
        well-formed event, an :class:`UnreadableEvent`; ``after`` is a keyset cursor."""
        if not 1 <= limit <= 10_000:
            raise InvalidInputError("limit must be 1..10000", field="limit")
        if offset < 0:
            raise InvalidInputError("offset must be >= 0", field="offset")
        clauses, params = where_clauses(filters)
        if after is not None:
            clauses.append("seq < ?" if newest_first else "seq > ?")
            params.append(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if newest_first else "ASC"
        async with self._store.transaction(readonly=True) as tx:
            rows = await tx.fetchall(
                f"SELECT {keystore.columns(tx.dialect)} FROM audit_events {where} "
                f"ORDER BY seq {order} LIMIT ? OFFSET ?",
                (*params, limit, offset),
            )
        return [read_record(row) for row in rows]

    async def query(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        after: int | None = None,
        newest_first: bool = False,
        **filters: Unpack[AuditFilters],
    ) -> list[AuditEvent]:
        """The well-formed events among :meth:`read`'s rows (verification reports the rest)."""
        records = await self.read(limit=limit, offset=offset, after=after,
                                  newest_first=newest_first, **filters)
        return [r for r in records if isinstance(r, AuditEvent)]

    async def iter_records(
        self, *, batch_size: int = 500, **filters: Unpack[AuditFilters]
    ) -> AsyncIterator[AuditRecord]:
        """Every matching row, oldest first, read a batch at a time."""
        after: int | None = None
        while batch := await self.read(limit=batch_size, after=after, **filters):
            for record in batch:
                yield record
            after = batch[-1].seq

    async def iter_events(
        self, *, batch_size: int = 500, **filters: Unpack[AuditFilters]
    ) -> AsyncIterator[AuditEvent]:
        """Every matching well-formed event, oldest first, read a batch at a time."""
        async for record in self.iter_records(batch_size=batch_size, **filters):
            if isinstance(record, AuditEvent):
                yield record

    async def export_chunks(
        self, fmt: ExportFormat | str, **filters: Unpack[AuditFilters]
    ) -> AsyncIterator[str]:
        """The matching rows as json, jsonl, yaml or csv text, in pieces (streamable);
        see :mod:`control.audit.export` for rows that are not well-formed events."""
        try:
            form = ExportFormat(fmt)
        except ValueError:
            raise InvalidInputError(f"unknown export format {fmt!r}", field="format") from None
        async for chunk in export_chunks(self.iter_records(**filters), form):
            yield chunk

    async def export(self, fmt: ExportFormat | str, **filters: Unpack[AuditFilters]) -> str:
        return "".join([chunk async for chunk in self.export_chunks(fmt, **filters)])
