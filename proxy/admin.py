"""The admin app: health, readiness, metrics and the data-plane part of ``/api/v1``.

Roles (contract §7/§8) are declared on each handler with :func:`requires`; one middleware
authenticates, authorizes, audits refused access as ``security.violation``, and turns
every :class:`~proxy.errors.SplitwayError` (and aiohttp's own 404/405) into the JSON error
shape. The control plane adds its routes to this same app.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry

from control.auth import Principal, Role, TokenTable, authorize, parse_bearer
from proxy.app import STATE, ProxyState
from proxy.errors import (
    ApiError,
    ConfigError,
    InvalidInputError,
    NotFoundError,
    SplitwayError,
    UnauthorizedError,
    error_body,
    status_of,
)
from proxy.headers import REQUEST_ID_HEADER
from proxy.metrics import build_registry, render
from proxy.runtime import RouteRuntime

log = logging.getLogger("splitway.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)

TOKENS = web.AppKey("tokens", TokenTable)
PRINCIPAL = "splitway.principal"
_ROLE_ATTR = "__splitway_role__"


def requires(role: Role) -> Callable[[H], H]:
    """Declare the role a handler needs (``viewer`` reads, ``operator`` writes...)."""

    def mark(handler: H) -> H:
        setattr(handler, _ROLE_ATTR, role)
        return handler

    return mark


def principal_of(request: web.Request) -> Principal | None:
    value = request.get(PRINCIPAL)
    return value if isinstance(value, Principal) else None


def actor_of(request: web.Request) -> str:
    p = principal_of(request)
    return p.user if p else "anonymous"


def _json_error(exc: BaseException, request_id: str) -> web.Response:
    return web.json_response(error_body(exc, request_id=request_id), status=status_of(exc),
                             headers={REQUEST_ID_HEADER: request_id})


async def _audit_violation(state: ProxyState, request: web.Request, detail: str) -> None:
    if state.store is None or state.audit is None:
        return
    try:
        async with state.store.transaction() as tx:
            await state.audit.append(
                tx, "security.violation", actor_of(request), f"api:{request.path}",
                {"method": request.method, "detail": detail, "remote": request.remote},
                severity="warning")
    except SplitwayError:  # never turn a refusal into a 500
        log.exception("could not audit a security violation")


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    state = request.app[STATE]
    try:
        role: Role | None = getattr(handler, _ROLE_ATTR, None)
        if request.path.startswith("/api/v1"):
            tokens = request.app.get(TOKENS)
            token = parse_bearer(request.headers.get("Authorization"))
            principal = tokens.authenticate(token) if tokens and token else None
            if principal is not None:
                request[PRINCIPAL] = principal
            try:
                authorize(principal, role, tokens_configured=tokens is not None,
                          write=request.method not in ("GET", "HEAD", "OPTIONS"))
            except UnauthorizedError as exc:
                if token is not None:  # a wrong token, not a missing one
                    await _audit_violation(state, request, "bad token")
                raise exc
            except ApiError as exc:
                await _audit_violation(state, request, exc.detail)
                raise
        return await handler(request)
    except SplitwayError as exc:
        return _json_error(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json_error(ApiError(exc.reason) if exc.status != 404 else
                           NotFoundError(f"no such path {request.path}"), request_id) \
            if exc.status in (404, 405) else _json_error(ApiError(exc.reason), request_id)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 naming what is wrong."""
    try:
        data = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(f"body is not JSON: {exc}", field="body") from exc
    if not isinstance(data, dict):
        raise InvalidInputError("body must be a JSON object", field="body")
    return data


def route_doc(rr: RouteRuntime) -> dict[str, Any]:
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
        "rollout": None,
        "shadow": None,
        "experiment": None,
    }


def _route(request: web.Request) -> RouteRuntime:
    name = request.match_info["route"]
    rr = request.app[STATE].current.routes.get(name)
    if rr is None:
        raise NotFoundError(f"no route named {name!r}")
    return rr


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    problems: list[str] = []
    if state.store is None or not await state.store.ping():
        problems.append("state store unreachable")
    for name, pool in state.current.pools.items():
        if not any(ep.healthy for ep in pool.endpoints):
            problems.append(f"backend {name}: no healthy endpoint")
    body = {"ready": not problems, "problems": problems}
    return web.json_response(body, status=200 if not problems else 503)


async def metrics(request: web.Request) -> web.Response:
    payload, content_type = render(request.app[METRICS])
    return web.Response(body=payload, headers={"Content-Type": content_type})


@requires(Role.VIEWER)
async def list_routes(request: web.Request) -> web.Response:
    rt = request.app[STATE].current
    return web.json_response({"routes": [route_doc(rr) for rr in rt.routes.values()]})


@requires(Role.VIEWER)
async def get_route(request: web.Request) -> web.Response:
    return web.json_response(route_doc(_route(request)))


@requires(Role.OPERATOR)
async def put_weights(request: web.Request) -> web.Response:
    rr = _route(request)
    body = await read_json(request)
    weights = body.get("weights")
    if not isinstance(weights, dict) or not weights:
        raise InvalidInputError("give {\"weights\": {VARIANT: NUMBER, ...}}", field="weights")
    await request.app[STATE].set_weights(rr.config.name, weights, actor_of(request))
    return web.json_response(route_doc(_route(request)))


@requires(Role.OPERATOR)
async def post_reload(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        settings = await state.reload(actor=actor_of(request))
    except ConfigError as exc:
        raise InvalidInputError(
            "config refused; the old one keeps serving: " + "; ".join(map(str, exc.problems)),
            field="config") from exc
    return web.json_response({"reloaded": True, "routes": [r.name for r in settings.routes]})


METRICS = web.AppKey("metrics", CollectorRegistry)


def create_admin_app(state: ProxyState, tokens: TokenTable | None) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=1 << 24)
    app[STATE] = state
    if tokens is not None:
        app[TOKENS] = tokens
    app[METRICS] = build_registry(state.observatory,
                                  weights_provider=lambda: state.current.live_weights())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/routes", list_routes)
    app.router.add_get("/api/v1/routes/{route}", get_route)
    app.router.add_put("/api/v1/routes/{route}/weights", put_weights)
    app.router.add_post("/api/v1/reload", post_reload)
    return app
