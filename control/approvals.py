"""The promotion and approval rules, as pure functions (no I/O, no clock).

A version moves through stages only by promotion requests; the store-backed shell
(:mod:`control.promotions`) gathers the facts, asks a function here what happens, and
writes the outcome with its audit events in one transaction.

Stages and the transitions a promotion may ask for::

    development ──► staging ──► production
         │            ▲  │          │
         ▼            │  ▼          ▼
      archived ───────┘ archived  archived

- ``production`` only from ``staging`` (checked when requested and again when approved).
- ``archived`` from any other stage, with no approval needed (``required`` 0): the
  request applies at once. Archiving needs the operator role like any request.
- ``archived -> staging`` re-qualifies an old version (e.g. to roll back to it), with the
  staging approvals like any other promotion.
- A production promotion that is applied archives the model's previous production
  version (exactly one production version per model).

Reviews: only principals holding ``approver`` review; the requester never reviews their
own request (approving it is a :class:`SelfApprovalError`, audited as
``security.violation``; rejecting it is refused too: cancel instead); each approver
reviews once; one rejection ends the request; the requester (only) may cancel while it
is pending. The quorum is the policy's ``required`` for the target stage *at the time of
each decision* (a config reload applies to pending requests); when a request needs 0
approvals it is approved on the spot, and on quorum the stage changes by itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

from control.auth import Principal, Role
from proxy.errors import ConflictError, ForbiddenError, InvalidInputError


class Stage(StrEnum):
    """A model version's lifecycle stage."""

    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class PromotionState(StrEnum):
    """A promotion request's state; every state but ``pending`` is final."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not PromotionState.PENDING


#: The stages a promotion may move a version to, from each stage.
TRANSITIONS: Mapping[Stage, frozenset[Stage]] = {
    Stage.DEVELOPMENT: frozenset({Stage.STAGING, Stage.ARCHIVED}),
    Stage.STAGING: frozenset({Stage.PRODUCTION, Stage.ARCHIVED}),
    Stage.PRODUCTION: frozenset({Stage.ARCHIVED}),
    Stage.ARCHIVED: frozenset({Stage.STAGING}),
}


class SelfApprovalError(ForbiddenError):
    """A requester tried to approve their own promotion (403, a security violation)."""


K = TypeVar("K", bound=str)


class HasRequired(Protocol):
    @property
    def required(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Policy:
    """How many approvals each target stage needs (``approvals:`` in the config)."""

    required: Mapping[Stage, int] = field(
        default_factory=lambda: {Stage.STAGING: 1, Stage.PRODUCTION: 2})

    @classmethod
    def from_config(cls, approvals: Mapping[K, HasRequired]) -> Policy:
        """From ``Settings.approvals`` (``{"staging": ApprovalPolicy(required=1), ...}``)."""
        return cls({Stage(stage): int(p.required) for stage, p in approvals.items()})

    def required_for(self, stage: Stage) -> int:
        """Approvals needed to enter ``stage`` (archiving needs none)."""
        if stage is Stage.ARCHIVED:
            return 0
        return self.required.get(stage, 1)


@dataclass(frozen=True, slots=True)
class PromotionFacts:
    """What the rules need to know about a promotion request."""

    id: str
    from_stage: Stage
    to_stage: Stage
    requested_by: str
    state: PromotionState
    approvers: frozenset[str] = frozenset()  # who approved
    reviewers: frozenset[str] = frozenset()  # who approved or rejected


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a decision does: the request's new state and whether the stage changes now."""

    state: PromotionState
    approvals: int = 0
    required: int = 0

    @property
    def applies(self) -> bool:
        """Whether the version moves to the target stage in this transaction."""
        return self.state is PromotionState.APPROVED


def check_transition(current: Stage, target: Stage) -> None:
    """Refuse a move the stage graph does not have (409)."""
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none"
        hint = " (production only from staging)" if target is Stage.PRODUCTION else ""
        raise ConflictError(
            f"cannot promote from {current} to {target}{hint}; from {current}: {allowed}")


def parse_target(stage: str) -> Stage:
    """A requested target stage, or a 422 naming ``stage``."""
    try:
        target = Stage(stage)
    except ValueError:
        target = None
    if target is None or target is Stage.DEVELOPMENT:
        raise InvalidInputError(
            f"{stage!r} is not a target stage: use staging, production or archived",
            field="stage")
    return target


def decide_request(requester: Principal, current: Stage, target: Stage,
                   policy: Policy) -> Outcome:
    """A new request's outcome: pending, or approved at once when no approval is needed."""
    if not requester.has(Role.OPERATOR):
        raise ForbiddenError(f"user {requester.user!r} cannot request promotions (operator)")
    check_transition(current, target)
    required = policy.required_for(target)
    state = PromotionState.APPROVED if required == 0 else PromotionState.PENDING
    return Outcome(state, 0, required)


def _check_reviewable(promotion: PromotionFacts, reviewer: Principal) -> None:
    if promotion.state.terminal:
        raise ConflictError(f"promotion {promotion.id} is already {promotion.state}")
    if not reviewer.has(Role.APPROVER):
        raise ForbiddenError(f"user {reviewer.user!r} is not an approver")
    if reviewer.user in promotion.reviewers:
        raise ConflictError(f"user {reviewer.user!r} already reviewed promotion {promotion.id}")


def decide_approval(promotion: PromotionFacts, approver: Principal, current: Stage,
                    policy: Policy) -> Outcome:
    """One approval: refused (typed error) or counted; approved on quorum."""
    _check_reviewable(promotion, approver)
    if approver.user == promotion.requested_by:
        raise SelfApprovalError(
            f"user {approver.user!r} requested promotion {promotion.id} and cannot approve it")
    if current is not promotion.from_stage:
        raise ConflictError(
            f"the version is now {current}, not {promotion.from_stage} as when requested")
    check_transition(current, promotion.to_stage)
    count = len(promotion.approvers) + 1
    required = policy.required_for(promotion.to_stage)
    state = PromotionState.APPROVED if count >= required else PromotionState.PENDING
    return Outcome(state, count, required)


def decide_rejection(promotion: PromotionFacts, approver: Principal,
                     policy: Policy) -> Outcome:
    """One rejection ends the request."""
    _check_reviewable(promotion, approver)
    if approver.user == promotion.requested_by:
        raise ForbiddenError(
            f"user {approver.user!r} requested promotion {promotion.id}: cancel it instead")
    return Outcome(PromotionState.REJECTED, len(promotion.approvers),
                   policy.required_for(promotion.to_stage))


def decide_cancel(promotion: PromotionFacts, user: Principal, policy: Policy) -> Outcome:
    """Only the requester cancels, and only a pending request."""
    if user.user != promotion.requested_by or not user.has(Role.OPERATOR):
        raise ForbiddenError(f"only {promotion.requested_by!r}, who requested "
                             f"promotion {promotion.id}, can cancel it (operator)")
    if promotion.state.terminal:
        raise ConflictError(f"promotion {promotion.id} is already {promotion.state}")
    return Outcome(PromotionState.CANCELLED, len(promotion.approvers),
                   policy.required_for(promotion.to_stage))
