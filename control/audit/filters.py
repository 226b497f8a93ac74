"""The filters every audit read takes, as SQL over the ``audit_events`` columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypedDict

from control.audit.chain import Severity, format_ts
from proxy.errors import InvalidInputError


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


def where_clauses(filters: AuditFilters) -> tuple[list[str], list[Any]]:
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
