"""The admin app: one middleware and the route table of every admin API operation.

Routes come from :data:`proxy.admin_routes.ROUTES` (health, metrics, routes, weights,
reload) and from the control plane's modules listed in :data:`ROUTE_MODULES`; each is an
:class:`~control.api.ApiRoute` that names its role. The middleware authenticates,
authorizes (contract §7/§8), audits refused access as ``security.violation``, and turns
every :class:`~proxy.errors.SplitwayError` — and aiohttp's own 404/405 — into the JSON
error shape. :mod:`control.api.openapi` describes the same table.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from collections.abc import Iterable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from prometheus_client import CollectorRegistry

from control.api import PRINCIPAL, ApiRoute, Handler, actor_of
from control.auth import TokenTable, authorize, parse_bearer
from proxy.app import STATE, ProxyState
from proxy.errors import (
    ApiError,
    NotFoundError,
    SplitwayError,
    UnauthorizedError,
    error_body,
    headers_of,
    status_of,
)
from proxy.headers import REQUEST_ID_HEADER
from proxy.metrics import build_registry

log = logging.getLogger("splitway.admin")

#: Modules whose ``ROUTES`` make up the admin API, in registration order.
ROUTE_MODULES: tuple[str, ...] = (
    "proxy.admin_routes",
    "proxy.rollout.api",
    "proxy.experiment.api",
    "control.api.registry",
    "control.api.promotions",
    "control.api.audit",
    "control.api.openapi",
)

TOKENS = web.AppKey("tokens", TokenTable)
METRICS = web.AppKey("metrics", CollectorRegistry)
SPECS = web.AppKey("specs", dict[AbstractRoute, ApiRoute])
ALL_ROUTES = web.AppKey("all_routes", tuple[ApiRoute, ...])


def all_routes() -> tuple[ApiRoute, ...]:
    routes: list[ApiRoute] = []
    for name in ROUTE_MODULES:
        routes.extend(importlib.import_module(name).ROUTES)
    return tuple(routes)


def _json_error(exc: BaseException, request_id: str) -> web.Response:
    return web.json_response(error_body(exc, request_id=request_id), status=status_of(exc),
                             headers={REQUEST_ID_HEADER: request_id, **headers_of(exc)})


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


async def _authenticate(request: web.Request, spec: ApiRoute | None) -> None:
    tokens = request.app.get(TOKENS)
    token = parse_bearer(request.headers.get("Authorization"))
    principal = tokens.authenticate(token) if tokens is not None and token else None
    if principal is not None:
        request[PRINCIPAL] = principal
    if spec is None or (spec.role is None and not spec.any_user):
        return  # public
    try:
        authorize(principal, spec.role, tokens_configured=tokens is not None,
                  write=request.method not in ("GET", "HEAD", "OPTIONS"))
    except UnauthorizedError:
        if token is not None:  # a wrong token, not a missing one
            await _audit_violation(request.app[STATE], request, "bad token")
        raise
    except ApiError as exc:
        await _audit_violation(request.app[STATE], request, exc.detail)
        raise


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
    try:
        await _authenticate(request, request.app[SPECS].get(request.match_info.route))
        return await handler(request)
    except SplitwayError as exc:
        return _json_error(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return _json_error(NotFoundError(f"no such path {request.path}"), request_id)
        error = ApiError(exc.reason)
        error.status = exc.status
        return _json_error(error, request_id)


def create_admin_app(state: ProxyState, tokens: TokenTable | None,
                     routes: Iterable[ApiRoute] | None = None) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=1 << 30)
    app[STATE] = state
    if tokens is not None:
        app[TOKENS] = tokens
    app[METRICS] = build_registry(
        state.observatory, weights_provider=lambda: state.current.live_weights(),
        rollout_state_provider=lambda: {
            route: str(st.status)
            for route, st in (state.rollouts.states() if state.rollouts else {}).items()})
    table = tuple(routes) if routes is not None else all_routes()
    app[ALL_ROUTES] = table
    specs: dict[AbstractRoute, ApiRoute] = {}
    for spec in table:
        specs[app.router.add_route(spec.method, spec.path, spec.handler)] = spec
    app[SPECS] = specs
    return app
