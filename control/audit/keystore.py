"""The key record kept with the chain: ``audit_keys(since_seq, fingerprint, recorded_at)``.

One row per key epoch: the fingerprint (:func:`control.audit.keys.fingerprint`) of the key
that signs every event from ``since_seq`` on; the newest row is the key in force. Rows are
written in the transaction of the append that needs them (the chain's first event, a
rotation), under the audit append lock. These functions run inside the caller's
transaction; :class:`control.audit.log.AuditLog` calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from control.audit.chain import AuditEvent, ChainHead, EventType, compute_hash
from control.audit.keys import (
    NO_KEY,
    AuditKeyError,
    Keyring,
    check_fingerprint,
    describe,
    mismatch_message,
)
from control.audit.rows import TEXT_COLUMNS, UnreadableRow, read_record, read_row

if TYPE_CHECKING:
    from control.store.base import Transaction

COLUMNS = "seq, id, ts, type, actor, severity, resource, details_json, prev_hash, hash"
#: SQLite hands text over as bytes, so a value that is not UTF-8 reaches the strict reader
#: (:mod:`control.audit.rows`) instead of failing the whole fetch in the driver.
SQLITE_COLUMNS = ", ".join(["seq", *(f"CAST({c} AS BLOB) AS {c}" for c in TEXT_COLUMNS)])


def columns(dialect: str) -> str:
    """The ``audit_events`` select list for a dialect (see ``SQLITE_COLUMNS``)."""
    return SQLITE_COLUMNS if dialect == "sqlite" else COLUMNS


def text_col(dialect: str, name: str) -> str:
    return f"CAST({name} AS BLOB) AS {name}" if dialect == "sqlite" else name


def stored_text(value: Any) -> str:
    """A stored text value from either driver (SQLite: bytes, see ``SQLITE_COLUMNS``)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


async def key_record(tx: Transaction) -> dict[int, str]:
    """Every epoch: ``{since_seq: fingerprint}``."""
    fp = text_col(tx.dialect, "fingerprint")
    rows = await tx.fetchall(f"SELECT since_seq, {fp} FROM audit_keys")
    return {int(r["since_seq"]): stored_text(r["fingerprint"]) for r in rows}


async def key_in_force(tx: Transaction) -> tuple[int, str] | None:
    """The newest epoch, ``(since_seq, fingerprint)``; ``None`` before any is recorded."""
    fp = text_col(tx.dialect, "fingerprint")
    row = await tx.fetchone(
        f"SELECT since_seq, {fp} FROM audit_keys ORDER BY since_seq DESC LIMIT 1")
    return None if row is None else (int(row["since_seq"]), stored_text(row["fingerprint"]))


async def record_key(tx: Transaction, since_seq: int, fp: str, now: str) -> None:
    await tx.execute(
        "INSERT INTO audit_keys (since_seq, fingerprint, recorded_at) VALUES (?, ?, ?)",
        (since_seq, fp, now))


async def locked_head(tx: Transaction) -> tuple[ChainHead | None, str | None]:
    """The chain's head and the fingerprint in force, in one round trip (every append
    reads both, under the append lock)."""
    def newest(column: str) -> str:
        return f"(SELECT {column} FROM audit_events ORDER BY seq DESC LIMIT 1)"
    fp = "(SELECT fingerprint FROM audit_keys ORDER BY since_seq DESC LIMIT 1)"
    if tx.dialect == "sqlite":
        hash_, fp = f"CAST({newest('hash')} AS BLOB)", f"CAST({fp} AS BLOB)"
    else:
        hash_ = newest("hash")
    row = await tx.fetchone(f"SELECT {newest('seq')} AS seq, {hash_} AS hash, {fp} AS fp")
    if row is None or row["seq"] is None:
        head = None
    else:
        head = ChainHead(int(row["seq"]), stored_text(row["hash"]))
    return head, None if row is None or row["fp"] is None else stored_text(row["fp"])


async def check_key(tx: Transaction, head: ChainHead | None, in_force: str | None,
                    keyring: Keyring, now: str) -> None:
    """Raise :class:`AuditKeyError` unless ``keyring.current`` signs the chain now
    (``in_force``: the recorded fingerprint, if any); record the key of a new chain, or
    adopt a chain from before fingerprints were kept."""
    given = keyring.current_fp
    if in_force is not None:
        check_fingerprint(in_force, given)
    elif head is None:
        await record_key(tx, 1, given, now)  # a new chain: its key is ours
    else:
        await _adopt(tx, keyring, now)


async def _adopt(tx: Transaction, keyring: Keyring, now: str) -> None:
    """A chain from before fingerprints were kept is ours if its newest event is."""
    given = keyring.current_fp
    row = await tx.fetchone(
        f"SELECT {columns(tx.dialect)} FROM audit_events ORDER BY seq DESC LIMIT 1")
    assert row is not None
    try:
        ev = read_row(row)
    except UnreadableRow as exc:
        raise AuditKeyError(f"cannot tell which key signed the audit chain: its newest "
                            f"event evt-{row['seq']} is unreadable ({exc})") from None
    if compute_hash(ev.hashed_fields(), keyring.current) == ev.hash:
        await record_key(tx, 1, given, now)
    elif given != NO_KEY and compute_hash(ev.hashed_fields()) == ev.hash:
        raise AuditKeyError(mismatch_message(NO_KEY, given))
    else:
        raise AuditKeyError(
            f"audit key mismatch: the newest audit event {ev.id} is not signed with "
            f"{describe(given)}; start with the key that signed the chain (to change keys "
            "use `splitway audit rotate-key`)")


async def check_announced(tx: Transaction) -> None:
    """The key in force took over at an ``audit.key_rotated`` event that names it; a
    record that does not is an edit made to let the wrong key in."""
    in_force = await key_in_force(tx)
    if in_force is None or in_force[0] <= 1:
        return
    since, fp = in_force
    row = await tx.fetchone(f"SELECT {columns(tx.dialect)} FROM audit_events WHERE seq = ?",
                            (since - 1,))
    ev = read_record(row) if row is not None else None
    if not (isinstance(ev, AuditEvent) and ev.type is EventType.AUDIT_KEY_ROTATED
            and ev.details.get("to") == fp):
        raise AuditKeyError(
            f"the audit key record says {describe(fp)} took over at seq {since}, but "
            f"evt-{since - 1} is no rotation to it: the state store was edited outside "
            "splitway; restore it from a backup")
