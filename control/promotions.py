"""Promotion requests and their reviews, over the state store.

The rules are in :mod:`control.approvals`; this module loads the facts inside a write
transaction (after ``tx.lock(REGISTRY_LOCK_KEY)``), asks the rules, and writes the
outcome together with its audit events, so a request, a review, the stage change it
triggers and the archiving of the superseded production version commit as one:

- ``approval.requested`` / ``approval.granted`` / ``approval.rejected`` /
  ``approval.cancelled`` / ``approval.commented`` on ``promotion/{id}``;
- ``model.stage_changed`` on ``model/{name}@{version}`` whenever a promotion applies
  (carrying who requested it, why, and who approved it and when);
- ``model.archived`` whenever a version enters ``archived``: by its own promotion
  (reason: the justification) or superseded by a new production version (reason
  ``superseded by {version}``);
- a self-approval attempt is refused (403) and recorded as ``security.violation``
  (severity ``warning``) in a transaction of its own, since the refused one rolls back.

One promotion may be pending per version at a time (a partial unique index backs it).
The record and its reads are in :mod:`control.promotion_record`.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from control.approvals import (
    Outcome,
    Policy,
    PromotionState,
    SelfApprovalError,
    Stage,
    decide_approval,
    decide_cancel,
    decide_rejection,
    decide_request,
    parse_target,
)
from control.audit import EventType, Severity
from control.auth import Principal
from control.promotion_record import (
    Promotion,
    check_promotion_id,
    load_promotion,
    promotion_from_rows,
)
from control.registry import REGISTRY_LOCK_KEY, Registry, set_stage
from proxy.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:
    from control.store import Row, Store, Transaction

MAX_TEXT = 4000


def _check_text(text: str | None, field: str, *, required: bool) -> str | None:
    if text is None or not text.strip():
        if required:
            raise InvalidInputError(f"{field} must not be empty", field=field)
        return None
    if len(text) > MAX_TEXT:
        raise InvalidInputError(f"{field}: at most {MAX_TEXT} characters", field=field)
    return text


class Promotions:
    """Request, review, cancel and comment on promotions under an approval policy."""

    def __init__(self, store: Store, policy: Policy) -> None:
        self.store = store
        self.policy = policy
        self.registry = Registry(store)

    def _event(self, p: Promotion, **extra: Any) -> dict[str, Any]:
        return {"promotion_id": p.id, "model": p.model, "version": p.version,
                "to_stage": str(p.to_stage), **extra}

    async def request(self, model: str, version: str, stage: str, justification: str,
                      requester: Principal) -> Promotion:
        """Open a promotion request (approved and applied at once when none is needed)."""
        target = parse_target(stage)
        reason = _check_text(justification, "justification", required=True)
        async with self.store.transaction() as tx:
            await tx.lock(REGISTRY_LOCK_KEY)
            current = (await self.registry.get(model, version, tx=tx)).stage
            outcome = decide_request(requester, current, target, self.policy)
            pending = await tx.fetchone(
                "SELECT id FROM promotions WHERE model = ? AND version = ? AND state = ?",
                (model, version, str(PromotionState.PENDING)))
            if pending is not None:
                raise ConflictError(f"{model}@{version} already has a pending promotion "
                                    f"{pending['id']}")
            pid, now = f"prm-{secrets.token_hex(6)}", self.store.now()
            await tx.execute(
                "INSERT INTO promotions (id, model, version, from_stage, to_stage, "
                "justification, requested_by, requested_at, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (pid, model, version, str(current), str(target), reason, requester.user, now,
                 str(PromotionState.PENDING)))
            await self.store.audit.append(
                tx, EventType.APPROVAL_REQUESTED, requester.user, f"promotion/{pid}",
                {"promotion_id": pid, "model": model, "version": version,
                 "from_stage": str(current), "to_stage": str(target),
                 "justification": reason, "requested_by": requester.user})
            if outcome.applies:
                await self._close(tx, await load_promotion(tx, pid), outcome, requester.user)
            return await load_promotion(tx, pid)

    async def approve(self, promotion_id: str, approver: Principal,
                      comment: str | None = None) -> Promotion:
        """Count one approval; on quorum the version changes stage in the same commit."""
        try:
            return await self._review(promotion_id, approver, comment, approve=True)
        except SelfApprovalError as exc:
            await self.store.audit.record(
                EventType.SECURITY_VIOLATION, approver.user, f"promotion/{promotion_id}",
                {"detail": exc.detail, "promotion_id": promotion_id, "user": approver.user},
                severity=Severity.WARNING)
            raise

    async def reject(self, promotion_id: str, approver: Principal,
                     comment: str | None = None) -> Promotion:
        """One rejection ends the request."""
        return await self._review(promotion_id, approver, comment, approve=False)

    async def _review(self, promotion_id: str, approver: Principal, comment: str | None,
                      *, approve: bool) -> Promotion:
        check_promotion_id(promotion_id)
        note = _check_text(comment, "comment", required=False)
        async with self.store.transaction() as tx:
            await tx.lock(REGISTRY_LOCK_KEY)
            p = await load_promotion(tx, promotion_id)
            if approve:
                current = (await self.registry.get(p.model, p.version, tx=tx)).stage
                outcome = decide_approval(p.facts(), approver, current, self.policy)
            else:
                outcome = decide_rejection(p.facts(), approver, self.policy)
            await tx.execute(
                "INSERT INTO promotion_reviews (promotion_id, reviewer, decision, comment, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (p.id, approver.user, "approve" if approve else "reject", note,
                 self.store.now()))
            await self.store.audit.append(
                tx, EventType.APPROVAL_GRANTED if approve else EventType.APPROVAL_REJECTED,
                approver.user, f"promotion/{p.id}",
                self._event(p, approver=approver.user, comment=note,
                            approvals=outcome.approvals, required=outcome.required))
            if outcome.state.terminal:
                await self._close(tx, await load_promotion(tx, p.id), outcome, approver.user)
            return await load_promotion(tx, p.id)

    async def cancel(self, promotion_id: str, user: Principal) -> Promotion:
        """The requester withdraws a pending request."""
        check_promotion_id(promotion_id)
        async with self.store.transaction() as tx:
            await tx.lock(REGISTRY_LOCK_KEY)
            p = await load_promotion(tx, promotion_id)
            outcome = decide_cancel(p.facts(), user, self.policy)
            await self.store.audit.append(
                tx, EventType.APPROVAL_CANCELLED, user.user, f"promotion/{p.id}",
                self._event(p, cancelled_by=user.user, approvals=outcome.approvals,
                            required=outcome.required))
            await self._close(tx, p, outcome, user.user)
            return await load_promotion(tx, p.id)

    async def comment(self, promotion_id: str, author: str, body: str) -> Promotion:
        """Add to a promotion's comment thread (any state, any authenticated user)."""
        check_promotion_id(promotion_id)
        text = _check_text(body, "comment", required=True)
        async with self.store.transaction() as tx:
            await tx.lock(REGISTRY_LOCK_KEY)
            p = await load_promotion(tx, promotion_id)
            seq = len(p.comments) + 1
            await tx.execute(
                "INSERT INTO promotion_comments (promotion_id, seq, author, body, at) "
                "VALUES (?, ?, ?, ?, ?)", (p.id, seq, author, text, self.store.now()))
            await self.store.audit.append(
                tx, EventType.APPROVAL_COMMENTED, author, f"promotion/{p.id}",
                self._event(p, author=author, comment=text))
            return await load_promotion(tx, p.id)

    async def _close(self, tx: Transaction, p: Promotion, outcome: Outcome, actor: str) -> None:
        now = self.store.now()
        await tx.execute("UPDATE promotions SET state = ?, closed_by = ?, closed_at = ? "
                         "WHERE id = ?", (str(outcome.state), actor, now, p.id))
        if outcome.applies:
            await self._apply(tx, p, actor, now)

    async def _apply(self, tx: Transaction, p: Promotion, actor: str, now: str) -> None:
        audit = self.store.audit
        if p.to_stage is Stage.PRODUCTION:
            prev = await tx.fetchone(
                "SELECT version FROM model_versions WHERE model = ? AND stage = ?",
                (p.model, str(Stage.PRODUCTION)))
            if prev is not None and prev["version"] != p.version:
                old = str(prev["version"])
                await set_stage(tx, p.model, old, Stage.ARCHIVED, p.id, now)
                await audit.append(
                    tx, EventType.MODEL_ARCHIVED, actor, f"model/{p.model}@{old}",
                    {"model": p.model, "version": old, "from": str(Stage.PRODUCTION),
                     "reason": f"superseded by {p.version}", "promotion_id": p.id})
        await set_stage(tx, p.model, p.version, p.to_stage, p.id, now)
        resource = f"model/{p.model}@{p.version}"
        await audit.append(
            tx, EventType.MODEL_STAGE_CHANGED, actor, resource,
            {"model": p.model, "version": p.version, "from": str(p.from_stage),
             "to": str(p.to_stage), "promotion_id": p.id, "requested_by": p.requested_by,
             "requested_at": p.requested_at, "justification": p.justification,
             "approved_by": [{"user": r.reviewer, "at": r.at} for r in p.approvals]})
        if p.to_stage is Stage.ARCHIVED:
            await audit.append(
                tx, EventType.MODEL_ARCHIVED, actor, resource,
                {"model": p.model, "version": p.version, "from": str(p.from_stage),
                 "reason": p.justification, "promotion_id": p.id})

    async def get(self, promotion_id: str) -> Promotion:
        """One promotion with its reviews and comments (404 when unknown)."""
        check_promotion_id(promotion_id)
        async with self.store.transaction(readonly=True) as tx:
            return await load_promotion(tx, promotion_id)

    async def query(self, *, state: PromotionState | None = None, model: str | None = None,
                   limit: int = 100) -> list[Promotion]:
        """Promotions, newest first, without their comment threads."""
        clauses, params = [], []
        if state is not None:
            clauses.append("p.state = ?")
            params.append(str(state))
        if model is not None:
            clauses.append("p.model = ?")
            params.append(model)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        async with self.store.transaction(readonly=True) as tx:
            rows = await tx.fetchall(
                f"SELECT p.* FROM promotions p {where} ORDER BY p.requested_at DESC, p.id "
                "LIMIT ?", (*params, limit))
            reviews = await tx.fetchall(
                f"SELECT r.* FROM promotion_reviews r JOIN promotions p "
                f"ON p.id = r.promotion_id {where} ORDER BY r.at, r.reviewer", params)
        by_id: dict[str, list[Row]] = {}
        for r in reviews:
            by_id.setdefault(r["promotion_id"], []).append(r)
        return [promotion_from_rows(row, by_id.get(row["id"], []), []) for row in rows]
