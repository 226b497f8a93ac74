"""Helpers for rollout end-to-end tests: a webhook receiver, steady load, polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Hooks:
    """A real HTTP server collecting webhook POSTs."""

    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    status: int = 200

    async def _hook(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.Response(status=self.status)


@contextlib.asynccontextmanager
async def webhook_server() -> AsyncIterator[Hooks]:
    hooks = Hooks()
    app = web.Application()
    app.router.add_post("/hook", hooks._hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    hooks.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield hooks
    finally:
        await runner.cleanup()


@dataclass
class Load:
    statuses: Counter[int] = field(default_factory=Counter)
    variants: Counter[str] = field(default_factory=Counter)


@contextlib.asynccontextmanager
async def steady_load(url: str, concurrency: int = 8,
                      headers: Callable[[int], dict[str, str]] | None = None,
                      ) -> AsyncIterator[Load]:
    """Closed-loop load until the block ends; every status is counted."""
    load = Load()
    stop = asyncio.Event()

    async def worker(session: aiohttp.ClientSession, w: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                async with session.post(url, json={"x": i},
                                        headers=headers(i * 100 + w) if headers else None) as r:
                    await r.read()
                    load.statuses[r.status] += 1
                    load.variants[r.headers.get("x-splitway-variant", "")] += 1
            except aiohttp.ClientError:
                load.statuses[0] += 1

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.ensure_future(worker(session, w)) for w in range(concurrency)]
        try:
            yield load
        finally:
            stop.set()
            await asyncio.gather(*tasks)


async def poll(fetch: Callable[[], Any], done: Callable[[Any], bool],
               timeout: float = 60) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            value = await fetch()
            if done(value):
                return value
            await asyncio.sleep(0.1)
