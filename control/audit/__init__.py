"""The tamper-evident audit log (contract §12).

:mod:`control.audit.chain` is the pure hash-chain core (events, hashing,
:func:`verify_chain`); :mod:`control.audit.log` is :class:`AuditLog`, its async shell over
a :class:`control.store.Store`. Event ids are ``"evt-<seq>"`` where ``seq`` is the
chain position (1, 2, 3...). :mod:`control.audit.params` parses the filters and pages
the admin API and the CLI accept.
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
from control.audit.params import (
    Page,
    check_known,
    parse_cli_time,
    parse_filters,
    parse_page,
    parse_rfc3339,
)

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
    "Page",
    "Severity",
    "VerifyResult",
    "canonical_json",
    "chain_event",
    "check_known",
    "compute_hash",
    "format_ts",
    "parse_cli_time",
    "parse_filters",
    "parse_page",
    "parse_rfc3339",
    "utc_now",
    "verify_chain",
]
