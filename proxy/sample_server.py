"""A sample model server: a real aiohttp server standing in for an inference endpoint.

``splitway demo`` runs two of them, the test suite runs many. Behaviour is set by
:class:`SampleModel` (latency, error rate, predictions) and, for tests, by a few
``/_sample/...`` paths:

* any other path: a prediction, ``{"model": NAME, "predictions": [...], "ok": true}``
  after ``latency_ms`` (± ``jitter_ms``), or a 500 with probability ``error_rate``;
* ``GET /v2/health/ready``: 200 (503 while ``ready`` is false);
* ``GET /_sample/sse?n=N``: N server-sent events; with ``gated=1`` each event after the
  first waits for :meth:`SampleServer.release` (or ``POST /_sample/release``);
* ``GET /_sample/download?bytes=N``: N bytes streamed in 64 KiB chunks;
* ``POST /_sample/upload``: reads the body as a stream, answers its size and SHA-256;
* ``GET /_sample/hang``: never answers (records that the client went away).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class SampleModel:
    name: str
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    prediction: float = 0.5
    # With probability ``differ_rate`` the prediction is shifted by ``differ_by``.
    differ_rate: float = 0.0
    differ_by: float = 0.0
    seed: int | None = None


@dataclass(slots=True)
class SeenRequest:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body_sha256: str
    body_len: int


@dataclass(slots=True, eq=False)
class SampleServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is the base URL."""

    model: SampleModel
    ready: bool = True
    seen: deque[SeenRequest] = field(default_factory=lambda: deque(maxlen=50_000))
    in_flight: int = 0
    peak_in_flight: int = 0
    cancelled: int = 0
    url: str = ""
    _gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    _runner: web.AppRunner | None = None
    _rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.model.seed)

    def release(self, n: int = 1) -> None:
        """Let a gated SSE stream send its next ``n`` events."""
        for _ in range(n):
            self._gate.release()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 34)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/_sample/sse", self._sse)
        app.router.add_get("/_sample/download", self._download)
        app.router.add_post("/_sample/upload", self._upload)
        app.router.add_post("/_sample/release", self._release)
        app.router.add_get("/_sample/hang", self._hang)
        app.router.add_route("*", "/{tail:.*}", self._predict)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers -------------------------------------------------------------------------
    def _track(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.json_response({"ready": self.ready}, status=200 if self.ready else 503)

    async def _predict(self, request: web.Request) -> web.Response:
        self._track()
        try:
            body = await request.read()
            self.seen.append(SeenRequest(
                request.method, request.path_qs, CIMultiDict(request.headers),
                hashlib.sha256(body).hexdigest(), len(body)))
            m = self.model
            delay = max(0.0, m.latency_ms + self._rng.uniform(-m.jitter_ms, m.jitter_ms))
            if delay:
                await asyncio.sleep(delay / 1000)
            if self._rng.random() < m.error_rate:
                return web.json_response({"error": "model failed", "model": m.name}, status=500)
            value = m.prediction
            if self._rng.random() < m.differ_rate:
                value += m.differ_by
            return web.json_response({"model": m.name, "predictions": [value], "ok": True})
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "3"))
        gated = request.query.get("gated") == "1"
        resp = web.StreamResponse(headers={"content-type": "text/event-stream",
                                           "cache-control": "no-cache"})
        await resp.prepare(request)
        self._track()
        try:
            for i in range(n):
                if gated and i > 0:
                    await self._gate.acquire()
                await resp.write(f"id: {i}\ndata: {json.dumps({'event': i})}\n\n".encode())
            await resp.write_eof()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        return resp

    async def _download(self, request: web.Request) -> web.StreamResponse:
        total = int(request.query.get("bytes", "0"))
        resp = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        resp.content_length = total
        await resp.prepare(request)
        block = bytes(range(256)) * (CHUNK // 256)
        sent = 0
        while sent < total:
            piece = block[: min(CHUNK, total - sent)]
            await resp.write(piece)
            sent += len(piece)
        await resp.write_eof()
        return resp

    async def _upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"bytes": size, "sha256": digest.hexdigest()})

    async def _release(self, request: web.Request) -> web.Response:
        self.release(int(request.query.get("n", "1")))
        return web.json_response({"released": True})

    async def _hang(self, request: web.Request) -> web.Response:
        self._track()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        raise AssertionError("unreachable")
