"""The ``splitway`` commands a generated pipeline runs exist and accept its arguments:
taken out of a generated GitHub workflow and run with the real CLI against a live
``splitway run`` (with tokens, approvals and routes with rollout policies); then the
deploy scripts themselves, whole, under ``sh``."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from control.ci import CiOptions, generate
from tests.harness import ProxyProcess, proxy_config, running_proxy

SHA = "3f2a9c1e5b7d4a6c8e0f1a2b3c4d5e6f7a8b9c0d"
VERSION = "1.4.0+" + SHA[:8]
DIGEST = "sha256:" + hashlib.sha256(b"dataset").hexdigest()
RUN_URL = "https://github.com/acme/sentiment/actions/runs/42"
CI_VARS = {"GITHUB_SHA": SHA, "VERSION": VERSION, "RUN_URL": RUN_URL, "DATASET_DIGEST": DIGEST}
USERS = {"alice": ["operator"], "bob": ["approver", "viewer"], "carol": ["approver", "viewer"]}
OPTIONS: dict[str, Any] = {
    "platform": "github", "model": "sentiment", "artifact": "model/model.bin",
    "dataset_digest_file": "DATASET_DIGEST", "backend": "sentiment-candidate"}
INVOCATION = re.compile(r"(?:^|\|\||&&|;|\buntil\s|\bif\s)\s*(splitway\s[^;|&>]*)")


def token(user: str) -> str:
    return f"spw_ci_{user}"


def setup(tmp_path: Path, staging: int, production: int) -> dict[str, Any]:
    """Tokens, the model repository's files and a config with a staging and a
    production route, each with a rollout policy requiring its stage."""
    entries = [{"sha256": hashlib.sha256(token(u).encode()).hexdigest(), "user": u,
                "roles": roles} for u, roles in USERS.items()]
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": entries}))
    (tmp_path / "VERSION").write_text("1.4.0\n")
    (tmp_path / "DATASET_DIGEST").write_text(DIGEST + "\n")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.bin").write_bytes(b"weights" * 1000)

    def route(name: str, prefix: str, stage: str) -> dict[str, Any]:
        return {"name": name, "match": {"path_prefix": prefix},
                "variants": {"stable": "sentiment-v1", "canary": "sentiment-candidate"},
                "split": {"weights": {"stable": 100, "canary": 0}},
                "rollout": {"baseline": "stable", "candidate": "canary",
                            "steps": [5, 50, 100], "require_stage": stage}}

    cfg = proxy_config({"sentiment-v1": ["http://127.0.0.1:9"],
                        "sentiment-candidate": ["http://127.0.0.1:9"]},
                       [route("sentiment-staging", "/staging", "staging"),
                        route("sentiment", "/", "production")],
                       approvals={"staging": {"required": staging},
                                  "production": {"required": production}})
    cfg["admin"] = {"listen": "127.0.0.1:0", "tokens_file": "tokens.yaml"}
    return cfg


def pipeline_commands(workflow: dict[str, Any]) -> dict[str, list[list[str]]]:
    """Every ``splitway`` invocation in each job's ``run:`` scripts, CI variables
    substituted, split like the shell would."""
    out: dict[str, list[list[str]]] = {}
    for job_id, job in workflow["jobs"].items():
        for step in job["steps"]:
            for line in step.get("run", "").splitlines():
                for m in INVOCATION.finditer(line.strip()):
                    text = re.sub(r"\$\{?([A-Z_][A-Z0-9_]*)\}?",
                                  lambda v: CI_VARS[v.group(1)], m.group(1))
                    out.setdefault(job_id, []).append(shlex.split(text))
    return out


async def cli(p: ProxyProcess, cwd: Path, argv: list[str], user: str = "alice",
              ) -> tuple[int, str, str]:
    assert argv[0] == "splitway"
    env = {**os.environ, "SPLITWAY_ADMIN_URL": p.admin_url, "SPLITWAY_TOKEN": token(user)}
    proc = await asyncio.create_subprocess_exec(  # cwd: the pipeline's paths are relative
        sys.executable, "-m", "proxy", *argv[1:], cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    raw_out, raw_err = await asyncio.wait_for(proc.communicate(), 30)
    code, out, err = proc.returncode, raw_out.decode(), raw_err.decode()
    assert code is not None
    assert code != 2, (argv, err)  # argparse and local checks accept every argument
    assert "Traceback" not in err
    return code, out, err


async def approve_pending(p: ProxyProcess, cwd: Path, *approvers: str) -> None:
    _, out, _ = await cli(p, cwd, ["splitway", "promote", "list", "--state", "pending",
                                   "--json"], "bob")
    (pending,) = json.loads(out)["promotions"]
    for user in approvers:
        code, _, err = await cli(p, cwd, ["splitway", "promote", "approve", pending["id"]], user)
        assert code == 0, err


async def test_each_pipeline_command_runs_against_a_live_proxy(tmp_path: Path) -> None:
    cfg = setup(tmp_path, staging=1, production=2)
    workflow = yaml.safe_load(generate(CiOptions(**OPTIONS)))
    cmds = pipeline_commands(workflow)
    assert [c[1:4] for c in cmds["validate"]] == [["check", "--no-files", "-c"]]
    assert [c[1:3] for c in cmds["deploy-staging"]] == [
        ["models", "show"], ["models", "register"], ["models", "gate"],
        ["promote", "request"], ["models", "gate"], ["rollout", "start"], ["rollout", "status"]]
    assert [c[1:3] for c in cmds["deploy-production"]] == [
        ["models", "gate"], ["promote", "request"], ["models", "gate"], ["rollout", "start"],
        ["rollout", "status"]]

    async with running_proxy(tmp_path, cfg) as p:
        async def expect(argv: list[str], code: int) -> str:
            got, out, err = await cli(p, tmp_path, argv)
            assert got == code, (argv, out, err)
            return err

        await expect(cmds["validate"][0], 0)
        show, register, guard, request, gate, start, status = cmds["deploy-staging"]
        await expect(show, 1)  # not registered yet: the pipeline registers it
        await expect(register, 0)
        await expect(show, 0)  # a re-run skips the registration
        await expect(guard, 1)
        await expect(request, 0)
        await expect(gate, 1)  # pending: the pipeline waits
        err = await expect(start, 1)
        assert "may not take traffic here" in err and "409" in err  # the gate's refusal
        await approve_pending(p, tmp_path, "bob")
        await expect(gate, 0)
        await expect(start, 0)
        await expect(status, 0)

        guard, request, gate, start, status = cmds["deploy-production"]
        await expect(guard, 1)
        await expect(request, 0)
        await expect(gate, 1)
        err = await expect(start, 1)
        assert "may not take traffic here" in err
        await approve_pending(p, tmp_path, "bob", "carol")
        await expect(gate, 0)
        await expect(start, 0)
        await expect(status, 0)

        _, out, _ = await cli(p, tmp_path, ["splitway", "models", "show", "sentiment", VERSION,
                                            "--json"], "bob")
        version = json.loads(out)
        assert version["stage"] == "production" and version["backend"] == "sentiment-candidate"
        assert version["lineage"] == {"parent": None, "commit": SHA, "dataset_digest": DIGEST}
        artifact = (tmp_path / "model" / "model.bin").read_bytes()
        assert version["artifact"]["sha256"] == hashlib.sha256(artifact).hexdigest()
        assert version["description"] == f"built by {RUN_URL}" and version["tags"] == ["ci"]


async def test_the_deploy_scripts_run_whole_under_sh(tmp_path: Path) -> None:
    cfg = setup(tmp_path, staging=0, production=0)
    jobs = yaml.safe_load(generate(CiOptions(**OPTIONS)))["jobs"]
    async with running_proxy(tmp_path, cfg) as p:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               "GITHUB_SHA": SHA, "RUN_URL": RUN_URL, "SPLITWAY_ADMIN_URL": p.admin_url,
               "SPLITWAY_TOKEN": token("alice")}
        for job in ("deploy-staging", "deploy-production"):
            script = jobs[job]["steps"][-1]["run"]
            proc = await asyncio.create_subprocess_exec(
                "sh", "-c", script, cwd=tmp_path, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), 90)
            assert proc.returncode == 0, (job, stdout.decode(), stderr.decode())
            assert f"deploying sentiment@{VERSION}" in stdout.decode()
        for route in ("sentiment-staging", "sentiment"):
            _, out, _ = await cli(p, tmp_path, ["splitway", "rollout", "status", route,
                                                "--json"], "bob")
            rollout = json.loads(out)
            assert rollout["version"] == f"sentiment@{VERSION}"
            assert rollout["state"] == "progressing"
        assert (await cli(p, tmp_path, ["splitway", "models", "gate", "sentiment", VERSION],
                          "bob"))[0] == 0
