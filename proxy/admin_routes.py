"""Admin API operations of the data plane: health, readiness, metrics, routes, weights,
reload (contract §7)."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field

from control.api import ApiRoute, actor_of
from control.api.fields import Body, Name, RoutePath
from control.api.inputs import body_of, path_of
from control.auth import Role
from proxy.app import STATE
from proxy.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError
from proxy.metrics import render
from proxy.rollout.machine import ACTIVE, RolloutState
from proxy.runtime import RouteRuntime


class WeightsBody(Body):
    weights: dict[Name, Annotated[float, Field(ge=0, lt=1e9, allow_inf_nan=False)]] = Field(
        min_length=1, description="variant -> weight; variants left out get 0")


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    ready: bool
    problems: list[str]


class RouteOut(BaseModel):
    """:func:`route_doc`."""

    name: str
    match: dict[str, Any]
    variants: dict[str, str]
    split: dict[str, Any]
    weights: dict[str, float]
    weights_source: str
    in_flight: int
    rollout: dict[str, Any] | None
    shadow: dict[str, Any] | None
    experiment: dict[str, Any] | None


class RoutesOut(BaseModel):
    routes: list[RouteOut]


class ReloadOut(BaseModel):
    reloaded: bool
    routes: list[str]


def route_doc(rr: RouteRuntime, rollout: RolloutState | None = None) -> dict[str, Any]:
    cfg = rr.config
    return {
        "name": cfg.name,
        "match": cfg.match.model_dump(exclude_none=True, mode="json"),
        "variants": dict(cfg.variants),
        "split": {"strategy": cfg.split.strategy, "hash_on": cfg.split.hash_on,
                  "allow_pin": cfg.split.allow_pin},
        "weights": rr.weights,
        "weights_source": rr.weights_source,
        "in_flight": rr.stats.in_flight,
        "rollout": None if rollout is None else {
            "id": rollout.id, "state": str(rollout.status), "step": rollout.step,
            "candidate": rollout.candidate, "version": rollout.version},
        "shadow": _shadow_summary(rr),
        "experiment": None,
    }


def _shadow_summary(rr: RouteRuntime) -> dict[str, Any] | None:
    if rr.shadow is None:
        return None
    book = rr.shadow.book
    return {"backend": book.backend, "percent": rr.shadow.config.percent, "sent": book.sent,
            "compared": book.compared, "mismatched": book.compared - book.matched}


def _route(request: web.Request) -> RouteRuntime:
    name = path_of(request, RoutePath).route
    rr = request.app[STATE].current.routes.get(name)
    if rr is None:
        raise NotFoundError(f"no route named {name!r}")
    return rr


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    problems: list[str] = []
    store = state.store
    if store is None or not await store.ping():
        # the ping's outcome is in the store's health: why, and for how long
        problems.append((store.health.problem() if store else None) or "state store unreachable")
    for name, pool in state.current.pools.items():
        if not any(ep.healthy for ep in pool.endpoints):
            problems.append(f"backend {name}: no healthy endpoint")
    return web.json_response({"ready": not problems, "problems": problems},
                             status=200 if not problems else 503)


async def metrics(request: web.Request) -> web.Response:
    from proxy.admin import METRICS

    payload, content_type = render(request.app[METRICS])
    return web.Response(body=payload, headers={"Content-Type": content_type})


def _rollouts(request: web.Request) -> dict[str, RolloutState]:
    ctl = request.app[STATE].rollouts
    return ctl.states() if ctl is not None else {}


async def list_routes(request: web.Request) -> web.Response:
    rt, rollouts = request.app[STATE].current, _rollouts(request)
    return web.json_response({"routes": [route_doc(rr, rollouts.get(name))
                                         for name, rr in rt.routes.items()]})


async def get_route(request: web.Request) -> web.Response:
    rr = _route(request)
    return web.json_response(route_doc(rr, _rollouts(request).get(rr.config.name)))


async def shadow_report(request: web.Request) -> web.Response:
    rr = _route(request)
    if rr.shadow is None:
        raise NotFoundError(f"route {rr.config.name!r} has no shadow")
    return web.json_response(rr.shadow.book.report(rr.config.name))


async def put_weights(request: web.Request) -> web.Response:
    rr = _route(request)
    body = body_of(request, WeightsBody)
    active = _rollouts(request).get(rr.config.name)
    if active is not None and active.status in ACTIVE:
        raise ConflictError(f"a rollout is {active.status} on {rr.config.name!r}; pause, "
                            "promote, roll back or abort it instead of setting weights")
    await request.app[STATE].set_weights(rr.config.name, body.weights, actor_of(request))
    return web.json_response(route_doc(_route(request)))


async def post_reload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        settings = await state.reload(actor=actor_of(request))
    except ConfigError as exc:
        raise InvalidInputError(
            "config refused; the old one keeps serving: " + "; ".join(map(str, exc.problems)),
            field="config") from exc
    return web.json_response({"reloaded": True, "routes": [r.name for r in settings.routes]})


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/healthz", healthz, "Liveness", tag="health", response=HealthOut),
    ApiRoute("GET", "/readyz", readyz, "Readiness: state store and backends reachable "
             "(503 and the problems when not ready)", tag="health", response=ReadyOut,
             success=(200, 503)),
    ApiRoute("GET", "/metrics", metrics, "Prometheus metrics", tag="health",
             content_type="text/plain"),
    ApiRoute("GET", "/api/v1/routes", list_routes,
             "Routes with live weights, rollout, shadow and experiment summaries",
             role=Role.VIEWER, response=RoutesOut),
    ApiRoute("GET", "/api/v1/routes/{route}", get_route, "One route", role=Role.VIEWER,
             params=RoutePath, response=RouteOut),
    ApiRoute("PUT", "/api/v1/routes/{route}/weights", put_weights,
             "Set a route's weights (persisted, audited as weights.changed)",
             role=Role.OPERATOR, params=RoutePath, body=WeightsBody, response=RouteOut,
             errors=(409,),
             semantic=(("weights", "names the route's variants, not all zero"),)),
    ApiRoute("GET", "/api/v1/routes/{route}/shadow", shadow_report,
             "Shadow report: counts, agreement with a Wilson interval, paired latency",
             role=Role.VIEWER, params=RoutePath),
    ApiRoute("POST", "/api/v1/reload", post_reload,
             "Reload the config file; an invalid file is refused and the old one kept",
             role=Role.OPERATOR, response=ReloadOut,
             semantic=(("config", "the config file on disk is valid (else nothing changes)"),)),
)
