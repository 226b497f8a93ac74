"""The promotion flow through the real CLI against a running ``splitway run``:
register -> request -> self-approval refused (and audited) -> two approvals ->
production; a second version promoted to production archives the first."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from control.store import open_store
from tests.e2e.test_cli import splitway
from tests.harness import proxy_config, running_proxy

USERS = {"alice": ["operator", "approver"], "bob": ["approver", "viewer"],
         "carol": ["approver", "viewer"]}


def token(user: str) -> str:
    return f"spw_test_{user}"


async def test_register_request_approve_to_production(tmp_path: Path) -> None:
    entries = [{"sha256": hashlib.sha256(token(u).encode()).hexdigest(), "user": u,
                "roles": roles} for u, roles in USERS.items()]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    cfg = proxy_config({"sentiment-v1": ["http://127.0.0.1:9"],
                        "sentiment-v2": ["http://127.0.0.1:9"]}, [
        {"name": "sentiment", "match": {"path_prefix": "/"},
         "variants": {"stable": "sentiment-v1"}, "split": {"weights": {"stable": 100}}}],
        approvals={"staging": {"required": 1}, "production": {"required": 2}})
    cfg["admin"] = {"listen": "127.0.0.1:0", "tokens_file": "tokens.yaml"}
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"onnx" * 5000)

    async with running_proxy(tmp_path, cfg) as p:
        async def as_user(user: str, *args: str) -> tuple[int, str, str]:
            code, out, err = await splitway(*args, env={"SPLITWAY_ADMIN_URL": p.admin_url,
                                                        "SPLITWAY_TOKEN": token(user)})
            assert "Traceback" not in err
            return code, out, err

        async def ok(user: str, *args: str) -> str:
            code, out, err = await as_user(user, *args)
            assert code == 0, (args, err)
            return out

        out = await ok("alice", "models", "register", "sentiment", "1.0.0",
                       "--backend", "sentiment-v1", "--artifact-file", str(artifact),
                       "--metric", "accuracy=0.91", "--param", "lr=0.001", "--tag", "nlp",
                       "--commit", "abc1234", "--description", "first")
        assert "registered sentiment@1.0.0 (development)" in out
        code, _, err = await as_user("alice", "models", "register", "sentiment", "1.0.0",
                                     "--backend", "sentiment-v1")
        assert code == 1 and "409" in err

        pid = (await ok("alice", "promote", "request", "sentiment", "1.0.0", "--stage",
                        "staging", "--justification", "offline eval passed")).strip()
        assert pid.startswith("prm-")
        assert "now staging" in await ok("bob", "promote", "approve", pid)

        prod = (await ok("alice", "promote", "request", "sentiment", "1.0.0", "--stage",
                         "production", "--justification", "canary clean for 24h")).strip()
        code, _, err = await as_user("alice", "promote", "approve", prod)
        assert code == 1 and "403" in err and "cannot approve" in err
        async with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
            violations = await store.audit.query(type="security.violation")
        assert [(e.actor, e.details["promotion_id"], e.details["user"])
                for e in violations] == [("alice", prod, "alice")]

        out = await ok("bob", "promote", "approve", prod, "--comment", "metrics look good")
        assert "pending, 1/2 approvals" in out
        shown = json.loads(await ok("bob", "models", "show", "sentiment", "1.0.0", "--json"))
        assert shown["stage"] == "staging"
        code, _, err = await as_user("bob", "promote", "approve", prod)
        assert code == 1 and "409" in err  # each approver counts once
        await ok("carol", "promote", "comment", prod, "ship it")
        assert "now production" in await ok("carol", "promote", "approve", prod)
        shown = json.loads(await ok("bob", "models", "show", "sentiment", "1.0.0", "--json"))
        assert shown["stage"] == "production" and shown["stage_promotion_id"] == prod
        assert shown["artifact"]["size"] == 20000
        assert shown["metrics"] == {"accuracy": 0.91} and shown["params"] == {"lr": 0.001}
        code, out, _ = await as_user("bob", "models", "gate", "sentiment", "1.0.0")
        assert code == 0 and out.startswith("allowed")

        detail = await ok("bob", "promote", "show", prod)
        assert "approved by bob" in detail and "approved by carol" in detail
        assert "ship it" in detail and "canary clean for 24h" in detail

        # a second version through both stages archives the first
        await ok("alice", "models", "register", "sentiment", "1.1.0", "--backend",
                 "sentiment-v2", "--parent", "1.0.0", "--metric", "accuracy=0.93",
                 "--artifact-uri", "s3://models/sentiment/1.1.0")
        pid = (await ok("alice", "promote", "request", "sentiment", "1.1.0", "--stage",
                        "staging", "--justification", "better accuracy")).strip()
        await ok("carol", "promote", "approve", pid)
        code, _, _ = await as_user("bob", "models", "gate", "sentiment", "1.1.0")
        assert code == 1  # staging does not serve a production route
        pid = (await ok("alice", "promote", "request", "sentiment", "1.1.0", "--stage",
                        "production", "--justification", "replaces 1.0.0")).strip()
        await ok("bob", "promote", "approve", pid)
        await ok("carol", "promote", "approve", pid)

        listing = await ok("bob", "models", "list", "sentiment")
        lines = listing.splitlines()
        assert lines[0].split()[:3] == ["VERSION", "STAGE", "BACKEND"]
        assert [line.split()[:2] for line in lines[1:]] == [
            ["1.1.0", "production"], ["1.0.0", "archived"]]
        assert "sentiment  2" in await ok("bob", "models", "list")
        compared = await ok("bob", "models", "compare", "sentiment", "1.0.0", "1.1.0")
        assert "accuracy" in compared and "+2.20%" in compared
        promotions = json.loads(await ok("bob", "promote", "list", "--json"))["promotions"]
        assert [x["state"] for x in promotions] == ["approved"] * 4

        # bad local input: exit 2 before any request
        for args in (("models", "register", "../etc", "1.0.0", "--backend", "b"),
                     ("models", "show", "sentiment", "1.0"),
                     ("models", "register", "m", "1.0.0", "--backend", "b", "--metric", "a=x"),
                     ("promote", "approve", "../../x"),
                     ("promote", "request", "sentiment", "1.0.0", "--stage", "prod",
                      "--justification", "x")):
            code, _, err = await as_user("alice", *args)
            assert code == 2, (args, err)

    async with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        (archived,) = await store.audit.query(type="model.archived")
        assert archived.details["version"] == "1.0.0"
        assert archived.details["reason"] == "superseded by 1.1.0"
        assert (await store.audit.verify()).ok
