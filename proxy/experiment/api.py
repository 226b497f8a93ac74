"""Admin API for experiments (contract §7/§9)."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from control.api import ApiRoute, actor_of
from control.api.fields import Body, Float, Name, Params, check_exactly_one, exactly_one
from control.api.inputs import body_of, path_of
from control.auth import Role
from proxy.app import STATE
from proxy.rollout.api import START_RULES, RolloutOut, StartBody, begin_rollout


class ExperimentPath(Params):
    name: Name = Field(description="experiment name")


class MetricEvent(Body):
    """Exactly one of ``unit`` (the split's hash key) and ``request_id``."""

    model_config = ConfigDict(json_schema_extra=exactly_one("unit", "request_id"))
    unit: str | None = Field(None, description="the hash key the split used (hash splits)")
    request_id: str | None = Field(
        None, description="x-request-id of a served request (409 if requests with this id "
                          "were served by more than one variant)")
    metric: Annotated[str, Field(min_length=1, max_length=64)]
    value: Float

    @model_validator(mode="after")
    def _one(self) -> MetricEvent:
        check_exactly_one(self, "unit", "request_id")
        return self


class ConcludeBody(Body):
    winner: Name = Field(description="a variant of the experiment's route")
    rollout: bool = Field(False, description="start a rollout of the winner")


class ExperimentSummary(BaseModel):
    name: str
    route: str
    control: str
    state: str
    winner: str | None


class ExperimentsOut(BaseModel):
    experiments: list[ExperimentSummary]


class VariantCounts(BaseModel):
    requests: int
    successes: int
    rate: float
    latency_ms: dict[str, float]
    metrics: dict[str, Any]


class ExperimentReport(BaseModel):
    """:func:`proxy.experiment.report.build_report`, with the p-value series."""

    name: str
    route: str
    control: str
    state: str
    winner: str | None
    variants: dict[str, VariantCounts]
    comparisons: dict[str, dict[str, Any]]
    srm: dict[str, Any]
    series: list[dict[str, Any]] = []


class FinishedOut(ExperimentReport):
    decided_by: str | None = None
    rollout: RolloutOut | None = Field(None, description="with rollout: the started rollout")


class EventOut(BaseModel):
    accepted: bool
    variant: str


async def list_experiments(request: web.Request) -> web.Response:
    svc = request.app[STATE].experiments
    return web.json_response({"experiments": [
        {"name": n, "route": m["route"], "control": m["control"], "state": m["state"],
         "winner": m.get("winner")} for n, m in sorted(svc.meta.items())]})


def _name(request: web.Request) -> str:
    return path_of(request, ExperimentPath).name


async def report(request: web.Request) -> web.Response:
    return web.json_response(await request.app[STATE].experiments.look(_name(request)))


async def post_event(request: web.Request) -> web.Response:
    body = body_of(request, MetricEvent)
    variant = request.app[STATE].experiments.event(_name(request), body.model_dump())
    return web.json_response({"accepted": True, "variant": variant}, status=202)


async def stop(request: web.Request) -> web.Response:
    svc = request.app[STATE].experiments
    return web.json_response(await svc.finish(_name(request), actor_of(request), None))


async def conclude(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body, name = body_of(request, ConcludeBody), _name(request)
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
             role=Role.VIEWER, tag="experiments", response=ExperimentsOut),
    ApiRoute("GET", "/api/v1/experiments/{name}", report,
             "Per-variant counts, rates, latency, tests against the control, SRM",
             role=Role.VIEWER, tag="experiments", params=ExperimentPath,
             response=ExperimentReport),
    ApiRoute("POST", "/api/v1/experiments/{name}/events", post_event,
             "A custom metric value joined to a variant by unit or request id",
             role=Role.OPERATOR, tag="experiments", params=ExperimentPath, body=MetricEvent,
             response=EventOut, success=(202,), errors=(409,),
             semantic=(("unit", "needs a hash split; use request_id otherwise"),)),
    ApiRoute("POST", "/api/v1/experiments/{name}/stop", stop, "Stop counting",
             role=Role.OPERATOR, tag="experiments", params=ExperimentPath,
             response=FinishedOut, errors=(409,)),
    ApiRoute("POST", "/api/v1/experiments/{name}/conclude", conclude,
             "Conclude with a winner (optionally starting a rollout of it)",
             role=Role.OPERATOR, tag="experiments", params=ExperimentPath, body=ConcludeBody,
             response=FinishedOut, errors=(409,),
             semantic=(("winner", "a variant of the experiment's route"), *START_RULES)),
)
