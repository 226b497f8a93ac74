"""``splitway demo``: sample model servers, the proxy, traffic, a live canary, a shadow.

Everything runs in this one process and stops on Ctrl-C (or after ``--duration``): the
sample servers, the real proxy (the same :func:`proxy.server.started` that
``splitway run`` uses, with a state store and a tokens file in a temporary directory), a
load generator sending sticky-keyed requests, and two rollouts started through the admin
API: a broken version (15 % errors) that the controller rolls back, then a healthy one that
walks 10 → 25 → 50 → 100 %, both on evidence (the policy: 100 candidate requests per step,
a 5 % error limit, so a few hundred requests show the healthy version's 0.2 % under it; at a
1 % limit that takes about 1,600 — see docs/rollouts.md). Every analysis is printed as it
happens; every second, per variant, the live weight, requests and errors in that second
and latency quantiles, and how often a shadow version (``sentiment-v3``, sent a mirrored
copy of every request) agrees with the live answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import aiohttp

from control.auth import Role, create_token
from proxy.config_load import parse_settings
from proxy.observe import VariantSnapshot, delta, quantiles_ms
from proxy.sample_server import SampleModel, SampleServer
from proxy.server import Started, started

STEP_INTERVAL_S = 2.0
VARIANTS = ("stable", "canary", "broken")


def demo_settings(v1: str, v2: str, v3: str, v4: str, state_dir: Path,
                  ) -> dict[str, object]:
    return {
        "version": 1,
        "listen": "127.0.0.1:0",
        "admin": {"listen": "127.0.0.1:0", "tokens_file": str(state_dir / "tokens.yaml")},
        "state": f"sqlite:///{state_dir / 'demo-state.db'}",
        "backends": {"sentiment-v1": {"endpoints": [v1]}, "sentiment-v2": {"endpoints": [v2]},
                     "sentiment-v3": {"endpoints": [v3]},
                     "sentiment-v4": {"endpoints": [v4]}},
        "routes": [{
            "name": "sentiment",
            "match": {"path_prefix": "/v1/models/sentiment"},
            "variants": {"stable": "sentiment-v1", "canary": "sentiment-v2",
                         "broken": "sentiment-v4"},
            "split": {"strategy": "hash", "hash_on": "header:x-user-id",
                      "weights": {"stable": 100, "canary": 0}, "allow_pin": True},
            "shadow": {"backend": "sentiment-v3", "percent": 100,
                       "compare": {"json_path": "predictions", "rel_tol": 1e-3}},
            "rollout": {"baseline": "stable", "candidate": "canary",
                        "steps": [10, 25, 50, 100], "step_interval_s": STEP_INTERVAL_S,
                        "progress_deadline_s": 60,
                        "analysis": {"min_requests": 100, "max_error_rate": 0.05,
                                     "latency_quantile": 0.5}},
        }],
    }


async def _traffic(url: str, rate: float) -> None:
    """Open-loop load: ``rate`` requests/s, each from one of 10,000 users."""
    users = itertools.cycle(range(10_000))
    interval = 1.0 / rate
    async with aiohttp.ClientSession() as session:
        pending: set[asyncio.Task[None]] = set()

        async def one(user: int) -> None:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(url, json={"instances": ["great movie"]},
                                        headers={"x-user-id": f"user-{user}"}) as r:
                    await r.read()

        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while True:
                task = asyncio.ensure_future(one(next(users)))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def _rollouts(s: Started, token: str, out: TextIO) -> None:
    """Start two rollouts through the admin API and print every analysis as it lands."""
    base = s.admin_url + "/api/v1/routes/sentiment"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        for candidate, label in (("broken", "sentiment-v4, which fails 15% of requests"),
                                 ("canary", "sentiment-v2, a healthy version")):
            await asyncio.sleep(2.0)
            print(f"-- rollout: canary of {label}", file=out, flush=True)
            async with http.post(base + "/rollouts", json={"candidate": candidate}) as r:
                await r.read()
            seen = 0
            while True:
                await asyncio.sleep(0.5)
                async with http.get(base + "/rollout") as r:
                    doc = await r.json()
                for a in doc["analyses"][seen:]:
                    checks = "; ".join(c["detail"] for c in a["checks"])
                    print(f"   analysis step {a['step']}: {a['decision'].upper()}  {checks}",
                          file=out, flush=True)
                seen = len(doc["analyses"])
                if doc["state"] not in ("progressing", "paused"):
                    why = f": {doc['reason']}" if doc["reason"] else ""
                    print(f"-- rollout of {candidate} {doc['state']}{why}", file=out,
                          flush=True)
                    break


def _report(s: Started, last: dict[str, VariantSnapshot], out: TextIO) -> None:
    rt = s.state.current.routes["sentiment"]
    now = rt.stats.snapshots()
    parts = []
    for variant in VARIANTS:
        if variant not in now:
            continue
        d = delta(now[variant], last[variant]) if variant in last else now[variant]
        q = quantiles_ms(d.latency, (50, 99))
        parts.append(f"{variant:>6} w={rt.weights[variant]:>5.1f}% req/s={d.requests:>4} "
                     f"err={d.errors:>2} p50={q['p50']:>5.1f}ms p99={q['p99']:>5.1f}ms")
    last.clear()
    last.update(now)
    print(" | ".join(parts), file=out, flush=True)
    if rt.shadow is not None:
        rep = rt.shadow.book.report("sentiment")
        lo, hi = rep["mismatch_rate_ci95"]
        agree = 1 - rep["mismatch_rate"]
        print(f"        shadow {rep['backend']}: compared {rep['compared']}, agreement "
              f"{agree:.1%} (95% CI {1 - hi:.1%}..{1 - lo:.1%}), dropped {rep['dropped']}, "
              f"p50 {rep['latency_ms']['shadow']['p50']:.1f}ms", file=out, flush=True)


async def run_demo(duration_s: float | None = None, rate: float = 200.0,
                   out: TextIO = sys.stdout,
                   on_ready: Callable[[Started], None] | None = None) -> int:
    v1 = SampleServer(SampleModel("sentiment-v1", latency_ms=20, jitter_ms=5,
                                  error_rate=0.002, seed=1))
    v2 = SampleServer(SampleModel("sentiment-v2", latency_ms=15, jitter_ms=5,
                                  error_rate=0.002, seed=2))
    # The shadow candidate disagrees with the live model on about 5% of requests.
    v3 = SampleServer(SampleModel("sentiment-v3", latency_ms=25, jitter_ms=5,
                                  differ_rate=0.05, differ_by=0.02, seed=3))
    v4 = SampleServer(SampleModel("sentiment-v4", latency_ms=20, jitter_ms=5,
                                  error_rate=0.15, seed=4))
    servers = (v1, v2, v3, v4)
    for server in servers:
        await server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="splitway-demo-") as tmp:
            token = create_token(Path(tmp) / "tokens.yaml", "demo", [Role.ADMIN])
            settings = parse_settings(demo_settings(v1.url, v2.url, v3.url, v4.url, Path(tmp)))
            async with started(settings, config_path=None, env={}) as s:
                url = s.data_urls[0] + "/v1/models/sentiment:predict"
                print(f"splitway demo: proxy {s.data_urls[0]}  admin {s.admin_url}\n"
                      f"  try: curl -s -XPOST {url} -H 'x-user-id: me' -d '{{}}' -i\n"
                      f"       curl -s {s.admin_url}/metrics | grep splitway_requests\n"
                      f"  Ctrl-C stops everything.", file=out, flush=True)
                if on_ready is not None:
                    on_ready(s)
                await _run(s, url, rate, duration_s, token, out)
    finally:
        for server in servers:
            await server.stop()
    return 0


async def _run(s: Started, url: str, rate: float, duration_s: float | None, token: str,
               out: TextIO) -> None:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(_traffic(url, rate)),
                 tg.create_task(_rollouts(s, token, out))]
        last: dict[str, VariantSnapshot] = {}
        loop = asyncio.get_running_loop()
        deadline = None if duration_s is None else loop.time() + duration_s
        try:
            while deadline is None or loop.time() < deadline:
                await asyncio.sleep(1.0)
                _report(s, last, out)
        finally:
            for task in tasks:
                task.cancel()
