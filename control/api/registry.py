"""Admin API of the model registry (contract §7): register, read, compare, gate, artifacts.

Path segments are checked before the store is touched: a model name that is not
``[a-z0-9][a-z0-9._-]{0,63}`` or a version that is not SemVer 2.0 is a 422 naming
``model`` / ``version`` (aiohttp decodes ``%2F`` and ``%2e`` before routing, so
``..%2Fetc`` arrives as ``../etc`` and is refused like any other bad name).

Artifacts are uploaded first, as the raw request body of ``POST /api/v1/artifacts``
(content-addressed, at most 64 MiB, hashed while it streams in), then referenced by
``{"artifact": {"sha256": ...}}`` when registering, so ``model.registered`` records the
digest and size of what was registered.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from control.api import ApiRoute, QueryParam, actor_of, parse_body, read_json
from control.approvals import Stage
from control.artifacts import MAX_ARTIFACT_BYTES, ArtifactHasher, get_artifact, put_artifact
from control.auth import Role
from control.gate import may_serve
from control.model_version import ArtifactRef, Lineage, NewVersion
from control.registry import Registry
from control.versions import check_name, check_version
from proxy.app import STATE
from proxy.errors import BodyTooLargeError, InvalidInputError, StoreError


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LineageBody(_Body):
    parent: str | None = Field(None, description="parent version of the same model")
    commit: str | None = Field(None, description="source commit (hex)")
    dataset_digest: str | None = Field(None, description="training data digest")


class ArtifactBody(_Body):
    uri: str | None = Field(None, description="where the artifact lives, e.g. s3://b/k")
    sha256: str | None = Field(None, description="digest of an artifact uploaded before")


class RegisterBody(_Body):
    version: str = Field(description="SemVer 2.0")
    backend: str = Field(description="the config backend that serves this version")
    description: str = ""
    metrics: dict[str, float] = {}
    params: dict[str, Any] = {}
    tags: list[str] = []
    lineage: LineageBody = LineageBody()
    artifact: ArtifactBody | None = None


class VersionOut(BaseModel):
    model: str
    version: str
    stage: Stage
    stage_promotion_id: str | None
    stage_changed_at: str
    description: str
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: list[str]
    lineage: LineageBody
    backend: str
    artifact: dict[str, Any] | None
    created_at: str
    created_by: str


class ModelSummary(BaseModel):
    name: str
    versions: int
    latest: str | None
    production: str | None
    created_at: str


class ModelsOut(BaseModel):
    models: list[ModelSummary]


class VersionsOut(BaseModel):
    model: str
    versions: list[VersionOut]


class LatestOut(BaseModel):
    model: str
    latest: dict[Stage, VersionOut | None]


class MetricDiff(BaseModel):
    a: float | None
    b: float | None
    diff: float | None
    rel_diff: float | None


class CompareOut(BaseModel):
    model: str
    a: str
    b: str
    metrics: dict[str, MetricDiff]


class GateOut(BaseModel):
    model: str
    version: str
    required_stage: Stage
    allowed: bool
    reason: str
    promotion_id: str | None
    stage: Stage | None


class UploadOut(BaseModel):
    sha256: str
    size: int
    created: bool


def path_model(request: web.Request) -> str:
    """The ``{model}`` path segment, checked (422 ``model``)."""
    return check_name(request.match_info["model"], "model")


def path_version(request: web.Request) -> str:
    """The ``{version}`` path segment, checked (422 ``version``)."""
    return check_version(request.match_info["version"], "version")


def query_stage(request: web.Request, name: str = "stage") -> Stage | None:
    """The stage named by a query parameter (``None`` when absent; 422 when unknown)."""
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return Stage(value)
    except ValueError:
        raise InvalidInputError(f"{value!r} is not a stage: use "
                                + ", ".join(Stage), field=name) from None


def _registry(request: web.Request) -> Registry:
    store = request.app[STATE].store
    if store is None:  # pragma: no cover - the store opens before the admin app serves
        raise StoreError("the state store is not open")
    return Registry(store)


async def register_version(request: web.Request) -> web.Response:
    model = path_model(request)
    body = parse_body(RegisterBody, await read_json(request))
    art = None
    if body.artifact is not None:
        art = ArtifactRef(uri=body.artifact.uri, sha256=body.artifact.sha256)
    new = NewVersion(model=model, version=body.version, backend=body.backend,
                     description=body.description, metrics=body.metrics, params=body.params,
                     tags=tuple(body.tags), lineage=Lineage(**body.lineage.model_dump()),
                     artifact=art)
    created = await _registry(request).register(new, actor_of(request))
    return web.json_response(created.to_dict(), status=201)


async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"models": await _registry(request).list_models()})


async def list_versions(request: web.Request) -> web.Response:
    model = path_model(request)
    tag = request.query.get("tag") or None
    versions = await _registry(request).list_versions(model, stage=query_stage(request),
                                                      tag=tag)
    return web.json_response({"model": model, "versions": [v.to_dict() for v in versions]})


async def get_version(request: web.Request) -> web.Response:
    model, version = path_model(request), path_version(request)
    return web.json_response((await _registry(request).get(model, version)).to_dict())


async def latest(request: web.Request) -> web.Response:
    model, stage = path_model(request), query_stage(request)
    found = await _registry(request).latest(model)
    return web.json_response({"model": model, "latest": {
        str(s): v.to_dict() if v else None for s, v in found.items()
        if stage is None or s is stage}})


async def compare(request: web.Request) -> web.Response:
    model = path_model(request)
    a, b = (check_version(request.query.get(k, ""), k) for k in ("a", "b"))
    return web.json_response(await _registry(request).compare(model, a, b))


async def gate(request: web.Request) -> web.Response:
    model, version = path_model(request), path_version(request)
    required = request.query.get("stage", "production")
    decision = await may_serve(_registry(request).store, model, version, required)
    return web.json_response({"model": model, "version": version,
                              "required_stage": required, **decision.to_dict()})


async def upload_artifact(request: web.Request) -> web.Response:
    if (request.content_length or 0) > MAX_ARTIFACT_BYTES:
        raise BodyTooLargeError(f"artifact larger than {MAX_ARTIFACT_BYTES} bytes")
    hasher = ArtifactHasher()
    async for chunk in request.content.iter_chunked(1 << 16):
        hasher.update(chunk)
    info = await put_artifact(_registry(request).store, hasher)
    return web.json_response({**info.to_dict(), "created": info.created},
                             status=201 if info.created else 200)


async def download_artifact(request: web.Request) -> web.Response:
    data = await get_artifact(_registry(request).store, request.match_info["sha256"])
    return web.Response(body=data, content_type="application/octet-stream")


_M = "/api/v1/models/{model}"
_STAGE_Q = QueryParam("stage", "development, staging, production or archived")
ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/models", list_models, "Registered models",
             role=Role.VIEWER, tag="registry", response=ModelsOut),
    ApiRoute("POST", f"{_M}/versions", register_version,
             "Register a model version (stage development); 409 if it exists",
             role=Role.OPERATOR, tag="registry", body=RegisterBody, response=VersionOut),
    ApiRoute("GET", f"{_M}/versions", list_versions,
             "A model's versions, newest (SemVer precedence) first", role=Role.VIEWER,
             tag="registry", response=VersionsOut,
             query=(_STAGE_Q, QueryParam("tag", "only versions with this tag"))),
    ApiRoute("GET", f"{_M}/versions/{{version}}", get_version, "One model version",
             role=Role.VIEWER, tag="registry", response=VersionOut),
    ApiRoute("GET", f"{_M}/latest", latest, "The newest version in each stage (or one)",
             role=Role.VIEWER, tag="registry", response=LatestOut, query=(_STAGE_Q,)),
    ApiRoute("GET", f"{_M}/compare", compare, "Metric differences between two versions",
             role=Role.VIEWER, tag="registry", response=CompareOut,
             query=(QueryParam("a", "version A", required=True),
                    QueryParam("b", "version B (diff = b - a)", required=True))),
    ApiRoute("GET", f"{_M}/versions/{{version}}/gate", gate,
             "May this version take traffic on a route that requires a stage?",
             role=Role.VIEWER, tag="registry", response=GateOut,
             query=(QueryParam("stage", "required stage (default production)"),)),
    ApiRoute("POST", "/api/v1/artifacts", upload_artifact,
             "Upload an artifact (raw body, at most 64 MiB); content-addressed by SHA-256",
             role=Role.OPERATOR, tag="registry", response=UploadOut,
             max_body=MAX_ARTIFACT_BYTES),
    ApiRoute("GET", "/api/v1/artifacts/{sha256}", download_artifact,
             "Download an uploaded artifact", role=Role.VIEWER, tag="registry",
             content_type="application/octet-stream"),
)
