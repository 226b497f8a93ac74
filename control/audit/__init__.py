"""The tamper-evident audit log (contract §12).

:mod:`control.audit.chain` is the pure hash-chain core (events, hashing,
:func:`verify_chain`); :mod:`control.audit.log` is :class:`AuditLog`, its async shell over
a :class:`control.store.Store`. Event ids are ``"evt-<seq>"`` where ``seq`` is the
chain position (1, 2, 3...). :mod:`control.audit.params` parses the filters and pages
the admin API and the CLI accept.

Hardening: :mod:`control.audit.rows` reads stored rows strictly (an unreadable row is
tampering, never a crash); :mod:`control.audit.keys` and :mod:`control.audit.keystore`
keep the HMAC key's fingerprint with the chain and check it before any append;
:mod:`control.audit.verify` follows ``audit.key_rotated`` events across keys.
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
from control.audit.keys import AuditKeyError, Keyring, fingerprint, keyring_from_env
from control.audit.log import AUDIT_LOCK_KEY, AuditFilters, AuditLog
from control.audit.params import (
    parse_cli_time,
    parse_rfc3339,
)
from control.audit.rows import AuditRecord, UnreadableEvent, UnreadableRow, read_row
from control.audit.verify import ChainVerifier

__all__ = [
    "AUDIT_LOCK_KEY",
    "GENESIS_HASH",
    "AuditEvent",
    "AuditFilters",
    "AuditKeyError",
    "AuditLog",
    "AuditRecord",
    "ChainHead",
    "ChainLink",
    "ChainVerifier",
    "EventType",
    "ExportFormat",
    "Keyring",
    "Severity",
    "UnreadableEvent",
    "UnreadableRow",
    "VerifyResult",
    "canonical_json",
    "chain_event",
    "compute_hash",
    "fingerprint",
    "format_ts",
    "keyring_from_env",
    "parse_cli_time",
    "parse_rfc3339",
    "read_row",
    "utc_now",
    "verify_chain",
]
