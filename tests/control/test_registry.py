"""The registry on real databases (SQLite and PostgreSQL): registration, duplicates,
listing by precedence, latest per stage, compare, content-addressed artifacts, one
production version per model, rollback of a failed step with its audit event."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from control.approvals import Policy, Stage
from control.artifacts import get_artifact, put_artifact
from control.auth import Principal, Role
from control.model_version import ArtifactRef, Lineage, NewVersion
from control.promotions import Promotions
from control.registry import Registry
from control.store import Store
from proxy.errors import ConflictError, InvalidInputError, NotFoundError, StoreError

if TYPE_CHECKING:
    from tests.control.conftest import Target

ALICE = Principal("alice", frozenset({Role.OPERATOR}))
BOB = Principal("bob", frozenset({Role.APPROVER}))
CAROL = Principal("carol", frozenset({Role.APPROVER}))


def new(version: str, model: str = "sentiment", **kw: Any) -> NewVersion:
    return NewVersion(model, version, kw.pop("backend", "sentiment-v1"), **kw)


async def to_production(store: Store, model: str, version: str) -> None:
    promotions = Promotions(store, Policy())
    p = await promotions.request(model, version, "staging", "tests pass", ALICE)
    await promotions.approve(p.id, BOB)
    p = await promotions.request(model, version, "production", "canary was clean", ALICE)
    await promotions.approve(p.id, BOB)
    await promotions.approve(p.id, CAROL)


async def count_events(store: Store) -> int:
    return len(await store.audit.query(limit=10_000))


async def test_register_and_read_back(store: Store) -> None:
    reg = Registry(store)
    art = await put_artifact(store, b"weights" * 1000)
    await reg.register(new("1.0.0"), "alice")
    v = await reg.register(new(
        "1.1.0", description="bigger", metrics={"accuracy": 0.93, "f1": 1}, tags=("nlp",),
        params={"layers": [64, 64], "lr": 0.001},
        lineage=Lineage("1.0.0", "abc1234", "sha256:" + "0" * 64),
        artifact=ArtifactRef(sha256=art.sha256)), "alice")
    assert v.stage is Stage.DEVELOPMENT and v.stage_promotion_id is None
    assert v == await reg.get("sentiment", "1.1.0")
    doc = v.to_dict()
    assert doc["artifact"] == {"sha256": art.sha256, "size": 7000}
    assert doc["lineage"] == {"parent": "1.0.0", "commit": "abc1234",
                              "dataset_digest": "sha256:" + "0" * 64}
    assert doc["metrics"] == {"accuracy": 0.93, "f1": 1}
    assert doc["params"] == {"layers": [64, 64], "lr": 0.001}
    events = await store.audit.query(type="model.registered")
    assert [e.resource for e in events] == ["model/sentiment@1.0.0", "model/sentiment@1.1.0"]
    assert events[1].actor == "alice"
    assert events[1].details == {
        "model": "sentiment", "version": "1.1.0", "backend": "sentiment-v1",
        "artifact": {"sha256": art.sha256, "size": 7000}, "lineage": doc["lineage"]}
    assert (await store.audit.verify()).ok


async def test_duplicate_registration_is_409_and_writes_nothing(store: Store) -> None:
    reg = Registry(store)
    await reg.register(new("1.0.0", artifact=ArtifactRef(uri="s3://models/s/1.0.0")), "alice")
    before = await count_events(store)
    with pytest.raises(ConflictError):
        await reg.register(new("1.0.0", backend="other"), "bob")
    assert await count_events(store) == before
    assert (await reg.get("sentiment", "1.0.0")).backend == "sentiment-v1"


@pytest.mark.parametrize(("kw", "field"), [
    ({"version": "1.0"}, "version"),
    ({"model": "../etc"}, "model"),
    ({"backend": "a/b"}, "backend"),
    ({"tags": ("ok", "NOT OK")}, "tags[1]"),
    ({"metrics": {"acc": float("nan")}}, "metrics.acc"),
    ({"lineage": Lineage(parent="0.9.0")}, "lineage.parent"),  # not registered
    ({"lineage": Lineage(parent="1.0")}, "lineage.parent"),
    ({"lineage": Lineage(commit="xyz")}, "lineage.commit"),
    ({"artifact": ArtifactRef(sha256="0" * 64)}, "artifact.sha256"),  # not uploaded
    ({"artifact": ArtifactRef(uri="not a uri")}, "artifact.uri"),
    ({"artifact": ArtifactRef()}, "artifact"),
])
async def test_bad_registrations_are_422(store: Store, kw: dict[str, Any], field: str) -> None:
    args = {"model": "sentiment", "version": "1.0.0", "backend": "b", **kw}
    with pytest.raises(InvalidInputError) as err:
        await Registry(store).register(NewVersion(**args), "alice")
    assert err.value.field == field
    assert await count_events(store) == 0


async def test_listing_filters_and_precedence(store: Store) -> None:
    reg = Registry(store)
    for v in ("1.9.0-rc.1", "1.10.0", "1.9.0", "2.0.0-alpha"):
        await reg.register(new(v, tags=("gpu",) if v.startswith("1.9") else ()), "alice")
    await reg.register(new("0.1.0", model="other"), "alice")
    assert [v.version for v in await reg.list_versions("sentiment")] == [
        "2.0.0-alpha", "1.10.0", "1.9.0", "1.9.0-rc.1"]
    assert [v.version for v in await reg.list_versions("sentiment", tag="gpu")] == [
        "1.9.0", "1.9.0-rc.1"]
    assert await reg.list_versions("sentiment", stage=Stage.PRODUCTION) == []
    with pytest.raises(NotFoundError):
        await reg.list_versions("missing")
    models = await reg.list_models()
    assert [(m["name"], m["versions"], m["latest"], m["production"]) for m in models] == [
        ("other", 1, "0.1.0", None), ("sentiment", 4, "2.0.0-alpha", None)]


async def test_one_production_version_and_latest_per_stage(store: Store) -> None:
    reg = Registry(store)
    for v in ("1.0.0", "1.1.0", "1.2.0"):
        await reg.register(new(v), "alice")
    await to_production(store, "sentiment", "1.0.0")
    await to_production(store, "sentiment", "1.1.0")
    stages = {v.version: v.stage for v in await reg.list_versions("sentiment")}
    assert stages == {"1.2.0": Stage.DEVELOPMENT, "1.1.0": Stage.PRODUCTION,
                      "1.0.0": Stage.ARCHIVED}
    latest = await reg.latest("sentiment")
    assert {s: v.version if v else None for s, v in latest.items()} == {
        Stage.DEVELOPMENT: "1.2.0", Stage.STAGING: None, Stage.PRODUCTION: "1.1.0",
        Stage.ARCHIVED: "1.0.0"}
    archived = await store.audit.query(type="model.archived")
    assert len(archived) == 1
    assert archived[0].resource == "model/sentiment@1.0.0"
    assert archived[0].details == {
        "model": "sentiment", "version": "1.0.0", "from": "production",
        "reason": "superseded by 1.1.0",
        "promotion_id": (await reg.get("sentiment", "1.1.0")).stage_promotion_id}
    # the partial unique index backs the rule even behind the service's back
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await tx.execute("UPDATE model_versions SET stage = 'production' "
                             "WHERE model = 'sentiment' AND version = '1.2.0'")
    assert (await store.audit.verify()).ok


async def test_compare(store: Store) -> None:
    reg = Registry(store)
    await reg.register(new("1.0.0", metrics={"acc": 0.8, "loss": 0.0, "old": 1}), "alice")
    await reg.register(new("1.1.0", metrics={"acc": 0.9, "loss": 0.5, "new": 2}), "alice")
    out = await reg.compare("sentiment", "1.0.0", "1.1.0")
    m = out["metrics"]
    assert m["acc"]["diff"] == pytest.approx(0.1) and m["acc"]["rel_diff"] == pytest.approx(0.125)
    assert m["loss"] == {"a": 0.0, "b": 0.5, "diff": 0.5, "rel_diff": None}
    assert m["old"] == {"a": 1, "b": None, "diff": None, "rel_diff": None}
    assert m["new"]["a"] is None and m["new"]["b"] == 2
    with pytest.raises(NotFoundError):
        await reg.compare("sentiment", "1.0.0", "9.9.9")
    with pytest.raises(InvalidInputError) as err:
        await reg.compare("sentiment", "1.0.0", "latest")
    assert err.value.field == "b"


async def test_artifacts_are_content_addressed_and_deduplicated(
    target: Target, store: Store
) -> None:
    blob = bytes(range(256)) * 4096  # 1 MiB, every byte value
    first = await put_artifact(store, blob)
    again = await put_artifact(store, blob)
    other = await put_artifact(store, b"other")
    assert first.created and not again.created and other.created
    assert first.sha256 == again.sha256 != other.sha256 and first.size == len(blob)
    assert await get_artifact(store, first.sha256) == blob
    assert target.raw("SELECT count(*) FROM artifacts")[0][0] == 2
    reg = Registry(store)
    for v in ("1.0.0", "1.0.1"):  # two versions may share the same bytes
        await reg.register(new(v, artifact=ArtifactRef(sha256=first.sha256)), "alice")
    assert (await reg.get("sentiment", "1.0.1")).artifact == ArtifactRef(
        sha256=first.sha256, size=len(blob))
    with pytest.raises(NotFoundError):
        await get_artifact(store, "f" * 64)
    with pytest.raises(InvalidInputError):
        await put_artifact(store, b"")


async def test_a_failing_step_rolls_back_everything(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = Registry(store)
    await reg.register(new("1.0.0"), "alice")
    await reg.register(new("1.1.0"), "alice")
    await to_production(store, "sentiment", "1.0.0")
    promotions = Promotions(store, Policy())
    p = await promotions.request("sentiment", "1.1.0", "staging", "ok", ALICE)
    await promotions.approve(p.id, BOB)
    p = await promotions.request("sentiment", "1.1.0", "production", "ok", ALICE)
    await promotions.approve(p.id, BOB)
    before = await count_events(store)

    import control.promotions as module

    real = module.set_stage
    calls: list[str] = []

    async def failing(*args: Any) -> None:
        calls.append(args[2])
        if len(calls) == 2:  # the previous production version is archived; then this fails
            raise RuntimeError("disk full")
        await real(*args)

    monkeypatch.setattr(module, "set_stage", failing)
    with pytest.raises(RuntimeError):
        await promotions.approve(p.id, CAROL)
    assert calls == ["1.0.0", "1.1.0"]
    monkeypatch.undo()
    assert (await reg.get("sentiment", "1.0.0")).stage is Stage.PRODUCTION
    assert (await reg.get("sentiment", "1.1.0")).stage is Stage.STAGING
    after = await promotions.get(p.id)
    assert after.state == "pending" and [r.reviewer for r in after.reviews] == ["bob"]
    assert await count_events(store) == before  # the audit events rolled back too
    assert (await store.audit.verify()).ok
    await promotions.approve(p.id, CAROL)  # and the same step succeeds afterwards
    assert (await reg.get("sentiment", "1.1.0")).stage is Stage.PRODUCTION


async def test_failed_audit_append_rolls_back_registration(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: Any, **kw: Any) -> None:
        raise StoreError("audit unavailable")

    monkeypatch.setattr(store.audit, "append", broken)
    with pytest.raises(StoreError):
        await Registry(store).register(new("1.0.0"), "alice")
    monkeypatch.undo()
    assert await Registry(store).find("sentiment", "1.0.0") is None
    with pytest.raises(NotFoundError):
        await Registry(store).list_versions("sentiment")  # the model row rolled back too
