"""``/metrics`` after real traffic holds every data-plane family with exact counts."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import StartServer
from tests.harness import proxy_config, running_proxy
from tests.test_metrics import CONTRACT

FAMILIES = CONTRACT  # every data-plane family of contract §11, parser names


async def test_metrics_exact_after_traffic(
    tmp_path: Path, sample_servers: StartServer, http: aiohttp.ClientSession
) -> None:
    ok = await sample_servers("ok")
    bad = await sample_servers("bad", error_rate=1.0)
    cfg = proxy_config({"ok": [ok.url], "bad": [bad.url]}, [
        {"name": "r", "match": {"path_prefix": "/"}, "variants": {"good": "ok", "poor": "bad"},
         "split": {"weights": {"good": 75, "poor": 25}, "allow_pin": True}},
    ])
    async with running_proxy(tmp_path, cfg) as p:
        for i in range(50):
            variant = "good" if i < 30 else "poor"
            async with http.get(p.data_url + "/x", headers={"x-splitway-variant": variant}) as r:
                await r.read()
        async with http.get(p.data_url + "/x", headers={"x-splitway-variant": "zzz"}) as r:
            assert r.status == 400
        async with http.get(p.admin_url + "/metrics") as r:
            assert r.status == 200
            text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in FAMILIES.items():
        assert name in families, name
        assert families[name].type == kind, name

    def value(family: str, sample: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"{sample} {labels} not found")

    assert value("splitway_requests", "splitway_requests_total",
                 route="r", variant="good", code="2xx") == 30
    assert value("splitway_requests", "splitway_requests_total",
                 route="r", variant="poor", code="5xx") == 20
    assert value("splitway_request_duration_seconds", "splitway_request_duration_seconds_count",
                 route="r", variant="good") == 30
    assert value("splitway_request_duration_seconds", "splitway_request_duration_seconds_bucket",
                 route="r", variant="poor", le="+Inf") == 20
    assert value("splitway_variant_weight", "splitway_variant_weight",
                 route="r", variant="poor") == 25
    assert value("splitway_in_flight_requests", "splitway_in_flight_requests", route="r") == 0
