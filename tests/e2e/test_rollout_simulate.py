"""``splitway rollout simulate`` through the real command: a config file in, JSON or a
table out, and one-line errors (exit 2) for bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.harness import proxy_config, run_cli, write_config

STEPS = [3 * i for i in range(1, 31)] + [100]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    rollout = {"baseline": "stable", "candidate": "canary", "steps": STEPS,
               "step_interval_s": 30,
               "analysis": {"min_requests": 300, "max_error_rate": 0.01}}
    cfg = proxy_config({"v1": ["http://127.0.0.1:1"], "v2": ["http://127.0.0.1:2"]}, [
        {"name": "checkout", "match": {"path_prefix": "/"},
         "variants": {"stable": "v1", "canary": "v2"},
         "split": {"weights": {"stable": 100}}, "rollout": rollout},
        {"name": "sparse", "match": {"path_prefix": "/sparse"},
         "variants": {"stable": "v1", "canary": "v2"}, "split": {"weights": {"stable": 100}},
         "rollout": {**rollout, "analysis": {"min_requests": 20, "max_error_rate": 0.01}}},
        {"name": "plain", "match": {"path_prefix": "/plain"}, "variants": {"stable": "v1"},
         "split": {"weights": {"stable": 100}}}])
    return write_config(tmp_path, cfg)


async def simulate(config: Path, *args: str) -> tuple[int, str, str]:
    return await run_cli("rollout", "simulate", "-c", str(config), *args, timeout=100)


async def simulate_json(config: Path, *args: str) -> dict[str, Any]:
    code, out, err = await simulate(config, "--route", "checkout", "--rps", "400", *args, "--json")
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


RUNS = 20

#: The issue's scenarios (its acceptance list) as command lines, and what each must show.
SCENARIOS = [
    ("identical candidate at the 1 % limit", "checkout",
     ["--baseline-error", "0.01", "--candidate-error", "0.01"],
     {"rolled_back": 0}),
    ("0.8 % against a 1 % limit (baseline 0.5 %)", "checkout",
     ["--baseline-error", "0.005", "--candidate-error", "0.008"],
     {"rolled_back": 0}),
    ("10 % errors", "checkout", ["--candidate-error", "0.10"],
     {"rolled_back": RUNS, "rolled_back_by": {"error_rate": RUNS},
      "rolled_back_at_step": {"0": RUNS}}),
    ("+80 ms on a 50 ms median", "checkout",
     ["--baseline-error", "0.005", "--candidate-error", "0.005",
      "--candidate-latency-add-ms", "80"],
     {"rolled_back": RUNS, "rolled_back_by": {"latency": RUNS},
      "rolled_back_at_step": {"0": RUNS}}),
    ("1.3x slower under a 1.5 limit, sigma 0.6", "checkout",
     ["--baseline-error", "0.005", "--candidate-error", "0.005", "--latency-sigma", "0.6",
      "--candidate-latency-scale", "1.3"],
     {"rolled_back": 0}),
    ("24 requests a step of a 15 %-failing candidate", "sparse",
     ["--rps", "26.7", "--candidate-error", "0.15"],
     {"promoted": 0, "decided_at_step": {"0": RUNS}}),
]


@pytest.mark.parametrize(("name", "route", "args", "expect"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
async def test_the_issues_scenarios_from_the_command_line(
        config: Path, name: str, route: str, args: list[str], expect: dict[str, Any]) -> None:
    # 400 req/s unless the scenario says otherwise (argparse: the last --rps wins)
    code, out, err = await simulate(config, "--route", route, "--rps", "400", *args,
                              "--runs", str(RUNS), "--seed", "5", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["runs"] == RUNS
    assert {k: doc[k] for k in expect} == expect, (name, doc)
    assert doc["promoted"] + doc["rolled_back"] + doc["inconclusive"] + doc["unfinished"] \
        == RUNS
    low, high = doc["rolled_back_ci95"]
    assert low <= doc["rolled_back_rate"] <= high


async def test_a_healthy_candidate_is_promoted(config: Path) -> None:
    doc = await simulate_json(config, "--baseline-error", "0.001", "--candidate-error", "0.001",
                        "--runs", "5")
    assert doc["promoted"] == 5 and doc["rolled_back"] == 0
    assert doc["median_seconds_to_decision"] >= 30 * 30  # every step judged


async def test_the_same_seed_prints_the_same_json(config: Path) -> None:
    args = ("--candidate-error", "0.03", "--runs", "4", "--seed", "9")
    assert await simulate_json(config, *args) == await simulate_json(config, *args)


async def test_without_json_a_short_table(config: Path) -> None:
    code, out, err = await simulate(config, "--route", "checkout", "--candidate-error", "0.6",
                              "--runs", "4")
    assert code == 0, err
    assert "OUTCOME" in out and re.search(r"rolled back\s+4\s+100.0%", out)
    assert "rolled back by: critical 4" in out


@pytest.mark.parametrize(("args", "says"), [
    (["--route", "nope"], "no route 'nope'"),
    (["--route", "plain"], "route 'plain' has no rollout policy"),
    (["--route", "checkout", "--candidate-error", "-0.01"], "--candidate-error '-0.01'"),
    (["--route", "checkout", "--baseline-error", "1.5"], "--baseline-error '1.5'"),
    (["--route", "checkout", "--latency-sigma", "0"], "--latency-sigma '0'"),
    (["--route", "checkout", "--latency-sigma", "wide"], "--latency-sigma 'wide'"),
    (["--route", "checkout", "--baseline-latency-ms", "nan"], "--baseline-latency-ms 'nan'"),
    (["--route", "checkout", "--candidate-latency-scale", "-2"], "--candidate-latency-scale"),
    (["--route", "checkout", "--candidate-latency-add-ms", "-5"], "--candidate-latency-add-ms"),
    (["--route", "checkout", "--rps", "0"], "--rps '0'"),
    (["--route", "checkout", "--runs", "0"], "--runs '0'"),
    (["--route", "checkout", "--runs", "1e3"], "--runs '1e3'"),
    (["--route", "checkout", "--seed", "x"], "--seed 'x'"),
    (["--route", "checkout", "--look-every", "0.1"], "--look-every '0.1'"),
])
async def test_bad_input_is_one_line_and_exit_2(config: Path, args: list[str], says: str) -> None:
    code, out, err = await simulate(config, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


async def test_a_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    code, _, err = await simulate(tmp_path / "missing.yaml", "--route", "checkout")
    assert code == 2 and "cannot read" in err and "Traceback" not in err
