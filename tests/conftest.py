"""Shared fixtures: sample model servers on loopback and an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from proxy.sample_server import SampleModel, SampleServer

StartServer = Callable[..., Awaitable[SampleServer]]


@pytest.fixture
async def sample_servers() -> AsyncIterator[StartServer]:
    """``await sample_servers("v1", latency_ms=...)`` starts a sample model server."""
    started: list[SampleServer] = []

    async def start(name: str, **kwargs: object) -> SampleServer:
        server = SampleServer(SampleModel(name, **kwargs))  # type: ignore[arg-type]
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
