"""The deployment gate: may version V of model M take traffic on a route that requires
stage S? And the audit link from a deployment back to the approval that allowed it.

Rules (:func:`gate_decision`, pure):

- ``archived`` versions never serve; unknown versions never serve.
- ``required_stage=production``: only the model's current production version (there is
  exactly one), i.e. the version's stage must be ``production``.
- ``required_stage=staging``: a version in ``staging`` or ``production``.
- ``required_stage=development``: any version that is not archived.
- ``archived`` is not a stage a route can require (422).

``promotion_id`` in the decision is the promotion that put the version in its current
stage (``None`` for a version still in ``development``, which no promotion put there).
The rollout controller calls :func:`may_serve` before it sends traffic to a version and
:func:`record_deployment` in the transaction that starts the traffic: it checks the gate
again inside that transaction and writes ``model.deployed`` with that promotion id, so
the audit trail leads from the deployment to the approvals behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from control.approvals import Stage
from control.audit import EventType
from control.model_version import ModelVersion
from control.registry import Registry
from control.versions import check_name
from proxy.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:
    from control.store import Store, Transaction

#: The stages that satisfy each required stage.
SATISFIES: dict[Stage, frozenset[Stage]] = {
    Stage.DEVELOPMENT: frozenset({Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION}),
    Stage.STAGING: frozenset({Stage.STAGING, Stage.PRODUCTION}),
    Stage.PRODUCTION: frozenset({Stage.PRODUCTION}),
}


class GateRefusedError(ConflictError):
    """A deployment the gate does not allow (409)."""


@dataclass(frozen=True, slots=True)
class GateDecision:
    """Whether a version may serve, why, and the promotion that put it in its stage."""

    allowed: bool
    reason: str
    promotion_id: str | None = None
    stage: Stage | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason,
                "promotion_id": self.promotion_id,
                "stage": None if self.stage is None else str(self.stage)}


def parse_required_stage(value: str) -> Stage:
    """A stage a route may require, or a 422 naming ``stage``."""
    try:
        stage = Stage(value)
    except ValueError:
        stage = None
    if stage is None or stage not in SATISFIES:
        raise InvalidInputError(f"{value!r} is not a stage a route can require: use "
                                "development, staging or production", field="stage")
    return stage


def gate_decision(version: ModelVersion | None, required: Stage) -> GateDecision:
    """The gate's rule for a version (``None``: not registered)."""
    if version is None:
        return GateDecision(False, "the version is not registered")
    name = f"{version.model}@{version.version}"
    if version.stage in SATISFIES[required]:
        return GateDecision(True, f"{name} is in {version.stage}, which satisfies {required}",
                            version.stage_promotion_id, version.stage)
    return GateDecision(False, f"{name} is in {version.stage}; {required} requires "
                        + " or ".join(sorted(SATISFIES[required])),
                        version.stage_promotion_id, version.stage)


async def may_serve(store: Store, model: str, version: str, required_stage: Stage | str, *,
                    tx: Transaction | None = None) -> GateDecision:
    """May ``model@version`` take traffic on a route that requires ``required_stage``?"""
    required = parse_required_stage(str(required_stage))
    found = await Registry(store).find(model, version, tx=tx)
    return gate_decision(found, required)


async def record_deployment(store: Store, tx: Transaction, model: str, version: str,
                            route: str, actor: str, *,
                            required_stage: Stage | str = Stage.PRODUCTION) -> GateDecision:
    """Check the gate inside ``tx`` and audit ``model.deployed`` with the promotion id
    that allowed it; raises :class:`GateRefusedError` (and writes nothing) when refused."""
    check_name(route, "route")
    decision = await may_serve(store, model, version, required_stage, tx=tx)
    if not decision.allowed:
        raise GateRefusedError(f"{model}@{version} may not serve route {route!r}: "
                               f"{decision.reason}")
    await store.audit.append(
        tx, EventType.MODEL_DEPLOYED, actor, f"model/{model}@{version}",
        {"model": model, "version": version, "route": route,
         "promotion_id": decision.promotion_id})
    return decision
