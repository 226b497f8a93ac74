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

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from control.api import ApiRoute, actor_of, body_chunks
from control.api.fields import (
    TEXT,
    Body,
    Commit,
    DatasetDigest,
    Float,
    MetricName,
    Name,
    Params,
    SemVer,
    Sha256,
    Uri,
    check_exactly_one,
    exactly_one,
)
from control.api.inputs import body_of, path_of, query_of
from control.approvals import Stage
from control.artifacts import MAX_ARTIFACT_BYTES, ArtifactHasher, get_artifact, put_artifact
from control.auth import Role
from control.gate import may_serve
from control.model_version import MAX_DESCRIPTION, ArtifactRef, Lineage, NewVersion
from control.registry import Registry
from proxy.app import STATE
from proxy.errors import BodyTooLargeError, StoreError


class ModelPath(Params):
    model: Name = Field(description="model name")


class VersionPath(ModelPath):
    version: SemVer = Field(description="SemVer 2.0 version")


class ArtifactPath(Params):
    sha256: Sha256 = Field(description="the artifact's SHA-256")


class VersionsQuery(Params):
    stage: Stage | None = Field(None, description="only versions in this stage")
    tag: Name | None = Field(None, description="only versions with this tag")


class LatestQuery(Params):
    stage: Stage | None = Field(None, description="only this stage")


class CompareQuery(Params):
    a: SemVer = Field(description="version A")
    b: SemVer = Field(description="version B (diff = b - a)")


class GateQuery(Params):
    stage: Literal["development", "staging", "production"] = Field(
        "production", description="the stage the route requires")


class LineageBody(Body):
    parent: SemVer | None = Field(None, description="parent version of the same model")
    commit: Commit | None = Field(None, description="source commit (hex)")
    dataset_digest: DatasetDigest | None = Field(None, description="training data digest")


class ArtifactBody(Body):
    """Exactly one of ``uri`` and ``sha256``."""

    model_config = ConfigDict(json_schema_extra=exactly_one("uri", "sha256"))
    uri: Uri | None = Field(None, description="where the artifact lives, e.g. s3://b/k")
    sha256: Sha256 | None = Field(None, description="digest of an artifact uploaded before")

    @model_validator(mode="after")
    def _one(self) -> ArtifactBody:
        check_exactly_one(self, "uri", "sha256")
        return self


class RegisterBody(Body):
    version: SemVer = Field(description="SemVer 2.0")
    backend: Name = Field(description="the config backend that serves this version")
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION), TEXT] = ""
    metrics: dict[MetricName, Float] = {}
    params: dict[str, Any] = Field({}, description="any JSON, at most 64 KiB")
    tags: list[Name] = []
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


def _registry(request: web.Request) -> Registry:
    store = request.app[STATE].store
    if store is None:  # pragma: no cover - the store opens before the admin app serves
        raise StoreError("the state store is not open")
    return Registry(store)


async def register_version(request: web.Request) -> web.Response:
    model = path_of(request, ModelPath).model
    body = body_of(request, RegisterBody)
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
    model, q = path_of(request, ModelPath).model, query_of(request, VersionsQuery)
    versions = await _registry(request).list_versions(model, stage=q.stage, tag=q.tag)
    return web.json_response({"model": model, "versions": [v.to_dict() for v in versions]})


async def get_version(request: web.Request) -> web.Response:
    p = path_of(request, VersionPath)
    return web.json_response((await _registry(request).get(p.model, p.version)).to_dict())


async def latest(request: web.Request) -> web.Response:
    model, stage = path_of(request, ModelPath).model, query_of(request, LatestQuery).stage
    found = await _registry(request).latest(model)
    return web.json_response({"model": model, "latest": {
        str(s): v.to_dict() if v else None for s, v in found.items()
        if stage is None or s is stage}})


async def compare(request: web.Request) -> web.Response:
    model, q = path_of(request, ModelPath).model, query_of(request, CompareQuery)
    return web.json_response(await _registry(request).compare(model, q.a, q.b))


async def gate(request: web.Request) -> web.Response:
    p, required = path_of(request, VersionPath), query_of(request, GateQuery).stage
    decision = await may_serve(_registry(request).store, p.model, p.version, required)
    return web.json_response({"model": p.model, "version": p.version,
                              "required_stage": required, **decision.to_dict()})


async def upload_artifact(request: web.Request) -> web.Response:
    if (request.content_length or 0) > MAX_ARTIFACT_BYTES:
        raise BodyTooLargeError(f"artifact larger than {MAX_ARTIFACT_BYTES} bytes")
    hasher = ArtifactHasher()
    async for chunk in body_chunks(request):  # max_body, body_read_timeout_s, client gone
        hasher.update(chunk)
    info = await put_artifact(_registry(request).store, hasher)
    return web.json_response({**info.to_dict(), "created": info.created},
                             status=201 if info.created else 200)


async def download_artifact(request: web.Request) -> web.Response:
    data = await get_artifact(_registry(request).store, path_of(request, ArtifactPath).sha256)
    return web.Response(body=data, content_type="application/octet-stream")


_M = "/api/v1/models/{model}"
ROUTES: tuple[ApiRoute, ...] = (
    ApiRoute("GET", "/api/v1/models", list_models, "Registered models",
             role=Role.VIEWER, tag="registry", response=ModelsOut),
    ApiRoute("POST", f"{_M}/versions", register_version,
             "Register a model version (stage development); 409 if it exists",
             role=Role.OPERATOR, tag="registry", params=ModelPath, body=RegisterBody,
             response=VersionOut, success=(201,), errors=(409,), semantic=(
                 ("lineage.parent", "names a registered version of this model, other than "
                                    "the version itself"),
                 ("artifact.sha256", "names an artifact uploaded before"),
                 ("params", "at most 64 KiB as JSON"))),
    ApiRoute("GET", f"{_M}/versions", list_versions,
             "A model's versions, newest (SemVer precedence) first", role=Role.VIEWER,
             tag="registry", response=VersionsOut, params=ModelPath, query=VersionsQuery),
    ApiRoute("GET", f"{_M}/versions/{{version}}", get_version, "One model version",
             role=Role.VIEWER, tag="registry", response=VersionOut, params=VersionPath),
    ApiRoute("GET", f"{_M}/latest", latest, "The newest version in each stage (or one)",
             role=Role.VIEWER, tag="registry", response=LatestOut, params=ModelPath,
             query=LatestQuery),
    ApiRoute("GET", f"{_M}/compare", compare, "Metric differences between two versions",
             role=Role.VIEWER, tag="registry", response=CompareOut, params=ModelPath,
             query=CompareQuery),
    ApiRoute("GET", f"{_M}/versions/{{version}}/gate", gate,
             "May this version take traffic on a route that requires a stage?",
             role=Role.VIEWER, tag="registry", response=GateOut, params=VersionPath,
             query=GateQuery),
    ApiRoute("POST", "/api/v1/artifacts", upload_artifact,
             "Upload an artifact (raw body, at most 64 MiB); content-addressed by SHA-256",
             role=Role.OPERATOR, tag="registry", response=UploadOut,
             max_body=MAX_ARTIFACT_BYTES, upload="application/octet-stream",
             success=(200, 201)),
    ApiRoute("GET", "/api/v1/artifacts/{sha256}", download_artifact,
             "Download an uploaded artifact", role=Role.VIEWER, tag="registry",
             params=ArtifactPath, content_type="application/octet-stream"),
)
