"""PromQL checks of a rollout's analysis: fleet-wide figures from a Prometheus server.

Each query is an instant query (``/api/v1/query``) whose ``{route}``, ``{baseline}`` and
``{candidate}`` are replaced; the first sample's value is compared with ``max``/``min``.
A query that fails or returns nothing *holds* the step instead of failing it: a
monitoring outage must not roll a healthy version back.
"""

from __future__ import annotations

import aiohttp

from proxy.config import Rollout
from proxy.rollout import machine as m
from proxy.rollout.analysis import Check


async def prometheus_checks(session: aiohttp.ClientSession, policy: Rollout,
                            st: m.RolloutState) -> list[Check]:
    """Run the policy's PromQL queries (instant queries, first sample's value)."""
    checks = []
    for i, q in enumerate(policy.analysis.prometheus):
        query = q.query.replace("{route}", st.route).replace("{baseline}", st.baseline)
        query = query.replace("{candidate}", st.candidate)
        name = f"prometheus[{i}]"
        try:
            async with session.get(q.url.rstrip("/") + "/api/v1/query",
                                   params={"query": query},
                                   timeout=aiohttp.ClientTimeout(total=q.timeout_s)) as r:
                body = await r.json(content_type=None)
            data = body["data"]
            result = data["result"]
            raw = result[1] if data["resultType"] == "scalar" else (
                result[0]["value"][1] if result else None)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError,
                TypeError) as exc:
            checks.append(Check(name, None, f"query failed: {type(exc).__name__}"))
            continue
        if raw is None:
            checks.append(Check(name, None, f"{query!r} returned no data"))
            continue
        value = float(raw)
        ok = (q.max is None or value <= q.max) and (q.min is None or value >= q.min)
        bounds = " ".join(f"{k} {v:g}" for k, v in (("max", q.max), ("min", q.min))
                          if v is not None)
        checks.append(Check(name, ok, f"{query} = {value:g} ({bounds})"))
    return checks
