"""Test harness: real sample model servers and the real ``splitway`` process.

Nothing here mocks splitway: :class:`ProxyProcess` runs ``python -m proxy run -c FILE``
with a YAML file written from a dict, waits for its ``splitway ready`` line and talks HTTP
to it; sample model servers are :class:`proxy.sample_server.SampleServer` instances
listening on loopback in the test's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

READY = re.compile(r"splitway ready data=(\S+) admin=(\S+) pid=(\d+)")


def proxy_config(backends: dict[str, list[str]], routes: list[dict[str, Any]],
                 **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "version": 1,
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0"},
        "grace_period_s": 10,
        "backends": {name: {"endpoints": eps, "timeout_s": 5, "connect_timeout_s": 1}
                     for name, eps in backends.items()},
        "routes": routes,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@dataclass
class ProxyProcess:
    config_path: Path
    proc: asyncio.subprocess.Process
    data_url: str = ""
    admin_url: str = ""
    log: list[str] = field(default_factory=list)
    _stderr_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, config_path: Path, *args: str,
                    env: dict[str, str] | None = None) -> ProxyProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy", "run", "-c", str(config_path), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **(env or {})}, cwd=config_path.parent,
            # Its own process group: kill() reaches worker processes too, even when the
            # supervisor is gone (workers inherit its pipes, so a live worker would keep
            # stdout open and a read to EOF would hang).
            start_new_session=True,
        )
        self = cls(config_path, proc)
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())
        assert proc.stdout is not None
        try:
            # A liveness wait (imports and start-up on a loaded machine), not a speed check.
            async with asyncio.timeout(45):
                while True:
                    line = (await proc.stdout.readline()).decode()
                    if not line:
                        await asyncio.sleep(0.2)
                        raise RuntimeError("splitway exited:\n" + "\n".join(self.log))
                    m = READY.search(line)
                    if m:
                        self.data_url, self.admin_url = m.group(1), m.group(2)
                        break
        except BaseException:
            await self.kill()
            raise
        return self

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.log.append(line.decode(errors="replace").rstrip())

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def stop(self, timeout: float = 15) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            await self.kill()
            raise
        await self._finish()
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await self._finish()

    def _kill_group(self) -> None:
        """SIGKILL whatever is left of the process group (workers of a killed supervisor)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    async def _finish(self) -> None:
        self._kill_group()
        if self._stderr_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stderr_task, 5)
            if not self._stderr_task.done():
                self._stderr_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._stderr_task
        if self.proc.stdout is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.proc.stdout.read(), 5)

    def rss_peak_kib(self) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", text).group(1))  # type: ignore[union-attr]


def write_config(tmp_path: Path, cfg: dict[str, Any], name: str = "splitway.yaml") -> Path:
    path = tmp_path / name
    cfg.setdefault("state", f"sqlite:///{tmp_path / 'state.db'}")
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def running_proxy(tmp_path: Path, cfg: dict[str, Any], *args: str,
                        env: dict[str, str] | None = None) -> AsyncIterator[ProxyProcess]:
    p = await ProxyProcess.start(write_config(tmp_path, cfg), *args, env=env)
    try:
        yield p
    finally:
        await p.stop()


async def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
                  timeout: float = 60) -> tuple[int, str, str]:
    """Run the real ``splitway`` CLI to its end: (exit code, stdout, stderr). ``env``
    replaces the environment (default: this one without ``SPLITWAY_*`` variables, so the
    developer's own settings cannot leak in). Killed and reaped if it outlives ``timeout``."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITWAY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=cwd)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.contextmanager
def pg_schema(url: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL schema on ``url`` for one test, dropped afterwards (its name)."""
    import psycopg
    from psycopg import sql

    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def in_schema(url: str, schema: str) -> str:
    """``url`` with libpq's search_path option selecting ``schema``."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
