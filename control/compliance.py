"""The compliance report for a period, built only from audit events.

The auditor's source of truth is the tamper-evident chain, not the registry's tables:
:func:`compliance_report` is pure and reads nothing but :class:`AuditEvent` values and the
chain's :class:`VerifyResult`. It lists

- every production change (``model.stage_changed`` to ``production``): requester and
  time, approvers and times, justification, promotion — cross-checked against the
  ``approval.requested``/``granted``/``rejected`` events of the same ``promotion_id``.
  A change is flagged when an approval it names is missing from the log or was logged
  after it, when the log holds fewer approvals than required, when a requester approved
  their own request, when the promotion was rejected, or when it names no promotion;
- versions leaving production (to another stage, or ``model.archived``) with reasons;
- rollbacks (``rollout.rolled_back``, ``model.rolled_back``) with their reasons;
- security violations, and the chain's verification, which decides whether the rest
  can be trusted.

The period is ``since`` (inclusive) to ``until`` (exclusive), either open. Approvals are
matched across every event given, so pass approvals from before ``since`` too (a change
on Monday may have been approved on Friday).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from control.audit import AuditEvent, EventType, VerifyResult, format_ts, utc_now
from control.compliance_markdown import render_markdown

PRODUCTION = "production"
ROLLBACK_TYPES = (EventType.ROLLOUT_ROLLED_BACK, EventType.MODEL_ROLLED_BACK)


@dataclass(frozen=True, slots=True)
class Approval:
    user: str
    at: str | None


@dataclass(frozen=True, slots=True)
class ProductionChange:
    """One version moved to production, as the change event and the approvals record it."""

    event_id: str
    at: str
    actor: str
    model: str
    version: str
    from_stage: str | None
    promotion_id: str | None
    requested_by: str | None
    requested_at: str | None
    justification: str | None
    approved_by: tuple[Approval, ...]  # as the stage change states them
    logged_approvals: tuple[Approval, ...]  # approval.granted events of the promotion
    issues: tuple[str, ...] = ()

    @property
    def compliant(self) -> bool:
        return not self.issues


@dataclass(frozen=True, slots=True)
class ProductionExit:
    """A version that left production (archived, or moved to another stage)."""

    event_id: str
    at: str
    actor: str
    model: str
    version: str
    to_stage: str
    reason: str | None
    promotion_id: str | None


@dataclass(frozen=True, slots=True)
class Rollback:
    event_id: str
    at: str
    type: str
    actor: str
    resource: str
    target: str  # the route's candidate, or model@version
    reason: str | None


@dataclass(frozen=True, slots=True)
class SecurityViolation:
    event_id: str
    at: str
    actor: str
    resource: str
    severity: str
    detail: str | None
    count: int = 1  # refusals the event stands for (aggregated: its ``details.count``)


@dataclass(frozen=True, slots=True)
class ComplianceReport:
    since: datetime | None
    until: datetime | None
    generated_at: datetime
    verification: VerifyResult
    production_changes: tuple[ProductionChange, ...] = ()
    production_exits: tuple[ProductionExit, ...] = ()
    rollbacks: tuple[Rollback, ...] = ()
    security_violations: tuple[SecurityViolation, ...] = ()
    counts: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def compliant(self) -> bool:
        """The chain verifies and every production change is fully approved in the log."""
        return self.verification.ok and all(c.compliant for c in self.production_changes)

    def to_json(self) -> dict[str, Any]:
        """The ``GET /api/v1/reports/compliance`` body (a JSON-ready dict)."""
        return {
            "period": {"since": _ts(self.since), "until": _ts(self.until)},
            "generated_at": format_ts(self.generated_at),
            "compliant": self.compliant,
            "verification": self.verification.to_dict(),
            "counts": dict(self.counts),
            "production_changes": [
                {**_plain(c), "compliant": c.compliant} for c in self.production_changes
            ],
            "production_exits": [_plain(x) for x in self.production_exits],
            "rollbacks": [_plain(r) for r in self.rollbacks],
            "security_violations": [_plain(v) for v in self.security_violations],
        }

    def to_markdown(self) -> str:
        """The report as Markdown (:func:`control.compliance_markdown.render_markdown`)."""
        return render_markdown(self.to_json())


def compliance_report(
    events: Sequence[AuditEvent],
    verification: VerifyResult,
    since: datetime | None,
    until: datetime | None,
    *,
    generated_at: datetime | None = None,
) -> ComplianceReport:
    """The report for ``since <= ts < until`` from ``events`` (any order, any types)."""
    ordered = sorted(events, key=lambda e: e.seq)
    granted: dict[str, list[AuditEvent]] = defaultdict(list)
    requested: dict[str, AuditEvent] = {}
    rejected: dict[str, AuditEvent] = {}
    for ev in ordered:
        pid = _str(ev.details.get("promotion_id"))
        if pid is None:
            continue
        if ev.type is EventType.APPROVAL_GRANTED:
            granted[pid].append(ev)
        elif ev.type is EventType.APPROVAL_REQUESTED:
            requested.setdefault(pid, ev)
        elif ev.type is EventType.APPROVAL_REJECTED:
            rejected.setdefault(pid, ev)

    changes: list[ProductionChange] = []
    exits: list[ProductionExit] = []
    rollbacks: list[Rollback] = []
    violations: list[SecurityViolation] = []
    stage_changes = 0
    for ev in ordered:
        if not _in_period(ev, since, until):
            continue
        d = ev.details
        if ev.type is EventType.MODEL_STAGE_CHANGED:
            stage_changes += 1
            if d.get("to") == PRODUCTION:
                changes.append(_production_change(ev, granted, requested, rejected))
            elif d.get("from") == PRODUCTION:
                exits.append(_exit(ev, _str(d.get("to")) or "?", _str(d.get("justification"))))
        elif ev.type is EventType.MODEL_ARCHIVED and d.get("from") == PRODUCTION:
            exits.append(_exit(ev, "archived", _str(d.get("reason"))))
        elif ev.type in ROLLBACK_TYPES:
            rollbacks.append(_rollback(ev))
        elif ev.type is EventType.SECURITY_VIOLATION:
            violations.append(SecurityViolation(
                ev.id, ev.ts, ev.actor, ev.resource, str(ev.severity), _str(d.get("detail")),
                _count(d.get("count"))))
    counts = MappingProxyType({
        "stage_changes": stage_changes, "production_changes": len(changes),
        "non_compliant_changes": sum(not c.compliant for c in changes),
        "production_exits": len(exits), "rollbacks": len(rollbacks),
        "security_violations": sum(v.count for v in violations)})
    return ComplianceReport(
        since, until, generated_at or utc_now(), verification, tuple(changes), tuple(exits),
        tuple(rollbacks), tuple(violations), counts,
    )


def _count(value: object) -> int:
    """An aggregated violation's count; an event without one (a self-approval) is one."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _production_change(
    ev: AuditEvent,
    granted: Mapping[str, list[AuditEvent]],
    requested: Mapping[str, AuditEvent],
    rejected: Mapping[str, AuditEvent],
) -> ProductionChange:
    d = ev.details
    pid = _str(d.get("promotion_id"))
    requested_by = _str(d.get("requested_by"))
    stated = _approvals(d.get("approved_by"))
    logged_events = granted.get(pid, []) if pid else []
    logged = tuple(Approval(_str(g.details.get("approver")) or g.actor, g.ts)
                   for g in logged_events)
    issues: list[str] = []
    if pid is None:
        issues.append("names no promotion: the change was not approved through one")
    if requested_by is None:
        issues.append("the requester is not recorded")
    if not stated:
        issues.append("no approvals are recorded on the change")
    logged_at = {a.user: a.at for a in logged}
    for a in stated:
        if a.user not in logged_at:
            issues.append(f"approval by {a.user} is missing from the audit log")
        elif _after(logged_at[a.user], ev.ts):
            issues.append(f"approval by {a.user} was logged after the change")
        if requested_by is not None and a.user == requested_by:
            issues.append(f"{a.user} approved their own request")
    if pid is not None:
        required = max((r for g in logged_events if isinstance(r := g.details.get("required"), int)
                        and not isinstance(r, bool)), default=0)
        before = {a.user for a in logged if not _after(a.at, ev.ts)}
        if len(before) < required:
            issues.append(f"the log holds {len(before)} of {required} required approvals")
        request = requested.get(pid)
        if request is None:
            issues.append("the promotion request is missing from the audit log")
        elif requested_by is not None and request.details.get("requested_by") != requested_by:
            issues.append("requested_by differs from the logged request "
                          f"({request.details.get('requested_by')})")
        if (rej := rejected.get(pid)) is not None and not _after(rej.ts, ev.ts):
            by = _str(rej.details.get("approver")) or rej.actor
            issues.append(f"the promotion was rejected by {by}")
    return ProductionChange(
        ev.id, ev.ts, ev.actor, _str(d.get("model")) or "?", _str(d.get("version")) or "?",
        _str(d.get("from")), pid, requested_by, _str(d.get("requested_at")),
        _str(d.get("justification")), stated, logged, tuple(dict.fromkeys(issues)),
    )


def _exit(ev: AuditEvent, to_stage: str, reason: str | None) -> ProductionExit:
    d = ev.details
    return ProductionExit(ev.id, ev.ts, ev.actor, _str(d.get("model")) or "?",
                          _str(d.get("version")) or "?", to_stage, reason,
                          _str(d.get("promotion_id")))


def _rollback(ev: AuditEvent) -> Rollback:
    d = ev.details
    if ev.type is EventType.ROLLOUT_ROLLED_BACK:
        target = f"{d.get('route', ev.resource)}: {d.get('candidate', '?')}"
    else:
        target = f"{d.get('model', '?')}@{d.get('version', '?')}"
    return Rollback(ev.id, ev.ts, str(ev.type), ev.actor, ev.resource, target,
                    _str(d.get("reason")))


def _approvals(value: Any) -> tuple[Approval, ...]:
    """``approved_by`` as written ([{user, at}]); anything malformed is dropped."""
    items = value if isinstance(value, list) else []
    return tuple(Approval(str(i["user"]), _str(i.get("at"))) for i in items
                 if isinstance(i, Mapping) and _str(i.get("user")))


def _in_period(ev: AuditEvent, since: datetime | None, until: datetime | None) -> bool:
    ts = ev.timestamp
    return (since is None or ts >= since) and (until is None or ts < until)


def _after(a: str | None, b: str) -> bool:
    """Whether time ``a`` is later than ``b`` (unknown or unreadable: not later)."""
    try:
        return a is not None and datetime.fromisoformat(a) > datetime.fromisoformat(b)
    except (ValueError, TypeError):
        return False


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else format_ts(dt)


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in obj.__slots__:
        value = getattr(obj, name)
        if isinstance(value, tuple):
            value = [{"user": a.user, "at": a.at} if isinstance(a, Approval) else a
                     for a in value]
        out[name] = value
    return out
