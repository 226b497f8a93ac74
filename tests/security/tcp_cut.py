"""A loopback TCP forwarder a test can cut and restore, to take a server "away" (a
PostgreSQL restart, a network cut) without touching the server other tests share.

``cut()`` aborts every forwarded connection (both sides see a reset) and, until
``restore()``, resets every new connection as soon as it is accepted, the way a port
with nothing listening refuses it; the listening port stays the same throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class TcpCut:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.port = 0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.up = False
        for writer in list(self._open):
            writer.transport.abort()

    def restore(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Every transport is aborted, so each handler ends on its own (cancelling one
        # would make asyncio's stream callback log the cancellation as an error).
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            if not self.up:
                return
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._open.update((writer, up_writer))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except OSError:
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._open.discard(w)
                    w.transport.abort()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()  # one side gone: so is the other


@contextlib.asynccontextmanager
async def tcp_cut(host: str, port: int) -> AsyncIterator[TcpCut]:
    """A running forwarder to ``host:port``, stopped (every connection closed) on exit."""
    fwd = TcpCut(host, port)
    await fwd.start()
    try:
        yield fwd
    finally:
        await fwd.stop()
