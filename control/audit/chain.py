"""The pure core of the audit hash chain (contract §12): events, hashing, verification.

Every event carries ``seq`` (1, 2, 3... with no gaps), ``id`` (``"evt-<seq>"``, the name
the admin API reports), ``ts`` (UTC RFC 3339 with microseconds and a ``Z``), ``type``,
``actor``, ``severity``, ``resource``, ``details`` (a JSON object), ``prev_hash`` and
``hash``. ``hash`` is SHA-256 (hex) over the canonical JSON (sorted keys, no spaces,
UTF-8) of every other field, so it covers ``prev_hash`` and therefore the whole history;
the first event's ``prev_hash`` is 64 zeros. With an HMAC key the digest is
HMAC-SHA256 instead, so someone who can write to the database but lacks the key cannot
rebuild a consistent chain after editing it.

:func:`verify_chain` walks events in order and names the first one that breaks a rule:
its ``seq`` must follow the previous one (catches deletions, swaps, renumbering), its
``prev_hash`` must equal the previous ``hash`` (catches deletions and insertions) and its
``hash`` must match its contents (catches edits and forged rows). Dropping the newest
events (truncation) cannot be seen from the chain alone. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from control import strict_json
from proxy.errors import InvalidInputError

GENESIS_HASH = "0" * 64
#: Deepest ``details`` an event may have: refused on append, unreadable when stored.
MAX_DETAILS_DEPTH = 100


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class EventType(StrEnum):
    """The only event types the log accepts (contract §12)."""

    MODEL_REGISTERED = "model.registered"
    MODEL_STAGE_CHANGED = "model.stage_changed"
    MODEL_DEPLOYED = "model.deployed"
    MODEL_ROLLED_BACK = "model.rolled_back"
    MODEL_ARCHIVED = "model.archived"
    APPROVAL_REQUESTED = "approval.requested"
    APPROVAL_GRANTED = "approval.granted"
    APPROVAL_REJECTED = "approval.rejected"
    APPROVAL_CANCELLED = "approval.cancelled"
    APPROVAL_COMMENTED = "approval.commented"
    EXPERIMENT_CREATED = "experiment.created"
    EXPERIMENT_STARTED = "experiment.started"
    EXPERIMENT_STOPPED = "experiment.stopped"
    EXPERIMENT_CONCLUDED = "experiment.concluded"
    SHADOW_STARTED = "shadow.started"
    SHADOW_STOPPED = "shadow.stopped"
    ROLLOUT_STARTED = "rollout.started"
    ROLLOUT_STEP = "rollout.step"
    ROLLOUT_PAUSED = "rollout.paused"
    ROLLOUT_RESUMED = "rollout.resumed"
    ROLLOUT_PROMOTED = "rollout.promoted"
    ROLLOUT_SUCCEEDED = "rollout.succeeded"
    ROLLOUT_ROLLED_BACK = "rollout.rolled_back"
    ROLLOUT_ABORTED = "rollout.aborted"
    WEIGHTS_CHANGED = "weights.changed"
    CONFIG_RELOADED = "config.reloaded"
    ACCESS_GRANTED = "access.granted"
    ACCESS_REVOKED = "access.revoked"
    TOKENS_RELOADED = "tokens.reloaded"
    SECURITY_VIOLATION = "security.violation"
    DATA_ACCESS = "data.access"
    CONFIG_RELOAD_FAILED = "config.reload_failed"
    AUDIT_KEY_ROTATED = "audit.key_rotated"  # written only by AuditLog.rotate_key
    PRIVACY_ERASED = "privacy.erased"
    NOTIFICATION_DELIVERED = "notification.delivered"
    NOTIFICATION_FAILED = "notification.failed"
    ROLLOUT_INCONCLUSIVE = "rollout.inconclusive"


class ExportFormat(StrEnum):
    JSON = "json"
    JSONL = "jsonl"
    YAML = "yaml"
    CSV = "csv"


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_ts(dt: datetime) -> str:
    """``2024-05-01T12:00:00.000001Z``: fixed width, so string order is time order."""
    if dt.utcoffset() is None:
        raise ValueError("audit timestamps need an aware datetime")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(obj: Any) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def compute_hash(event_fields: Mapping[str, Any], key: bytes | None = None) -> str:
    """SHA-256 (or HMAC-SHA256 with ``key``) hex of the canonical JSON of the fields."""
    data = canonical_json(dict(event_fields)).encode("utf-8")
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


class ChainLink(Protocol):
    """What the next event links to: an :class:`AuditEvent` or a :class:`ChainHead`."""

    @property
    def seq(self) -> int: ...

    @property
    def hash(self) -> str: ...


class ChainHead(NamedTuple):
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuditEvent:
    seq: int
    id: str
    ts: str
    type: EventType
    actor: str
    severity: Severity
    resource: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def hashed_fields(self) -> dict[str, Any]:
        """Every field but ``hash``, as hashed."""
        return {
            "seq": self.seq, "id": self.id, "ts": self.ts, "type": str(self.type),
            "actor": self.actor, "severity": str(self.severity), "resource": self.resource,
            "details": self.details, "prev_hash": self.prev_hash,
        }  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {**self.hashed_fields(), "hash": self.hash}

    @property
    def timestamp(self) -> datetime:
        return datetime.fromisoformat(self.ts)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_event: str | None = None
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``GET /api/v1/audit/verify`` body: ``reason`` says what is wrong (or null)."""
        return {"ok": self.ok, "checked": self.checked,
                "first_bad_event": self.first_bad_event, "reason": self.reason}


def chain_event(
    prev: ChainLink | None,
    *,
    ts: datetime,
    type: EventType | str,
    actor: str,
    resource: str,
    details: Mapping[str, Any] | None = None,
    severity: Severity | str = Severity.INFO,
    key: bytes | None = None,
) -> AuditEvent:
    """The event that follows ``prev`` (``None``: the first event), with its hash."""
    try:
        etype = EventType(type)
    except ValueError:
        raise InvalidInputError(f"unknown audit event type {type!r}", field="type") from None
    try:
        sev = Severity(severity)
    except ValueError:
        raise InvalidInputError(f"unknown severity {severity!r}", field="severity") from None
    body = dict(details or {})
    if strict_json.depth(body, MAX_DETAILS_DEPTH) > MAX_DETAILS_DEPTH:
        raise InvalidInputError(f"details nested deeper than {MAX_DETAILS_DEPTH} levels",
                                field="details")
    try:
        text = canonical_json(body)
        text.encode("utf-8")  # a lone surrogate could be neither hashed nor read back
        body = json.loads(text)  # a private, JSON-clean copy
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"details must be JSON: {exc}", field="details") from exc
    for name, text in (("actor", actor), ("resource", resource)):
        if not _encodable(text):
            raise InvalidInputError(f"{name} must be UTF-8 text", field=name)
    seq = prev.seq + 1 if prev else 1
    draft = AuditEvent(
        seq=seq, id=f"evt-{seq}", ts=format_ts(ts), type=etype, actor=actor, severity=sev,
        resource=resource, details=body, prev_hash=prev.hash if prev else GENESIS_HASH,
        hash="",
    )  # fmt: skip
    return replace(draft, hash=compute_hash(draft.hashed_fields(), key))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def verify_chain(
    events: Iterable[AuditEvent],
    key: bytes | None = None,
    *,
    prev_hash: str = GENESIS_HASH,
    prev_seq: int = 0,
) -> VerifyResult:
    """Check events all signed with one ``key``, in order; ``prev_hash``/``prev_seq``
    continue a chain checked earlier. ``audit.key_rotated`` events get no special meaning
    here: :class:`control.audit.verify.ChainVerifier` follows rotations across keys."""
    checked = 0
    for ev in events:
        checked += 1
        reason = None
        if ev.seq != prev_seq + 1:
            reason = f"seq {ev.seq} does not follow {prev_seq}"
        elif ev.prev_hash != prev_hash:
            reason = "prev_hash is not the previous event's hash"
        elif not hmac.compare_digest(  # bytes: a tampered hash may be any text
            compute_hash(ev.hashed_fields(), key).encode(), ev.hash.encode("utf-8", "replace")
        ):
            reason = "hash does not match the event's contents"
        if reason is not None:
            return VerifyResult(False, checked, ev.id, ev.seq, reason)
        prev_seq, prev_hash = ev.seq, ev.hash
    return VerifyResult(True, checked)
