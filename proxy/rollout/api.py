"""Admin API for rollouts (contract §6/§7): start, read, and the manual gates.

A rolled-back candidate is **quarantined** (per route and backend): starting it again needs
``"force": true`` with a ``"justification"``, and the override is audited. Starting by
``"version": "MODEL@SEMVER"`` resolves the backend that serves that registered version and
points the rollout's candidate variant at it; a route whose policy says
``require_stage: production`` refuses a version the registry has not approved to that stage.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field

from control.api import ApiRoute, actor_of
from control.api.fields import Body, Name, RoutePath, VersionRef
from control.api.inputs import body_of, path_of
from control.auth import Role
from proxy.app import STATE, ProxyState
from proxy.errors import ConflictError, InvalidInputError, NotFoundError
from proxy.rollout import machine as m
from proxy.rollout.controller import NS_QUARANTINE, RolloutController
from proxy.rollout.registry_link import resolve_version
from proxy.runtime import RouteRuntime


class StartBody(Body):
    candidate: Name | None = Field(None, description="variant (default: the policy's)")
    version: VersionRef | None = Field(None, description="MODEL@SEMVER from the registry")
    strategy: Literal["canary", "blue_green", "rolling"] | None = None
    force: bool = Field(False, description="start a quarantined candidate again")
    justification: str | None = Field(None, description="why (needed with force)")


class GatePath(RoutePath):
    action: Literal["pause", "resume", "promote", "rollback", "abort"]


class GateBody(Body):
    reason: str | None = None
    to_end: bool = Field(False, description="promote: straight to the last step")


class RolloutOut(BaseModel):
    """A rollout's state (:meth:`proxy.rollout.machine.RolloutState.document`)."""

    route: str
    id: str
    strategy: str
    state: m.Status
    baseline: str
    candidate: str
    step: int
    steps: list[float | str]
    weights: dict[str, float]
    reason: str | None
    version: str | None
    candidate_backend: str | None
    failed_checks: int
    started_at: str
    analyses: list[dict[str, Any]]


def _controller(request: web.Request) -> tuple[ProxyState, RolloutController]:
    state = request.app[STATE]
    if state.rollouts is None:
        raise NotFoundError("rollouts are not running")
    return state, state.rollouts


def _route(state: ProxyState, name: str) -> RouteRuntime:
    rr = state.current.routes.get(name)
    if rr is None:
        raise NotFoundError(f"no route named {name!r}")
    return rr


async def begin_rollout(state: ProxyState, route: str, body: StartBody, actor: str,
                        ) -> m.RolloutState:
    """Start a rollout (quarantine, registry gate and policy checks); used by the API and
    by ``experiment conclude --rollout``."""
    if state.rollouts is None:
        raise NotFoundError("rollouts are not running")
    ctl = state.rollouts
    rr = _route(state, route)
    policy = rr.config.rollout
    if policy is None:
        raise InvalidInputError(f"route {rr.config.name!r} has no rollout policy",
                                field="route")
    if body.strategy is not None:
        policy = policy.model_copy(update={"strategy": body.strategy})
    if policy.strategy == "blue_green" and rr.config.split.trusted_pins is None:
        # Judged on pinned requests, and only trusted pins reach the judge (docs/routing.md)
        raise InvalidInputError("blue_green is judged on pinned requests: the route needs "
                                "split.allow_pin and split.trusted_pins", field="strategy")
    candidate = body.candidate or policy.candidate
    if candidate not in rr.config.variants or candidate == policy.baseline:
        raise InvalidInputError(f"{candidate!r} is not a candidate variant of this route",
                                field="candidate")
    backend = rr.config.variants[candidate]
    details: dict[str, Any] = {}
    if body.version is not None:
        assert state.store is not None
        backend, promotion = await resolve_version(state.store, body.version,
                                                   policy.require_stage)
        if backend not in state.current.pools:
            raise InvalidInputError(f"{body.version} is served by backend {backend!r}, which "
                                    "this proxy's config does not define", field="version")
        details["promotion_id"] = promotion
    assert state.store is not None
    qkey = f"{rr.config.name}:{backend}"
    quarantined = await state.store.kv_get(NS_QUARANTINE, qkey)
    if quarantined is not None:
        if not body.force or not (body.justification or "").strip():
            raise ConflictError(f"{backend} was rolled back on {rr.config.name} "
                                f"({quarantined.get('reason')}); start it again with "
                                "force and a justification")
        details["forced"] = {"justification": body.justification, "quarantine": quarantined}
    st = m.start(uuid.uuid4().hex[:12], rr.config.name, policy, ctl.now(),
                 version=body.version,
                 candidate_backend=backend if body.version else None, candidate=candidate)
    await ctl.commit(None, None, st, m.Event.STARTED, actor, details)
    if quarantined is not None:
        await state.store.kv_delete(NS_QUARANTINE, qkey)
    return st


async def start_rollout(request: web.Request) -> web.Response:
    body = body_of(request, StartBody)
    st = await begin_rollout(request.app[STATE], path_of(request, RoutePath).route, body,
                             actor_of(request))
    return web.json_response(st.document(), status=201)


async def get_rollout(request: web.Request) -> web.Response:
    state, ctl = _controller(request)
    rr = _route(state, path_of(request, RoutePath).route)
    states = await ctl.load()
    if rr.config.name not in states:
        raise NotFoundError(f"route {rr.config.name!r} has had no rollout")
    return web.json_response(states[rr.config.name][1].document())


async def gate(request: web.Request) -> web.Response:
    state, ctl = _controller(request)
    p, body = path_of(request, GatePath), body_of(request, GateBody)
    rr, verb = _route(state, p.route), p.action
    states = await ctl.load()
    if rr.config.name not in states:
        raise NotFoundError(f"route {rr.config.name!r} has had no rollout")
    rev, st = states[rr.config.name]
    policy = rr.config.rollout
    assert policy is not None
    now = ctl.now()
    reason = body.reason or f"{verb} by {actor_of(request)}"
    try:
        if verb == "pause":
            new, event = m.pause(st, now), m.Event.PAUSED
        elif verb == "resume":
            new, event = m.resume(st, policy, now), m.Event.RESUMED
        elif verb == "promote":
            new = m.promote(st, policy, now, to_end=body.to_end)
            event = m.Event.SUCCEEDED if new.status is m.Status.SUCCEEDED else m.Event.PROMOTED
        elif verb == "rollback":
            new, event = m.rollback(st, now, reason), m.Event.ROLLED_BACK
        else:
            new, event = m.abort(st, now, reason), m.Event.ABORTED
    except m.InvalidTransition as exc:
        raise ConflictError(str(exc)) from exc
    await ctl.commit(rev, st, new, event, actor_of(request))
    return web.json_response(new.document())


#: 422s of a rollout start that depend on the config, not on the request's shape
START_RULES = (
    ("route", "has a rollout policy"),
    ("candidate", "a variant of the route other than its baseline"),
    ("version", "served by a backend this config defines"),
    ("strategy", "blue_green needs split.allow_pin and split.trusted_pins"),
)
ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("POST", "/api/v1/routes/{route}/rollouts", start_rollout,
             "Start a rollout of a candidate variant or a registered MODEL@SEMVER",
             role=Role.OPERATOR, tag="rollouts", params=RoutePath, body=StartBody,
             response=RolloutOut, success=(201,), errors=(409,), semantic=START_RULES),
    ApiRoute("GET", "/api/v1/routes/{route}/rollout", get_rollout,
             "The route's rollout: state, step, weights, every analysis with its figures",
             role=Role.VIEWER, tag="rollouts", params=RoutePath, response=RolloutOut),
    ApiRoute("POST", "/api/v1/routes/{route}/rollout/{action:pause|resume|promote|rollback|abort}",
             gate, "Manual gates: pause, resume, promote (next step or to_end), rollback, abort",
             role=Role.OPERATOR, tag="rollouts", params=GatePath, body=GateBody,
             response=RolloutOut, errors=(409,)),
)
