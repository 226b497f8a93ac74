"""The model version record: its fields, their validation, and its row and JSON forms.

A version carries a description, metrics (finite numbers), params (any JSON, at most
64 KiB), tags (names), lineage (parent version, source commit, dataset digest), the
backend that serves it and optionally an artifact: a URI, or the SHA-256 of an artifact
uploaded before (:mod:`control.artifacts`). :func:`check_new_version` checks what can be
checked without the store (the registry checks the rest: the parent and the uploaded
artifact must exist) and names the bad field in its 422.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from control.approvals import Stage
from control.artifacts import check_sha256
from control.audit import canonical_json
from control.versions import check_name, check_version
from proxy.errors import InvalidInputError

if TYPE_CHECKING:
    from control.store import Row

COMMIT_RE = re.compile(r"[0-9a-f]{7,64}")
DIGEST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._+-]{0,199}")
URI_RE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s]{1,2040}")
MAX_DESCRIPTION = 4096
MAX_JSON = 64 * 1024


@dataclass(frozen=True, slots=True)
class Lineage:
    """Where a version came from."""

    parent: str | None = None
    commit: str | None = None
    dataset_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"parent": self.parent, "commit": self.commit,
                "dataset_digest": self.dataset_digest}


@dataclass(frozen=True, slots=True)
class ArtifactRef:
    """A version's artifact: a URI, or an uploaded artifact's digest and size."""

    uri: str | None = None
    sha256: str | None = None
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.uri is not None:
            return {"uri": self.uri}
        return {"sha256": self.sha256, "size": self.size}


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A registration request."""

    model: str
    version: str
    backend: str
    description: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    lineage: Lineage = Lineage()
    artifact: ArtifactRef | None = None


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """A registered version and its current stage."""

    model: str
    version: str
    stage: Stage
    stage_promotion_id: str | None
    stage_changed_at: str
    description: str
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: tuple[str, ...]
    lineage: Lineage
    backend: str
    artifact: ArtifactRef | None
    created_at: str
    created_by: str

    @classmethod
    def from_row(cls, row: Row) -> ModelVersion:
        artifact = None
        if row["artifact_uri"] is not None:
            artifact = ArtifactRef(uri=str(row["artifact_uri"]))
        elif row["artifact_sha256"] is not None:
            artifact = ArtifactRef(sha256=str(row["artifact_sha256"]),
                                   size=int(row["artifact_size"]))
        return cls(
            model=row["model"], version=row["version"], stage=Stage(row["stage"]),
            stage_promotion_id=row["stage_promotion_id"],
            stage_changed_at=row["stage_changed_at"], description=row["description"],
            metrics=json.loads(row["metrics_json"]), params=json.loads(row["params_json"]),
            tags=tuple(json.loads(row["tags_json"])),
            lineage=Lineage(**json.loads(row["lineage_json"])), backend=row["backend"],
            artifact=artifact, created_at=row["created_at"], created_by=row["created_by"])

    def to_dict(self) -> dict[str, Any]:
        """The admin API's version document."""
        return {
            "model": self.model, "version": self.version, "stage": str(self.stage),
            "stage_promotion_id": self.stage_promotion_id,
            "stage_changed_at": self.stage_changed_at, "description": self.description,
            "metrics": self.metrics, "params": self.params, "tags": list(self.tags),
            "lineage": self.lineage.to_dict(), "backend": self.backend,
            "artifact": self.artifact.to_dict() if self.artifact else None,
            "created_at": self.created_at, "created_by": self.created_by,
        }  # fmt: skip


def check_new_version(new: NewVersion) -> None:
    """Refuse a registration whose fields are malformed (422 naming the field)."""
    check_name(new.model, "model")
    check_version(new.version, "version")
    check_name(new.backend, "backend")
    if len(new.description) > MAX_DESCRIPTION:
        raise InvalidInputError(f"at most {MAX_DESCRIPTION} characters", field="description")
    for key, value in new.metrics.items():
        if not 0 < len(key) <= 128 or not key.isprintable():
            raise InvalidInputError(f"bad metric name {key!r}", field="metrics")
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise InvalidInputError("metrics are finite numbers", field=f"metrics.{key}")
    for i, tag in enumerate(new.tags):
        check_name(tag, f"tags[{i}]")
    try:
        size = len(canonical_json(dict(new.params)))
    except (TypeError, ValueError):
        raise InvalidInputError("params must be JSON (finite numbers)", field="params") from None
    if size > MAX_JSON:
        raise InvalidInputError(f"params larger than {MAX_JSON} bytes", field="params")
    lin = new.lineage
    if lin.parent is not None:
        check_version(lin.parent, "lineage.parent")
        if lin.parent == new.version:
            raise InvalidInputError("a version is not its own parent", field="lineage.parent")
    if lin.commit is not None and not COMMIT_RE.fullmatch(lin.commit):
        raise InvalidInputError("7 to 64 lowercase hex digits", field="lineage.commit")
    if lin.dataset_digest is not None and not DIGEST_RE.fullmatch(lin.dataset_digest):
        raise InvalidInputError("e.g. sha256:HEX (letters, digits, ':._+-')",
                                field="lineage.dataset_digest")
    art = new.artifact
    if art is not None:
        if (art.uri is None) == (art.sha256 is None):
            raise InvalidInputError("give exactly one of uri and sha256", field="artifact")
        if art.uri is not None and not URI_RE.fullmatch(art.uri):
            raise InvalidInputError("a URI such as s3://bucket/key", field="artifact.uri")
        if art.sha256 is not None:
            check_sha256(art.sha256, "artifact.sha256")
