"""Contributions of processes long gone are folded into one archive, counts unchanged
(the real service on a real SQLite store, with an injected clock)."""

from __future__ import annotations

from pathlib import Path

from control.store import open_store
from proxy.app import ProxyState
from proxy.config_load import parse_settings
from proxy.experiment.book import ExperimentBook
from proxy.experiment.service import NS_COUNTS, STALE_S, ExperimentService


def settings(tmp_path: Path) -> dict[str, object]:
    return {"version": 1, "state": f"sqlite:///{tmp_path}/s.db",
            "backends": {"b": {"endpoints": ["http://127.0.0.1:9"]}},
            "routes": [{"name": "r", "variants": {"a": "b", "c": "b"},
                        "split": {"weights": {"a": 50, "c": 50}},
                        "experiment": {"name": "ab", "control": "a"}}]}


async def test_stale_contributions_are_folded_without_changing_counts(tmp_path: Path) -> None:
    now = [1_000_000.0]
    state = ProxyState(parse_settings(settings(tmp_path)))
    async with open_store(state.settings.state) as store:
        state.store, state.audit = store, store.audit
        await state.start_runtime()
        svc = ExperimentService(state, clock=lambda: now[0])
        await svc.sync()
        for i, (variant, n) in enumerate((("a", 30), ("c", 20), ("a", 5))):
            book = ExperimentBook(("a", "c"))
            for _ in range(n):
                book.record(variant, True, 0.01, weights=lambda: {"a": 50.0, "c": 50.0},
                            weights_key=1, unit=None, fallback=False)
            age = STALE_S + 10 if i < 2 else 1  # two dead processes, one alive
            await store.kv_put(NS_COUNTS, f"ab/host:{i}",
                               {**book.to_json(), "updated_at": now[0] - age})
        first = await svc.look("ab")
        keys = sorted(await store.kv_list(NS_COUNTS))
        assert keys == ["ab/_archive", "ab/host:2", f"ab/{svc.identity}"]
        second = await svc.look("ab")
        assert await svc.compact("ab") == 0
    for report in (first, second):
        assert report["variants"]["a"]["requests"] == 35
        assert report["variants"]["c"]["requests"] == 20
        assert report["srm"]["observed"] == {"a": 35, "c": 20}
