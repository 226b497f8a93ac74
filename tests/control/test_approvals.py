"""The promotion and approval rules (control.approvals) as one table: each row names
the rule it checks, the decision asked, and the outcome or the error expected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from control.approvals import (
    TRANSITIONS,
    Outcome,
    Policy,
    PromotionFacts,
    PromotionState,
    SelfApprovalError,
    Stage,
    check_transition,
    decide_approval,
    decide_cancel,
    decide_rejection,
    decide_request,
    parse_target,
)
from control.auth import Principal, Role
from proxy.errors import ApiError, ConflictError, ForbiddenError, InvalidInputError

D, S, P, A = Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED
PENDING, APPROVED = PromotionState.PENDING, PromotionState.APPROVED
REJECTED, CANCELLED = PromotionState.REJECTED, PromotionState.CANCELLED


def who(user: str, *roles: Role) -> Principal:
    return Principal(user, frozenset(roles))


ALICE = who("alice", Role.OPERATOR, Role.APPROVER)  # requests; also an approver
BOB = who("bob", Role.APPROVER, Role.VIEWER)
CAROL = who("carol", Role.APPROVER)
DAVE = who("dave", Role.APPROVER)
OLGA = who("olga", Role.OPERATOR)
VIC = who("vic", Role.VIEWER)
ADA = who("ada", Role.ADMIN)

POLICY = Policy({S: 1, P: 2})
TO_PROD = PromotionFacts("prm-000000000001", S, P, "alice", PENDING)


def approved_by(facts: PromotionFacts, *users: str) -> PromotionFacts:
    return replace(facts, approvers=frozenset(users), reviewers=frozenset(users))


@dataclass(frozen=True)
class Row:
    rule: str
    decide: Callable[[], Outcome]
    expect: Outcome | type[ApiError]


ROWS = [
    Row("an operator requests development -> staging; it waits for 1 approval",
        lambda: decide_request(OLGA, D, S, POLICY), Outcome(PENDING, 0, 1)),
    Row("a stage whose policy requires 0 approvals is approved on request",
        lambda: decide_request(OLGA, D, S, Policy({S: 0, P: 2})), Outcome(APPROVED, 0, 0)),
    Row("staging -> production waits for the production quorum",
        lambda: decide_request(OLGA, S, P, POLICY), Outcome(PENDING, 0, 2)),
    Row("production only from staging: development -> production is refused",
        lambda: decide_request(OLGA, D, P, POLICY), ConflictError),
    Row("production only from staging: archived -> production is refused",
        lambda: decide_request(OLGA, A, P, POLICY), ConflictError),
    Row("no demotion: production -> staging is refused",
        lambda: decide_request(OLGA, P, S, POLICY), ConflictError),
    Row("a version is not promoted to the stage it is in",
        lambda: decide_request(OLGA, S, S, POLICY), ConflictError),
    Row("archiving needs no approval, from any live stage",
        lambda: decide_request(OLGA, P, A, POLICY), Outcome(APPROVED, 0, 0)),
    Row("an archived version re-qualifies through staging, with approval",
        lambda: decide_request(OLGA, A, S, POLICY), Outcome(PENDING, 0, 1)),
    Row("only operators request: a viewer is refused",
        lambda: decide_request(VIC, D, S, POLICY), ForbiddenError),
    Row("only operators request: an approver without operator is refused",
        lambda: decide_request(BOB, D, S, POLICY), ForbiddenError),
    Row("a requester never approves their own request",
        lambda: decide_approval(TO_PROD, ALICE, S, POLICY), SelfApprovalError),
    Row("not even an admin approves their own request",
        lambda: decide_approval(replace(TO_PROD, requested_by="ada"), ADA, S, POLICY),
        SelfApprovalError),
    Row("only approvers approve: an operator is refused",
        lambda: decide_approval(TO_PROD, OLGA, S, POLICY), ForbiddenError),
    Row("only approvers approve: a viewer is refused",
        lambda: decide_approval(TO_PROD, VIC, S, POLICY), ForbiddenError),
    Row("the first of two approvals leaves the request pending",
        lambda: decide_approval(TO_PROD, BOB, S, POLICY), Outcome(PENDING, 1, 2)),
    Row("the approval that reaches quorum approves (and applies) the request",
        lambda: decide_approval(approved_by(TO_PROD, "bob"), CAROL, S, POLICY),
        Outcome(APPROVED, 2, 2)),
    Row("each approver counts once: a second approval is refused",
        lambda: decide_approval(approved_by(TO_PROD, "bob"), BOB, S, POLICY), ConflictError),
    Row("production only from staging, checked again at approval time",
        lambda: decide_approval(TO_PROD, BOB, D, POLICY), ConflictError),
    Row("a version archived since the request cannot be approved into production",
        lambda: decide_approval(TO_PROD, BOB, A, POLICY), ConflictError),
    Row("the quorum is the policy at decision time (raised to 3)",
        lambda: decide_approval(approved_by(TO_PROD, "bob"), CAROL, S, Policy({P: 3})),
        Outcome(PENDING, 2, 3)),
    Row("the quorum is the policy at decision time (lowered to 1)",
        lambda: decide_approval(TO_PROD, BOB, S, Policy({P: 1})), Outcome(APPROVED, 1, 1)),
    Row("a rejected request is final: no more approvals",
        lambda: decide_approval(replace(TO_PROD, state=REJECTED), BOB, S, POLICY),
        ConflictError),
    Row("a cancelled request is final: no more approvals",
        lambda: decide_approval(replace(TO_PROD, state=CANCELLED), BOB, S, POLICY),
        ConflictError),
    Row("an approved request is final: no more approvals",
        lambda: decide_approval(replace(TO_PROD, state=APPROVED), DAVE, P, POLICY),
        ConflictError),
    Row("one rejection ends the request, even after approvals",
        lambda: decide_rejection(approved_by(TO_PROD, "bob"), CAROL, POLICY),
        Outcome(REJECTED, 1, 2)),
    Row("a requester does not reject their own request (they cancel it)",
        lambda: decide_rejection(TO_PROD, ALICE, POLICY), ForbiddenError),
    Row("only approvers reject",
        lambda: decide_rejection(TO_PROD, OLGA, POLICY), ForbiddenError),
    Row("each approver reviews once: approving then rejecting is refused",
        lambda: decide_rejection(approved_by(TO_PROD, "bob"), BOB, POLICY), ConflictError),
    Row("the requester can cancel a pending request",
        lambda: decide_cancel(approved_by(TO_PROD, "bob"), ALICE, POLICY),
        Outcome(CANCELLED, 1, 2)),
    Row("only the requester cancels: an approver is refused",
        lambda: decide_cancel(TO_PROD, BOB, POLICY), ForbiddenError),
    Row("only the requester cancels: not even an admin",
        lambda: decide_cancel(TO_PROD, ADA, POLICY), ForbiddenError),
    Row("a final request cannot be cancelled",
        lambda: decide_cancel(replace(TO_PROD, state=APPROVED), ALICE, POLICY), ConflictError),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.rule for row in ROWS])
def test_rule(row: Row) -> None:
    if isinstance(row.expect, Outcome):
        assert row.decide() == row.expect
    else:
        with pytest.raises(row.expect):
            row.decide()


def test_self_approval_is_a_403() -> None:
    with pytest.raises(ForbiddenError) as err:
        decide_approval(TO_PROD, ALICE, S, POLICY)
    assert err.value.status == 403 and "alice" in err.value.detail


def test_outcome_applies_only_when_approved() -> None:
    assert Outcome(APPROVED).applies
    assert not any(Outcome(s).applies for s in (PENDING, REJECTED, CANCELLED))


@pytest.mark.parametrize("bad", ["development", "prod", "", "Production"])
def test_target_stage_must_be_one_a_promotion_can_reach(bad: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        parse_target(bad)
    assert err.value.field == "stage"


def test_transition_graph() -> None:
    """Production is reachable from staging only; archived from every live stage."""
    for current in Stage:
        for target in Stage:
            allowed = target in TRANSITIONS[current]
            assert allowed == (
                (target is P and current is S)
                or (target is S and current in (D, A))
                or (target is A and current is not A)), (current, target)
            if not allowed:
                with pytest.raises(ConflictError):
                    check_transition(current, target)


def test_policy_from_config() -> None:
    from proxy.config import ApprovalPolicy

    policy = Policy.from_config({"staging": ApprovalPolicy(required=0),
                                 "production": ApprovalPolicy(required=3)})
    assert [policy.required_for(s) for s in (S, P, A)] == [0, 3, 0]
