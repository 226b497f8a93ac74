"""Promotions, approvals and the deployment gate on real databases (SQLite and
PostgreSQL): every state change and its audit event, with the exact detail keys the
compliance report reads."""

from __future__ import annotations

from typing import Any

import pytest

from control.approvals import Policy, PromotionState, SelfApprovalError, Stage
from control.audit import AuditEvent
from control.auth import Principal, Role
from control.gate import GateRefusedError, may_serve, record_deployment
from control.model_version import NewVersion
from control.promotions import Promotions
from control.registry import Registry
from control.store import Store
from proxy.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError

ALICE = Principal("alice", frozenset({Role.OPERATOR, Role.APPROVER}))
OLGA = Principal("olga", frozenset({Role.OPERATOR}))
BOB = Principal("bob", frozenset({Role.APPROVER}))
CAROL = Principal("carol", frozenset({Role.APPROVER}))

REVIEW_KEYS = {"promotion_id", "model", "version", "to_stage", "approver", "comment",
               "approvals", "required"}


@pytest.fixture
async def service(store: Store) -> Promotions:
    reg = Registry(store)
    for v in ("1.0.0", "1.1.0"):
        await reg.register(NewVersion("sentiment", v, "sentiment-v1"), "alice")
    return Promotions(store, Policy({Stage.STAGING: 1, Stage.PRODUCTION: 2}))


async def events(store: Store, type: str) -> list[AuditEvent]:
    return await store.audit.query(type=type)


async def stage_of(store: Store, version: str) -> Stage:
    return (await Registry(store).get("sentiment", version)).stage


async def test_full_flow_with_exact_audit_details(store: Store, service: Promotions) -> None:
    p = await service.request("sentiment", "1.0.0", "staging", "offline eval ok", ALICE)
    assert p.state is PromotionState.PENDING and p.from_stage is Stage.DEVELOPMENT
    p = await service.approve(p.id, BOB, "looks fine")
    assert p.state is PromotionState.APPROVED and p.closed_by == "bob"
    prod = await service.request("sentiment", "1.0.0", "production", "canary clean", ALICE)
    with pytest.raises(SelfApprovalError):
        await service.approve(prod.id, ALICE)
    prod = await service.approve(prod.id, BOB)
    assert prod.state is PromotionState.PENDING and await stage_of(store, "1.0.0") == "staging"
    prod = await service.approve(prod.id, CAROL)
    assert prod.state is PromotionState.APPROVED
    assert await stage_of(store, "1.0.0") is Stage.PRODUCTION

    (requested, _) = await events(store, "approval.requested")
    assert requested.resource == f"promotion/{p.id}" and requested.actor == "alice"
    assert requested.details == {
        "promotion_id": p.id, "model": "sentiment", "version": "1.0.0",
        "from_stage": "development", "to_stage": "staging",
        "justification": "offline eval ok", "requested_by": "alice"}
    granted = await events(store, "approval.granted")
    assert [set(e.details) for e in granted] == [REVIEW_KEYS] * 3
    assert granted[0].details["comment"] == "looks fine"
    assert [(e.details["approver"], e.details["approvals"], e.details["required"])
            for e in granted] == [("bob", 1, 1), ("bob", 1, 2), ("carol", 2, 2)]
    changed = await events(store, "model.stage_changed")
    assert [(e.details["from"], e.details["to"]) for e in changed] == [
        ("development", "staging"), ("staging", "production")]
    last = changed[-1]
    assert last.resource == "model/sentiment@1.0.0" and last.actor == "carol"
    assert set(last.details) == {"model", "version", "from", "to", "promotion_id",
                                 "requested_by", "requested_at", "justification",
                                 "approved_by"}
    assert last.details["promotion_id"] == prod.id
    assert [a["user"] for a in last.details["approved_by"]] == ["bob", "carol"]
    assert last.details["requested_at"] == prod.requested_at
    (violation,) = await events(store, "security.violation")
    assert violation.severity == "warning" and violation.actor == "alice"
    assert violation.resource == f"promotion/{prod.id}"
    assert set(violation.details) == {"detail", "promotion_id", "user"}
    assert violation.details["promotion_id"] == prod.id
    assert violation.details["user"] == "alice"
    assert (await store.audit.verify()).ok


async def test_reject_cancel_comment(store: Store, service: Promotions) -> None:
    p = await service.request("sentiment", "1.0.0", "staging", "try", OLGA)
    p = await service.comment(p.id, "bob", "which dataset?")
    p = await service.comment(p.id, "olga", "the march one")
    assert [(c.seq, c.author) for c in p.comments] == [(1, "bob"), (2, "olga")]
    p = await service.reject(p.id, BOB, "needs more eval")
    assert p.state is PromotionState.REJECTED and p.reviews[0].decision == "reject"
    with pytest.raises(ConflictError):
        await service.approve(p.id, CAROL)
    assert await stage_of(store, "1.0.0") is Stage.DEVELOPMENT
    (rejected,) = await events(store, "approval.rejected")
    assert set(rejected.details) == REVIEW_KEYS and rejected.details["comment"] == (
        "needs more eval")
    commented = await events(store, "approval.commented")
    assert [e.details["comment"] for e in commented] == ["which dataset?", "the march one"]

    q = await service.request("sentiment", "1.0.0", "staging", "again", OLGA)
    with pytest.raises(ForbiddenError):
        await service.cancel(q.id, ALICE)  # not the requester
    q = await service.cancel(q.id, OLGA)
    assert q.state is PromotionState.CANCELLED and q.closed_by == "olga"
    with pytest.raises(ConflictError):
        await service.cancel(q.id, OLGA)
    (cancelled,) = await events(store, "approval.cancelled")
    assert cancelled.details["cancelled_by"] == "olga"
    assert cancelled.details["promotion_id"] == q.id
    assert [x.id for x in await service.query(state=PromotionState.CANCELLED)] == [q.id]
    assert len(await service.query(model="sentiment")) == 2
    assert await service.query(model="other") == []


async def test_one_pending_request_per_version(store: Store, service: Promotions) -> None:
    await service.request("sentiment", "1.0.0", "staging", "one", ALICE)
    with pytest.raises(ConflictError, match="pending"):
        await service.request("sentiment", "1.0.0", "archived", "two", ALICE)
    await service.request("sentiment", "1.1.0", "staging", "other version", ALICE)


async def test_requests_checked_at_request_time(service: Promotions) -> None:
    with pytest.raises(ConflictError, match="only from staging"):
        await service.request("sentiment", "1.0.0", "production", "skip staging", ALICE)
    with pytest.raises(InvalidInputError) as err:
        await service.request("sentiment", "1.0.0", "staging", "   ", ALICE)
    assert err.value.field == "justification"
    with pytest.raises(InvalidInputError) as err:
        await service.request("sentiment", "1.0.0", "qa", "x", ALICE)
    assert err.value.field == "stage"
    with pytest.raises(NotFoundError):
        await service.request("sentiment", "3.0.0", "staging", "x", ALICE)
    with pytest.raises(ForbiddenError):
        await service.request("sentiment", "1.0.0", "staging", "x", BOB)
    with pytest.raises(InvalidInputError) as err:
        await service.get("prm-../../etc")
    assert err.value.field == "id"
    with pytest.raises(NotFoundError):
        await service.get("prm-000000000000")


async def test_stage_checked_again_at_approval_time(store: Store, service: Promotions) -> None:
    p = await service.request("sentiment", "1.0.0", "staging", "x", ALICE)
    await service.approve(p.id, BOB)
    prod = await service.request("sentiment", "1.0.0", "production", "x", ALICE)
    async with store.transaction() as tx:  # the version moves behind the request's back
        await tx.execute("UPDATE model_versions SET stage = 'development' "
                         "WHERE version = '1.0.0'")
    with pytest.raises(ConflictError, match="now development"):
        await service.approve(prod.id, BOB)
    assert (await service.get(prod.id)).state is PromotionState.PENDING


async def test_archive_and_requalify(store: Store, service: Promotions) -> None:
    p = await service.request("sentiment", "1.1.0", "archived", "abandoned", OLGA)
    assert p.state is PromotionState.APPROVED  # archiving needs no approval
    assert await stage_of(store, "1.1.0") is Stage.ARCHIVED
    (archived,) = await events(store, "model.archived")
    assert archived.details == {"model": "sentiment", "version": "1.1.0",
                                "from": "development", "reason": "abandoned",
                                "promotion_id": p.id}
    back = await service.request("sentiment", "1.1.0", "staging", "needed again", OLGA)
    await service.approve(back.id, BOB)
    assert await stage_of(store, "1.1.0") is Stage.STAGING


async def test_zero_approval_policy_applies_on_request(store: Store) -> None:
    await Registry(store).register(NewVersion("m", "1.0.0", "b"), "alice")
    service = Promotions(store, Policy({Stage.STAGING: 0, Stage.PRODUCTION: 2}))
    p = await service.request("m", "1.0.0", "staging", "auto", OLGA)
    assert p.state is PromotionState.APPROVED and p.closed_by == "olga"
    assert (await Registry(store).get("m", "1.0.0")).stage is Stage.STAGING


async def test_gate_and_deployment_link(store: Store, service: Promotions) -> None:
    async def allowed(version: str, stage: str) -> bool:
        return (await may_serve(store, "sentiment", version, stage)).allowed

    assert await allowed("1.0.0", "development")
    assert not await allowed("1.0.0", "staging")
    assert not await allowed("9.9.9", "development")
    p = await service.request("sentiment", "1.0.0", "staging", "x", ALICE)
    await service.approve(p.id, BOB)
    decision = await may_serve(store, "sentiment", "1.0.0", Stage.STAGING)
    assert decision.allowed and decision.promotion_id == p.id
    assert not await allowed("1.0.0", "production")
    prod = await service.request("sentiment", "1.0.0", "production", "x", ALICE)
    await service.approve(prod.id, BOB)
    await service.approve(prod.id, CAROL)
    assert await allowed("1.0.0", "production") and await allowed("1.0.0", "staging")
    with pytest.raises(InvalidInputError):
        await may_serve(store, "sentiment", "1.0.0", "archived")

    async with store.transaction() as tx:
        decision = await record_deployment(store, tx, "sentiment", "1.0.0", "sentiment", "ro")
    assert decision.promotion_id == prod.id
    (deployed,) = await events(store, "model.deployed")
    assert deployed.details == {"model": "sentiment", "version": "1.0.0",
                                "route": "sentiment", "promotion_id": prod.id}
    # the link leads back to the approvals that allowed it
    granted = await store.audit.query(type="approval.granted", resource=f"promotion/{prod.id}")
    assert [e.details["approver"] for e in granted] == ["bob", "carol"]

    with pytest.raises(GateRefusedError):
        async with store.transaction() as tx:
            await record_deployment(store, tx, "sentiment", "1.1.0", "sentiment", "ro")
    assert len(await events(store, "model.deployed")) == 1


async def test_reviews_counted_once_under_concurrency(store: Store,
                                                      service: Promotions) -> None:
    import asyncio

    p = await service.request("sentiment", "1.0.0", "staging", "x", ALICE)
    results: list[Any] = await asyncio.gather(
        *(service.approve(p.id, who) for who in (BOB, CAROL, BOB)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 1  # the first approval applied; the others found it final
    assert all(isinstance(r, ConflictError) for r in results if isinstance(r, BaseException))
    assert len(await events(store, "model.stage_changed")) == 1
