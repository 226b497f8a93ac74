"""A benchmark backend: one :class:`proxy.sample_server.SampleServer` in its own process.

Usage::

    python bench/backend.py --port 18001 --latency-ms 0    # "fast"
    python bench/backend.py --port 18002 --latency-ms 20   # "slow" (20 ms per request)

Runs on uvloop, prints ``backend ready URL`` on stdout once listening and serves until
SIGTERM or SIGINT. Any path other than the ``/_sample/...`` ones answers a small JSON
prediction after ``--latency-ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import deque

import uvloop

from proxy.sample_server import SampleModel, SampleServer


async def serve(host: str, port: int, latency_ms: float, name: str) -> None:
    """Listen until SIGTERM/SIGINT."""
    # seen: keep only the last request (the default keeps 50,000, whose upkeep and GC
    # would be measured as latency).
    server = SampleServer(SampleModel(name=name, latency_ms=latency_ms, seed=1),
                          seen=deque(maxlen=1))
    url = await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"backend ready {url}", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--name", default="bench-model")
    args = p.parse_args()
    uvloop.run(serve(args.host, args.port, args.latency_ms, args.name))


if __name__ == "__main__":
    main()
