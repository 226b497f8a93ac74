"""Shared by the audit security tests: a state store on SQLite or PostgreSQL that the
real ``splitway`` process uses and a test can tamper with behind its back, and the real
CLI run as a subprocess that is always reaped."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.control.conftest import BACKENDS, PG_URL, Target
from tests.harness import in_schema, pg_schema, proxy_config, run_cli, write_config

AUDIT_ENV = ("SPLITWAY_AUDIT_HMAC_KEY", "SPLITWAY_AUDIT_HMAC_KEY_NEW",
             "SPLITWAY_AUDIT_HMAC_PREVIOUS_KEYS")


@dataclass
class Db:
    """A database for one test: ``url`` for splitway, ``target`` for tampering."""

    target: Target
    url: str

    def count(self, table: str = "audit_events") -> int:
        return int(self.target.raw(f"SELECT COUNT(*) FROM {table}")[0][0])

    def config(self, tmp_path: Path) -> Path:
        cfg = proxy_config({"v1": ["http://127.0.0.1:9"]}, [
            {"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
             "split": {"weights": {"a": 1}}}], state=self.url)
        return write_config(tmp_path, cfg)


@pytest.fixture(params=BACKENDS, name="db")
def db_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Db]:
    """``db``: SQLite, and PostgreSQL (a fresh schema) with SPLITWAY_TEST_POSTGRES_URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/state.db"
        yield Db(Target("sqlite", url), url)
        return
    assert PG_URL
    with pg_schema(PG_URL, "sw_audit") as schema:
        yield Db(Target("postgres", PG_URL, schema), in_schema(PG_URL, schema))


def clean_env(**keys: str | None) -> dict[str, str]:
    """The environment without any audit key, plus ``keys`` (None: left out)."""
    env = {k: v for k, v in os.environ.items() if k not in AUDIT_ENV}
    return {**env, **{k: v for k, v in keys.items() if v is not None}}


async def splitway(*args: str, env: dict[str, str], timeout: float = 30,
                   cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the real CLI to its end with exactly ``env``."""
    return await run_cli(*args, env=env, timeout=timeout, cwd=cwd)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def raw(db: Db, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    return db.target.raw(statement, params)
