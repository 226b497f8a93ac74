"""The pure compliance report: production changes cross-checked against approvals,
exits from production, rollbacks, violations, the period's bounds, JSON and Markdown."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from control.audit import AuditEvent, VerifyResult, chain_event, verify_chain
from control.compliance import ComplianceReport, compliance_report

T0 = datetime(2024, 5, 1, tzinfo=UTC)
OK = VerifyResult(True, 0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def iso(minutes: float) -> str:
    return at(minutes).isoformat().replace("+00:00", "Z")


Spec = tuple[float, str, str, str, dict[str, Any]]


def chain(*specs: Spec) -> list[AuditEvent]:
    events: list[AuditEvent] = []
    for minutes, etype, actor, resource, details in specs:
        events.append(chain_event(events[-1] if events else None, ts=at(minutes), type=etype,
                                  actor=actor, resource=resource, details=details))
    return events


def request(minutes: float, pid: str = "p1", by: str = "alice") -> Spec:
    return (minutes, "approval.requested", by, f"promotion/{pid}", {
        "promotion_id": pid, "model": "m", "version": "2.0.0", "from_stage": "staging",
        "to_stage": "production", "justification": "better", "requested_by": by})


def grant(minutes: float, user: str, pid: str = "p1", required: int = 2) -> Spec:
    return (minutes, "approval.granted", user, f"promotion/{pid}", {
        "promotion_id": pid, "model": "m", "version": "2.0.0", "to_stage": "production",
        "approver": user, "comment": "lgtm", "approvals": 1, "required": required})


def change(minutes: float, approvers: list[tuple[str, float]], pid: str | None = "p1",
           by: str | None = "alice", to: str = "production", frm: str = "staging") -> Spec:
    return (minutes, "model.stage_changed", by or "system", "model/m@2.0.0", {
        "model": "m", "version": "2.0.0", "from": frm, "to": to, "promotion_id": pid,
        "requested_by": by, "requested_at": iso(0), "justification": "better | faster",
        "approved_by": [{"user": u, "at": iso(t)} for u, t in approvers]})


def report(events: list[AuditEvent], since: float | None = None,
           until: float | None = None, verification: VerifyResult = OK) -> ComplianceReport:
    return compliance_report(events, verification, None if since is None else at(since),
                             None if until is None else at(until), generated_at=at(999))


def test_an_approved_production_change_is_compliant() -> None:
    events = chain(request(0), grant(1, "bob"), grant(2, "carol"),
                   change(3, [("bob", 1), ("carol", 2)]))
    r = report(events, verification=verify_chain(events))
    assert r.compliant and r.counts["production_changes"] == 1
    c = r.production_changes[0]
    assert (c.model, c.version, c.from_stage, c.promotion_id) == ("m", "2.0.0", "staging", "p1")
    assert (c.requested_by, c.requested_at, c.justification) == ("alice", iso(0),
                                                                  "better | faster")
    assert [(a.user, a.at) for a in c.approved_by] == [("bob", iso(1)), ("carol", iso(2))]
    assert [a.user for a in c.logged_approvals] == ["bob", "carol"]
    assert c.at == events[-1].ts and c.event_id == events[-1].id and c.issues == ()
    doc = r.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["verification"] == {"ok": True, "checked": 4, "first_bad_event": None,
                                  "reason": None}
    assert doc["production_changes"][0]["compliant"] is True
    assert doc["production_changes"][0]["approved_by"][0] == {"user": "bob", "at": iso(1)}
    assert doc["period"] == {"since": None, "until": None}
    assert doc["generated_at"] == "2024-05-01T16:39:00.000000Z"


@pytest.mark.parametrize(("specs", "issues"), [
    pytest.param([request(0), grant(1, "bob"), change(3, [("bob", 1), ("carol", 2)])],
                 ["approval by carol is missing from the audit log",
                  "the log holds 1 of 2 required approvals"], id="an-approval-missing"),
    pytest.param([request(0), change(3, [("bob", 1), ("carol", 2)])],
                 ["approval by bob is missing", "approval by carol is missing"],
                 id="every-approval-missing"),
    pytest.param([request(0), change(3, [])], ["no approvals are recorded"],
                 id="no-approvals-at-all"),
    pytest.param([change(3, [("bob", 1)], pid=None)],
                 ["names no promotion", "approval by bob is missing"], id="no-promotion"),
    pytest.param([request(0), grant(1, "bob", required=1), change(3, [("bob", 1)], by=None)],
                 ["the requester is not recorded"], id="no-requester"),
    pytest.param([request(0), grant(1, "alice", required=1), change(3, [("alice", 1)])],
                 ["alice approved their own request"], id="self-approval"),
    pytest.param([request(0), grant(1, "bob"), change(3, [("bob", 1), ("carol", 2)]),
                  grant(5, "carol")],
                 ["approval by carol was logged after the change",
                  "the log holds 1 of 2 required approvals"], id="approval-after-change"),
    pytest.param([grant(1, "bob", required=1), change(3, [("bob", 1)])],
                 ["the promotion request is missing"], id="request-missing"),
    pytest.param([request(0, by="mallory"), grant(1, "bob", required=1),
                  change(3, [("bob", 1)])],
                 ["requested_by differs from the logged request (mallory)"],
                 id="requester-mismatch"),
    pytest.param([request(0), grant(1, "bob", required=1),
                  (2, "approval.rejected", "carol", "promotion/p1",
                   {"promotion_id": "p1", "approver": "carol", "comment": "no"}),
                  change(3, [("bob", 1)])],
                 ["the promotion was rejected by carol"], id="rejected"),
    pytest.param([request(0, pid="p2"), grant(1, "bob", pid="p2"), grant(2, "carol", pid="p2"),
                  request(0.5), change(3, [("bob", 1), ("carol", 2)])],
                 ["approval by bob is missing", "approval by carol is missing"],
                 id="approvals-of-another-promotion"),
])
def test_flagged_production_changes(specs: list[Spec], issues: list[str]) -> None:
    r = report(chain(*specs))
    assert len(r.production_changes) == 1
    c = r.production_changes[0]
    assert not c.compliant and not r.compliant
    assert r.counts["non_compliant_changes"] == 1
    for expected in issues:
        assert any(expected in issue for issue in c.issues), (expected, c.issues)
    assert len(c.issues) == len(issues), c.issues
    assert r.to_json()["production_changes"][0]["compliant"] is False


def test_malformed_details_are_flagged_not_fatal() -> None:
    events = chain((1, "model.stage_changed", "x", "model/m@1", {
        "to": "production", "approved_by": "bob", "promotion_id": 7}),
        (2, "rollout.rolled_back", "controller", "route/r", {}),
        (3, "security.violation", "anonymous", "api:/x", {}))
    r = report(events)
    c = r.production_changes[0]
    assert (c.model, c.version, c.promotion_id, c.approved_by) == ("?", "?", "7", ())
    assert "no approvals are recorded on the change" in c.issues
    assert r.rollbacks[0].reason is None and r.security_violations[0].detail is None
    assert "# Compliance report" in r.to_markdown()


def test_rollbacks_violations_and_exits_from_production() -> None:
    events = chain(
        (1, "rollout.rolled_back", "controller", "route/sentiment",
         {"route": "sentiment", "candidate": "canary", "reason": "error_rate 5% > 1%"}),
        (2, "model.rolled_back", "olga", "model/m@2.0.0",
         {"model": "m", "version": "2.0.0", "reason": "bad outputs"}),
        (3, "security.violation", "anonymous", "api:/api/v1/routes",
         {"detail": "bad token", "method": "GET"}),
        change(4, [], pid="p9", to="staging", frm="production"),
        (5, "model.archived", "olga", "model/m@1.0.0",
         {"model": "m", "version": "1.0.0", "from": "production", "reason": "superseded",
          "promotion_id": "p3"}),
        (6, "model.archived", "olga", "model/m@0.9.0",
         {"model": "m", "version": "0.9.0", "from": "staging", "reason": "old"}),
        change(7, [], to="staging", frm="development"),
        (8, "weights.changed", "olga", "route/sentiment", {"weights": {"a": 1}}))
    r = report(events)
    assert r.compliant  # no production change to flag
    assert [(x.type, x.target, x.reason) for x in r.rollbacks] == [
        ("rollout.rolled_back", "sentiment: canary", "error_rate 5% > 1%"),
        ("model.rolled_back", "m@2.0.0", "bad outputs")]
    assert [(v.actor, v.severity, v.detail) for v in r.security_violations] == [
        ("anonymous", "info", "bad token")]
    assert [(x.version, x.to_stage, x.reason) for x in r.production_exits] == [
        ("2.0.0", "staging", "better | faster"), ("1.0.0", "archived", "superseded")]
    assert dict(r.counts) == {"stage_changes": 2, "production_changes": 0,
                              "non_compliant_changes": 0, "production_exits": 2,
                              "rollbacks": 2, "security_violations": 1}


def test_period_bounds_since_inclusive_until_exclusive() -> None:
    events = chain(
        request(0), grant(1, "bob"), grant(2, "carol"),  # approved before the period
        change(10, [("bob", 1), ("carol", 2)]),  # exactly at since: in
        (15, "security.violation", "x", "api:/a", {"detail": "in"}),
        (20, "security.violation", "x", "api:/b", {"detail": "at until: out"}),
        (5, "rollout.rolled_back", "c", "route/r", {"reason": "before: out"}))
    r = report(events, since=10, until=20)
    assert len(r.production_changes) == 1 and r.production_changes[0].compliant
    assert [v.detail for v in r.security_violations] == ["in"]
    assert r.rollbacks == ()
    assert r.to_json()["period"] == {"since": "2024-05-01T00:10:00.000000Z",
                                     "until": "2024-05-01T00:20:00.000000Z"}
    later = report(events, since=10.001)
    assert later.production_changes == () and len(later.security_violations) == 2


def test_a_broken_chain_makes_the_report_non_compliant() -> None:
    events = chain(request(0), grant(1, "bob"), grant(2, "carol"),
                   change(3, [("bob", 1), ("carol", 2)]))
    broken = VerifyResult(False, 2, "evt-2", 2, "hash does not match the event's contents")
    r = report(events, verification=broken)
    assert r.production_changes[0].compliant and not r.compliant
    assert r.to_json()["verification"] == {"ok": False, "checked": 2, "first_bad_event": "evt-2",
                                           "reason": "hash does not match the event's contents"}
    md = r.to_markdown()
    assert "**BROKEN** at evt-2" in md and "NOT compliant" in md


def test_markdown_lists_everything_and_escapes_cells() -> None:
    events = chain(request(0), grant(1, "bob"), change(3, [("bob", 1), ("carol", 2)]),
                   (4, "rollout.rolled_back", "controller", "route/r",
                    {"route": "r", "candidate": "canary", "reason": "p99\nratio 2.0"}),
                   (5, "security.violation", "eve", "api:/api/v1/audit",
                    {"detail": "user 'eve' does not have the viewer role"}))
    md = report(events, since=0, until=60).to_markdown()
    assert md.startswith("# Compliance report\n")
    assert "- Period: 2024-05-01T00:00:00.000000Z to 2024-05-01T01:00:00.000000Z" in md
    assert "| m@2.0.0 | staging | alice |" in md
    assert "better \\| faster" in md  # a pipe cannot split the table
    assert "bob (2024-05-01T00:01:00Z), carol (2024-05-01T00:02:00Z)" in md
    assert "FLAGGED" in md and "approval by carol is missing from the audit log" in md
    assert "p99 ratio 2.0" in md  # a newline cannot end the row
    assert "eve" in md and "## Security violations (1)" in md
    assert "## Left production (0)\n\nNone in this period." in md


def test_aggregated_violations_count_every_refusal() -> None:
    # One aggregated event stands for details.count refusals; a self-approval stands for
    # one; a count that is not a positive integer (a tampered or odd row) counts as one.
    events = chain(
        (1, "security.violation", "anonymous", "api:/api/v1/routes",
         {"source": "127.0.0.1", "kind": "bad token", "count": 2999, "detail": "bad token"}),
        (2, "security.violation", "alice", "promotion/p1", {"detail": "self-approval"}),
        (3, "security.violation", "anonymous", "api:/x", {"count": True}),
        (4, "security.violation", "anonymous", "api:/x", {"count": 0}))
    r = report(events)
    assert [v.count for v in r.security_violations] == [2999, 1, 1, 1]
    assert r.counts["security_violations"] == 3002
    assert r.to_json()["security_violations"][0]["count"] == 2999
