"""The real ``splitway`` CLI: client commands against a running proxy, token creation,
exit codes, and the demo."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.conftest import StartServer
from tests.harness import proxy_config, running_proxy


async def splitway(*args: str, env: dict[str, str] | None = None,
                   timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_token_routes_weights_through_the_cli(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    v1, v2 = await sample_servers("v1"), await sample_servers("v2")
    tokens = tmp_path / "tokens.yaml"
    code, out, err = await splitway("token", "create", "--tokens-file", str(tokens),
                                    "--user", "olga", "--role", "operator")
    assert code == 0, err
    token = out.strip()
    assert token.startswith("spw_") and token not in tokens.read_text()
    code, _, err = await splitway("token", "create", "--tokens-file", str(tokens),
                                  "--user", "x", "--role", "root")
    assert code == 2 and "Traceback" not in err

    cfg = proxy_config({"v1": [v1.url], "v2": [v2.url]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"stable": "v1", "canary": "v2"},
         "split": {"weights": {"stable": 100, "canary": 0}}}])
    cfg["admin"] = {"listen": "127.0.0.1:0", "tokens_file": "tokens.yaml"}
    async with running_proxy(tmp_path, cfg) as p:
        env = {"SPLITWAY_ADMIN_URL": p.admin_url, "SPLITWAY_TOKEN": token}
        code, out, err = await splitway("routes", env=env)
        assert code == 0, err
        assert "stable=100" in out and "ROUTE" in out
        code, out, err = await splitway("weights", "r", "stable=90", "canary=10", "--json",
                                        env=env)
        assert code == 0, err
        assert json.loads(out)["weights"] == {"stable": 90.0, "canary": 10.0}
        code, _, err = await splitway("weights", "r", "ghost=1", env=env)
        assert code == 2 and "weights.ghost" in err and "Traceback" not in err
        code, _, err = await splitway("weights", "r", "canary=lots", env=env)
        assert code == 2 and "VARIANT=NUMBER" in err
        code, _, err = await splitway("weights", "nope", "a=1", env=env)
        assert code == 1 and "nope" in err
        code, _, err = await splitway("routes", env={**env, "SPLITWAY_TOKEN": "wrong"})
        assert code == 1 and "401" in err
    code, _, err = await splitway("routes", env={"SPLITWAY_ADMIN_URL": p.admin_url})
    assert code == 1 and "cannot reach" in err and "Traceback" not in err


async def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (["no-such-command"], ["run"], ["check"], ["weights"],
                 ["run", "-c", str(tmp_path / "missing.yaml")]):
        code, _, err = await splitway(*args)
        assert code == 2, (args, err)
        assert "Traceback" not in err


async def test_demo_runs_a_live_canary_and_stops_on_ctrl_c() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "demo", "--rate", "100",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(60):
        while not any("rollout of broken rolled_back" in line for line in lines) or not any(
            "rollout of canary succeeded" in line for line in lines
        ):
            line = (await proc.stdout.readline()).decode()
            assert line, "demo exited early"
            lines.append(line)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    report = [line for line in lines if "stable w=" in line]
    assert report and "p99=" in report[-1] and "req/s=" in report[-1]
    assert any("shadow sentiment-v3: compared" in line and "agreement" in line
               for line in lines)
    assert any("analysis step 0: FAIL" in line for line in lines)
    assert any("analysis step 2: PASS" in line for line in lines)
    assert "Traceback" not in err.decode()


async def test_unusable_state_store_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "splitway.yaml"
    cfg.write_text(
        "version: 1\nlisten: 127.0.0.1:0\nadmin: {listen: 127.0.0.1:0}\n"
        f"state: sqlite:///{tmp_path}/missing-dir/state.db\n"
        "backends: {b: {endpoints: ['http://127.0.0.1:9']}}\n"
        "routes: [{name: r, variants: {a: b}, split: {weights: {a: 1}}}]\n")
    code, _, err = await splitway("run", "-c", str(cfg))
    assert code == 1, err
    assert "state store" in err and "Traceback" not in err
