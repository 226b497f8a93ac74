"""The tamper-evident audit log (contract §12).

:mod:`control.audit.chain` is the pure hash-chain core (events, hashing,
:func:`verify_chain`); :mod:`control.audit.log` is :class:`AuditLog`, its async shell over
a :class:`control.store.Store`. Event ids are ``"evt-<seq>"`` where ``seq`` is the
chain position (1, 2, 3...).
"""

from control.audit.chain import (
    GENESIS_HASH,
    AuditEvent,
    ChainHead,
    ChainLink,
    EventType,
    ExportFormat,
    Severity,
    VerifyResult,
    canonical_json,
    chain_event,
    compute_hash,
    format_ts,
    utc_now,
    verify_chain,
)
from control.audit.log import AUDIT_LOCK_KEY, AuditFilters, AuditLog

__all__ = [
    "AUDIT_LOCK_KEY",
    "GENESIS_HASH",
    "AuditEvent",
    "AuditFilters",
    "AuditLog",
    "ChainHead",
    "ChainLink",
    "EventType",
    "ExportFormat",
    "Severity",
    "VerifyResult",
    "canonical_json",
    "chain_event",
    "compute_hash",
    "format_ts",
    "utc_now",
    "verify_chain",
]
