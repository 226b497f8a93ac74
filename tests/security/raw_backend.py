"""A backend and a client written on raw asyncio streams, for tests that must see bytes.

:class:`RawBackend` records each request line's target exactly as it came off the wire
(no URL library between the socket and the record: aiohttp's server would hand over a
parsed URL) and the headers as sent. It answers ``status`` with a small JSON body, or
holds each request until :meth:`RawBackend.release` (for concurrency and timeout tests).

:func:`raw_exchange` sends one request written by hand (absolute-form targets, odd
bytes) and reads the response to the end of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Seen:
    method: str
    target: str  # the request line's target, byte for byte (latin-1)
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass(eq=False)
class RawBackend:
    name: str = "raw"
    status: int = 200
    hold: bool = False  # requests wait for release() before they are answered
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    port: int = 0
    _gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def targets(self) -> list[str]:
        return [s.target for s in self.seen]

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.hold = False
        self.release(len(self._tasks) + 1)  # held requests end too
        for writer in list(self._writers):
            writer.transport.abort()
        # Every transport is aborted, so each handler ends on its own.
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = tuple((k.strip(), v.strip()) for k, _, v in
                                (line.partition(":") for line in lines[1:] if line))
                seen = Seen(method, target, headers, b"")
                body = await self._body(reader, seen)
                self.seen.append(Seen(method, target, headers, body))
                self.in_flight += 1
                try:
                    if self.hold:
                        await self._gate.acquire()
                finally:
                    self.in_flight -= 1
                answer = json.dumps({"backend": self.name, "target": target}).encode()
                writer.write(f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
                             f"content-length: {len(answer)}\r\n\r\n".encode() + answer)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _body(reader: asyncio.StreamReader, seen: Seen) -> bytes:
        length = seen.header("content-length")
        if length is not None:
            return await reader.readexactly(int(length))
        if (seen.header("transfer-encoding") or "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                out += await reader.readexactly(size)
                await reader.readexactly(2)
                if size == 0:
                    return bytes(out)
        return b""


@contextlib.asynccontextmanager
async def raw_backend(**kwargs: object) -> AsyncIterator[RawBackend]:
    backend = RawBackend(**kwargs)  # type: ignore[arg-type]
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


async def raw_exchange(url: str, request: bytes, timeout: float = 10) -> RawResponse:
    """Send ``request`` as written to ``url``'s host and port; read the response to EOF
    (write ``Connection: close`` in the request)."""
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:] if line)}
    return RawResponse(int(lines[0].split(" ")[1]), headers, body)
