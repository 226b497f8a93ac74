"""A Python load generator, the fallback when ``wrk`` is not installed.

Keeps ``--connections`` requests in flight for ``--duration`` seconds (one keep-alive
connection per worker), each a POST of a small JSON body with an ``x-user-id`` header
cycling through 1000 users -- the same requests as ``bench/report.lua`` -- and prints the
same result line::

    BENCH {"requests": N, "duration_us": N, "errors": N, "non2xx": N, "p50_us": N, ...}

Latencies go into an HdrHistogram (1 us .. 60 s, 3 significant digits). Being Python,
it saturates long before wrk does: its figures are comparable with each other, not with
wrk's.

Usage::

    python bench/loadgen.py http://127.0.0.1:18100/fast/predict -c 8 -d 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp
import uvloop
from hdrh.histogram import HdrHistogram

BODY = b'{"inputs": [[0.1, 0.2, 0.3, 0.4]], "parameters": {"top_k": 1}}'
USERS = 1000


class Totals:
    """What the workers measured."""

    def __init__(self) -> None:
        self.latency = HdrHistogram(1, 60_000_000, 3)
        self.requests = 0
        self.errors = 0
        self.non2xx = 0


async def _worker(session: aiohttp.ClientSession, url: str, first_user: int, deadline: float,
                  totals: Totals) -> None:
    user = first_user
    headers = {"Content-Type": "application/json"}
    while (start := time.perf_counter()) < deadline:
        user = user % USERS + 1
        headers["x-user-id"] = f"user-{user}"
        try:
            async with session.post(url, data=BODY, headers=headers) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    totals.non2xx += 1
        except (aiohttp.ClientError, OSError, TimeoutError):
            totals.errors += 1
            continue
        totals.latency.record_value(max(1, round((time.perf_counter() - start) * 1e6)))
        totals.requests += 1


async def run(url: str, connections: int, duration: float) -> dict[str, float]:
    """Load ``url`` with ``connections`` concurrent keep-alive clients for ``duration`` s."""
    totals = Totals()
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(*(_worker(session, url, i * USERS // connections, deadline, totals)
                               for i in range(connections)))
        elapsed = time.perf_counter() - started
    h = totals.latency
    return {"requests": totals.requests, "duration_us": round(elapsed * 1e6),
            "errors": totals.errors, "non2xx": totals.non2xx,
            "p50_us": h.get_value_at_percentile(50), "p90_us": h.get_value_at_percentile(90),
            "p99_us": h.get_value_at_percentile(99), "max_us": h.get_max_value(),
            "mean_us": round(h.get_mean_value(), 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("-c", "--connections", type=int, default=8)
    p.add_argument("-d", "--duration", type=float, default=10.0, help="seconds")
    args = p.parse_args()
    result = uvloop.run(run(args.url, args.connections, args.duration))
    print("BENCH " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
