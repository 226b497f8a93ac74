"""YAML limits, through the real ``splitway check``, ``splitway run``, ``POST /api/v1/reload``
and SIGHUP.

Before the fix a config nested 5,000 deep was a ``RecursionError`` traceback from ``check``
and ``run``, a 500 from the reload API and "Task exception was never retrieved" on SIGHUP; a
"billion laughs" file (aliases of aliases) was a few hundred bytes that validation walked as
10⁹ nodes; an integer of 5,000 digits or a 13th month was a ``ValueError`` traceback. Now
each is one line naming the place (exit 2), a 422 naming it, or one logged line with the old
config still serving (:mod:`proxy.yaml_load`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.harness import ProxyProcess, proxy_config, run_cli, running_proxy, write_config

ROUTES = [{"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
           "split": {"weights": {"a": 1}}}]
TOKEN = "op-token-for-yaml-tests"

DEEP = "deep: " + "[" * 5000 + "]" * 5000 + "\n"


def laughs() -> str:
    """Nine levels of nine aliases under ``routes``: 9⁹ (387 million) routes once expanded."""
    lines = ['lol0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nroutes: [*l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8, *l8]\n"


BAD: dict[str, tuple[str, str]] = {
    # name: (YAML appended to a valid config, what the one line says)
    "5000-deep": (DEEP, "nested deeper than 64 levels"),
    "billion-laughs": (laughs(), "more than 100,000 YAML nodes once aliases are expanded"),
    "5000-digit-int": ("huge: " + "9" * 5000 + "\n", "cannot read this value"),
    "month-13": ("when: 2024-13-01\n", "cannot read this value: month must be in 1..12"),
}


def valid_text(tmp_path: Path, **extra: Any) -> str:
    cfg = proxy_config({"v1": ["http://127.0.0.1:9"]}, ROUTES, **extra)
    cfg.setdefault("state", f"sqlite:///{tmp_path / 'state.db'}")
    return yaml.safe_dump(cfg, sort_keys=False)


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", list(BAD))
async def test_check_and_run_refuse_with_one_line(tmp_path: Path, command: str,
                                                  case: str) -> None:
    tail, message = BAD[case]
    path = tmp_path / "splitway.yaml"
    path.write_text(valid_text(tmp_path) + tail)
    code, out, err = await run_cli(command, "-c", str(path), cwd=tmp_path)
    assert code == 2, err
    assert err.count("\n") == 1 and message in err, err
    assert err.startswith(f"{path}: line "), err
    assert "Traceback" not in err and "ready" not in out


async def test_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "splitway.yaml"
    path.write_text(valid_text(tmp_path) + "# " + "x" * (5 << 20) + "\n")
    code, _, err = await run_cli("check", "-c", str(path), cwd=tmp_path)
    assert code == 2
    assert err.strip() == f"{path}: (whole file): larger than 4 MiB, the most YAML splitway reads"


async def test_tokens_file_gets_the_same_limits(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text("tokens: " + "[" * 5000 + "]" * 5000 + "\n")
    path = tmp_path / "splitway.yaml"
    path.write_text(valid_text(tmp_path, admin={"tokens_file": "tokens.yaml"}))
    code, _, err = await run_cli("check", "-c", str(path), cwd=tmp_path)
    assert code == 2 and "Traceback" not in err, err
    assert err.strip() == (f"{path}: admin.tokens_file: {tmp_path / 'tokens.yaml'}: line 1, "
                           "column 72: nested deeper than 64 levels"), err


def test_an_endless_tokens_file_is_read_only_up_to_the_limit(tmp_path: Path) -> None:
    """``admin.tokens_file: /dev/zero`` used to be read whole (``read_bytes``) before the
    4 MiB check, until memory ran out; now at most 4 MiB + 1 byte is read. The child gets
    1 GiB of address space, so the unbounded read fails here instead of on the machine."""
    path = tmp_path / "splitway.yaml"
    path.write_text(valid_text(tmp_path, admin={"tokens_file": "/dev/zero"}))

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run(
        [sys.executable, "-m", "proxy", "check", "-c", str(path)], cwd=tmp_path,
        preexec_fn=limit_memory, capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SPLITWAY_")})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"{path}: admin.tokens_file: /dev/zero: (whole file): "
                                   "larger than 4 MiB, the most YAML splitway reads")


async def logged(p: ProxyProcess, text: str, count: int = 1, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while sum(text in line for line in p.log) < count:
            await asyncio.sleep(0.05)


async def routes(http: aiohttp.ClientSession, p: ProxyProcess) -> Any:
    async with http.get(p.admin_url + "/api/v1/routes",
                        headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert r.status == 200
        return (await r.json())["routes"]


async def reload(http: aiohttp.ClientSession, p: ProxyProcess) -> tuple[int, Any]:
    async with http.post(p.admin_url + "/api/v1/reload",
                         headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        return r.status, await r.json()


def replace_config(tmp_path: Path, text: str) -> None:
    path = tmp_path / "splitway.yaml"
    path.write_text(text)


async def test_reload_api_and_sighup_refuse_and_keep_serving(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": [
        {"sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "user": "olga",
         "roles": ["operator"]}]}))
    cfg = proxy_config({"v1": ["http://127.0.0.1:9"]}, ROUTES, admin={"tokens_file": "tokens.yaml"})
    async with running_proxy(tmp_path, cfg) as p:
        good = (tmp_path / "splitway.yaml").read_text()
        before = await routes(http, p)
        for n, (tail, message) in enumerate(BAD.values(), start=1):
            replace_config(tmp_path, good + tail)
            code, body = await reload(http, p)
            assert code == 422, body
            assert body["error"] == "invalid" and message in body["detail"], body

            p.signal(signal.SIGHUP)
            await logged(p, "reload refused", n)
            line = [x for x in p.log if "reload refused" in x][-1]
            assert message in line, line
            assert await routes(http, p) == before  # the old config keeps serving
        write_config(tmp_path, cfg)  # and a good file is taken again
        assert (await reload(http, p))[0] == 200
    problems: Callable[[str], bool] = lambda x: (  # noqa: E731
        "Traceback" in x or "never retrieved" in x or "RecursionError" in x)
    assert not [x for x in p.log if problems(x)], p.log
