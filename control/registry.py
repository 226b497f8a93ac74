"""The model registry: models, their SemVer versions, metadata, lineage and artifacts.

A version (:mod:`control.model_version`) is registered once, in stage ``development``;
versions are immutable records, so a second registration of the same ``model@version`` is
a 409. Stages then change only through promotions (:mod:`control.promotions`). The
``backend`` is a config backend name, not required to exist yet: a version may be
registered before the config that serves it is deployed. A lineage ``parent`` must be a
registered version of the same model; an artifact given by SHA-256 must have been
uploaded (:mod:`control.artifacts`).

Every write runs in one transaction with its audit event (``model.registered``), after
``tx.lock(REGISTRY_LOCK_KEY)`` so that check-then-write is race-free on PostgreSQL too
(SQLite write transactions are exclusive anyway). Exactly one production version per
model is also enforced by a partial unique index.

Listings sort by SemVer precedence, newest first (:func:`control.versions.newest_first`);
"latest in a stage" is the highest-precedence version in it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from control.approvals import Stage
from control.artifacts import artifact_size
from control.audit import EventType, canonical_json
from control.model_version import ArtifactRef, ModelVersion, NewVersion, check_new_version
from control.versions import check_name, check_version, sort_key
from proxy.errors import ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from control.store import Row, Store, Transaction

REGISTRY_LOCK_KEY = 0x5357_0004  # serialises registry and promotion writes (PostgreSQL)
_SELECT = ("SELECT v.*, a.size AS artifact_size FROM model_versions v "
           "LEFT JOIN artifacts a ON a.sha256 = v.artifact_sha256")


def metric_diff(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Per metric: ``a``, ``b``, ``diff`` (b - a) and ``rel_diff`` ((b - a) / |a|);
    ``None`` where a side lacks the metric or ``a`` is 0."""
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(set(a) | set(b)):
        x, y = a.get(name), b.get(name)
        diff = y - x if x is not None and y is not None else None
        rel = diff / abs(x) if diff is not None and x else None
        out[name] = {"a": x, "b": y, "diff": diff, "rel_diff": rel}
    return out


class Registry:
    """The registry over a state store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def register(self, new: NewVersion, actor: str) -> ModelVersion:
        """Register a version (stage ``development``) and audit ``model.registered``."""
        check_new_version(new)
        store = self.store
        async with store.transaction() as tx:
            await tx.lock(REGISTRY_LOCK_KEY)
            if await self._fetch(tx, new.model, new.version) is not None:
                raise ConflictError(f"{new.model}@{new.version} is already registered")
            lin = new.lineage
            if lin.parent is not None and await self._fetch(tx, new.model, lin.parent) is None:
                raise InvalidInputError(f"{new.model}@{lin.parent} is not registered",
                                        field="lineage.parent")
            art = new.artifact
            if art is not None and art.sha256 is not None:
                size = await artifact_size(tx, art.sha256)
                if size is None:
                    raise InvalidInputError(f"no uploaded artifact {art.sha256}: upload it "
                                            "first (POST /api/v1/artifacts)",
                                            field="artifact.sha256")
                art = ArtifactRef(sha256=art.sha256, size=size)
            now = store.now()
            await tx.execute(
                "INSERT INTO models (name, created_at, created_by) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING", (new.model, now, actor))
            await tx.execute(
                "INSERT INTO model_versions (model, version, stage, stage_promotion_id, "
                "stage_changed_at, description, metrics_json, params_json, tags_json, "
                "lineage_json, backend, artifact_uri, artifact_sha256, created_at, created_by) "
                "VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new.model, new.version, str(Stage.DEVELOPMENT), now, new.description,
                 canonical_json(dict(new.metrics)), canonical_json(dict(new.params)),
                 canonical_json(list(new.tags)), canonical_json(lin.to_dict()), new.backend,
                 art.uri if art else None, art.sha256 if art else None, now, actor))
            await store.audit.append(
                tx, EventType.MODEL_REGISTERED, actor, f"model/{new.model}@{new.version}",
                {"model": new.model, "version": new.version, "backend": new.backend,
                 "artifact": art.to_dict() if art else None, "lineage": lin.to_dict()})
            created = await self._fetch(tx, new.model, new.version)
        assert created is not None
        return created

    @staticmethod
    async def _fetch(tx: Transaction, model: str, version: str) -> ModelVersion | None:
        row = await tx.fetchone(f"{_SELECT} WHERE v.model = ? AND v.version = ?",
                                (model, version))
        return None if row is None else ModelVersion.from_row(row)

    async def find(self, model: str, version: str, *,
                   tx: Transaction | None = None) -> ModelVersion | None:
        """The version, or ``None``."""
        check_name(model, "model")
        check_version(version, "version")
        if tx is not None:
            return await self._fetch(tx, model, version)
        async with self.store.transaction(readonly=True) as own:
            return await self._fetch(own, model, version)

    async def get(self, model: str, version: str, *,
                  tx: Transaction | None = None) -> ModelVersion:
        """The version (404 when it is not registered)."""
        found = await self.find(model, version, tx=tx)
        if found is None:
            raise NotFoundError(f"{model}@{version} is not registered")
        return found

    async def list_models(self) -> list[dict[str, Any]]:
        """Every model: name, version count, newest version, production version."""
        async with self.store.transaction(readonly=True) as tx:
            models = await tx.fetchall("SELECT name, created_at FROM models ORDER BY name")
            rows = await tx.fetchall("SELECT model, version, stage FROM model_versions")
        by_model: dict[str, list[Row]] = {}
        for row in rows:
            by_model.setdefault(row["model"], []).append(row)
        out = []
        for m in models:
            vs = by_model.get(m["name"], [])
            newest = max((r["version"] for r in vs), key=sort_key, default=None)
            prod = next((r["version"] for r in vs if r["stage"] == Stage.PRODUCTION), None)
            out.append({"name": m["name"], "versions": len(vs), "latest": newest,
                        "production": prod, "created_at": m["created_at"]})
        return out

    async def list_versions(self, model: str, *, stage: Stage | None = None,
                            tag: str | None = None) -> list[ModelVersion]:
        """A model's versions (404 for an unknown model), newest first."""
        check_name(model, "model")
        if tag is not None:
            check_name(tag, "tag")
        async with self.store.transaction(readonly=True) as tx:
            if await tx.fetchone("SELECT name FROM models WHERE name = ?", (model,)) is None:
                raise NotFoundError(f"no model {model!r}")
            rows = await tx.fetchall(f"{_SELECT} WHERE v.model = ?", (model,))
        versions = [ModelVersion.from_row(r) for r in rows]
        picked = [v for v in versions
                  if (stage is None or v.stage is stage) and (tag is None or tag in v.tags)]
        return sorted(picked, key=lambda v: sort_key(v.version), reverse=True)

    async def latest(self, model: str) -> dict[Stage, ModelVersion | None]:
        """The highest-precedence version in each stage."""
        versions = await self.list_versions(model)
        return {s: next((v for v in versions if v.stage is s), None) for s in Stage}

    async def compare(self, model: str, a: str, b: str) -> dict[str, Any]:
        """The metric differences between versions ``a`` and ``b`` (b relative to a)."""
        check_version(a, "a")
        check_version(b, "b")
        async with self.store.transaction(readonly=True) as tx:
            va = await self.get(model, a, tx=tx)
            vb = await self.get(model, b, tx=tx)
        return {"model": model, "a": a, "b": b, "metrics": metric_diff(va.metrics, vb.metrics)}


async def set_stage(tx: Transaction, model: str, version: str, stage: Stage,
                    promotion_id: str, at: str) -> None:
    """Move a version to ``stage`` (inside a promotion's transaction)."""
    await tx.execute(
        "UPDATE model_versions SET stage = ?, stage_promotion_id = ?, stage_changed_at = ? "
        "WHERE model = ? AND version = ?", (str(stage), promotion_id, at, model, version))
