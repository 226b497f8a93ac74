"""Admin API for experiments (contract §7/§9)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from control.api import ApiRoute, actor_of, parse_body, read_json
from control.auth import Role
from proxy.app import STATE
from proxy.rollout.api import StartBody, begin_rollout


class EventBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unit: str | None = None
    request_id: str | None = None
    metric: str
    value: float


class ConcludeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    winner: str
    rollout: bool = False


async def list_experiments(request: web.Request) -> web.Response:
    svc = request.app[STATE].experiments
    return web.json_response({"experiments": [
        {"name": n, "route": m["route"], "control": m["control"], "state": m["state"],
         "winner": m.get("winner")} for n, m in sorted(svc.meta.items())]})


async def report(request: web.Request) -> web.Response:
    return web.json_response(await request.app[STATE].experiments.look(
        request.match_info["name"]))


async def post_event(request: web.Request) -> web.Response:
    data = await read_json(request)
    variant = request.app[STATE].experiments.event(request.match_info["name"], data)
    return web.json_response({"accepted": True, "variant": variant}, status=202)


async def stop(request: web.Request) -> web.Response:
    svc = request.app[STATE].experiments
    return web.json_response(await svc.finish(request.match_info["name"], actor_of(request),
                                              None))


async def conclude(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = parse_body(ConcludeBody, await read_json(request))
    name = request.match_info["name"]
    doc = await state.experiments.finish(name, actor_of(request), body.winner)
    if body.rollout:
        control = state.experiments.meta[name]["control"]
        if body.winner != control:
            st = await begin_rollout(state, doc["route"], StartBody(candidate=body.winner),
                                     actor_of(request))
            doc["rollout"] = st.document()
    return web.json_response(doc)


ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/experiments", list_experiments, "Experiments and their states",
             role=Role.VIEWER, tag="experiments"),
    ApiRoute("GET", "/api/v1/experiments/{name}", report,
             "Per-variant counts, rates, latency, tests against the control, SRM",
             role=Role.VIEWER, tag="experiments"),
    ApiRoute("POST", "/api/v1/experiments/{name}/events", post_event,
             "A custom metric value joined to a variant by unit or request id",
             role=Role.OPERATOR, tag="experiments", body=EventBody),
    ApiRoute("POST", "/api/v1/experiments/{name}/stop", stop, "Stop counting",
             role=Role.OPERATOR, tag="experiments"),
    ApiRoute("POST", "/api/v1/experiments/{name}/conclude", conclude,
             "Conclude with a winner (optionally starting a rollout of it)",
             role=Role.OPERATOR, tag="experiments", body=ConcludeBody),
)
