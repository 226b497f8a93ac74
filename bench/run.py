"""One command that benchmarks splitway against its backend and a minimal proxy.

    .venv/bin/python bench/run.py [--duration 10] [--out bench/results.md]

Starts, each as its own process on loopback: a fast (0 ms) and a slow (20 ms) sample
model server (``bench/backend.py``), one yardstick proxy per backend
(``bench/yardstick.py``) and one splitway (``python -m proxy run``, one worker, config
generated below). Then for each backend x connection count it loads three targets in a
row, each for ``--duration`` seconds:

* ``direct``: the backend itself -- the floor;
* ``yardstick``: the backend through the minimal aiohttp pass-through proxy;
* ``splitway``: the backend through splitway, a route with two variants hashed on
  ``x-user-id`` (both variants' backends point at the same server) and an A/B experiment,
  so routing, the split, request ids, forwarding headers, metrics, experiment recording,
  outlier detection and active health checks all run, with the state in a SQLite file.

Every request is a POST of a small JSON body with an ``x-user-id`` header (1000 users in
turn). The load generator is wrk with ``bench/report.lua`` (1 thread), or
``bench/loadgen.py`` when wrk is not installed. The result is a markdown table (req/s,
p50, p99, splitway/yardstick ratio, p50 added over direct, the proxy's CPU time per
request, the cores that other processes on the machine used meanwhile) and a check of
the targets; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from procs import Service, StartError
from sysinfo import CpuMeter, describe

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PY = sys.executable
TARGETS = ("direct", "yardstick", "splitway")
MIN_RATIO = 0.90  # splitway req/s over yardstick req/s
MAX_ADDED_P50_MS = 0.5  # fast backend, 8 connections
NOISY_CORES = 0.25  # other processes' load above which the report carries a warning


@dataclass(frozen=True)
class BackendSpec:
    name: str
    latency_ms: float
    port: int
    yardstick_port: int

    @property
    def path(self) -> str:
        return f"/{self.name}/predict"


@dataclass
class Result:
    backend: str
    conns: int
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    proxy_cpu_us: float | None  # CPU time of the proxy process per request
    other_cores: float  # cores busy with processes outside the bench


# -- configuration ----------------------------------------------------------------------------
def splitway_config(backends: list[BackendSpec], port: int, admin_port: int,
                    state_db: Path) -> dict[str, Any]:
    """One route per backend: two variants, hash split on x-user-id, pins allowed, an A/B
    experiment recording each request's outcome; no shadow (it would double the backend's
    load, which is not what this compares)."""
    cfg: dict[str, Any] = {
        "version": 1,
        "listen": f"127.0.0.1:{port}",
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "state": f"sqlite:///{state_db}",
        "grace_period_s": 1,
        "backends": {},
        "routes": [],
    }
    for b in backends:
        for v in ("v1", "v2"):
            cfg["backends"][f"{b.name}-{v}"] = {
                "endpoints": [f"http://127.0.0.1:{b.port}"],
                "timeout_s": 30, "connect_timeout_s": 2, "max_connections": 256,
                "health_check": {"path": "/v2/health/ready", "interval_s": 5},
            }
        cfg["routes"].append({
            "name": b.name,
            "match": {"path_prefix": f"/{b.name}"},
            "variants": {"v1": f"{b.name}-v1", "v2": f"{b.name}-v2"},
            "split": {"strategy": "hash", "hash_on": "header:x-user-id",
                      "weights": {"v1": 50, "v2": 50}, "allow_pin": True},
            "experiment": {"name": f"{b.name}-ab", "control": "v1",
                           "success": {"status_below": 500}},
        })
    return cfg


def check_ports_free(ports: list[int]) -> None:
    for port in ports:
        with socket.socket() as s:
            # As the servers do: a port whose old connections are in TIME_WAIT is free.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                sys.exit(f"bench: port {port} is in use; pick others with --base-port")


# -- load -------------------------------------------------------------------------------------
def load_command(url: str, conns: int, duration: float, tool: str, pin: str | None
                 ) -> list[str]:
    if tool == "wrk":
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration:g}s", "--timeout", "5s",
               "-s", str(BENCH / "report.lua"), url]
    else:
        cmd = [PY, str(BENCH / "loadgen.py"), url, "-c", str(conns), "-d", str(duration)]
    return ["taskset", "-c", pin, *cmd] if pin else cmd


def run_load(cmd: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH "):
            return dict(json.loads(line[6:]))
    raise RuntimeError(f"no result from {' '.join(cmd)}:\n{out.stdout}\n{out.stderr}")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(backend: str, conns: int, target: str, url: str, duration: float, tool: str,
            pin: str | None, proxy: Service | None, services: list[Service]) -> Result:
    """One bounded load run with CPU accounting around it."""
    meter = CpuMeter()
    before = {s.name: s.cpu_seconds() for s in services}
    gen_before = children_cpu()
    meter.start()
    started = time.monotonic()
    r = run_load(load_command(url, conns, duration, tool, pin), timeout=duration + 30)
    elapsed = time.monotonic() - started
    busy = meter.busy_cores()
    ours = sum(s.cpu_seconds() - before[s.name] for s in services) + children_cpu() - gen_before
    secs = r["duration_us"] / 1e6
    requests = r["requests"]
    proxy_cpu = (proxy.cpu_seconds() - before[proxy.name]) / requests * 1e6 if (
        proxy is not None and requests) else None
    return Result(backend, conns, target, rps=requests / secs, p50_ms=r["p50_us"] / 1000,
                  p99_ms=r["p99_us"] / 1000, errors=r["errors"] + r["non2xx"],
                  proxy_cpu_us=proxy_cpu, other_cores=max(0.0, busy - ours / elapsed))


def smoke(url: str, expect_variant: bool) -> None:
    """One request before loading: 200, and splitway's variant header where expected."""
    req = urllib.request.Request(url, data=b'{"inputs": [[1, 2]]}', method="POST",
                                 headers={"content-type": "application/json",
                                          "x-user-id": "smoke"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        if resp.status != 200 or (expect_variant and "x-splitway-variant" not in resp.headers):
            raise RuntimeError(f"smoke request to {url} failed: {resp.status} {resp.headers}")


def variant_counts(admin_url: str) -> dict[str, float]:
    """Requests splitway counted per route/variant (from /metrics)."""
    text = urllib.request.urlopen(f"{admin_url}/metrics", timeout=5).read().decode()
    counts: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line.startswith("splitway_requests_total{"):
            labels, _, value = line.rpartition(" ")
            route = labels.split('route="')[1].split('"')[0]
            variant = labels.split('variant="')[1].split('"')[0]
            counts[f"{route}/{variant}"] += float(value)
    return dict(counts)


def experiment_counts(admin_url: str, names: list[str]) -> dict[str, float]:
    """Requests each A/B experiment recorded per variant (best effort: {} on failure)."""
    counts: dict[str, float] = {}
    for name in names:
        try:
            data = json.load(urllib.request.urlopen(
                f"{admin_url}/api/v1/experiments/{name}", timeout=5))
            for variant, figures in data["variants"].items():
                counts[f"{name}/{variant}"] = float(figures["requests"])
        except (OSError, ValueError, KeyError):
            continue
    return counts


# -- report -----------------------------------------------------------------------------------
def aggregate(results: list[Result]) -> dict[tuple[str, int, str], Result]:
    """Median of each figure over repeats, per (backend, conns, target)."""
    groups: dict[tuple[str, int, str], list[Result]] = defaultdict(list)
    for r in results:
        groups[(r.backend, r.conns, r.target)].append(r)

    def med(xs: list[float | None]) -> float | None:
        vals = [x for x in xs if x is not None]
        return statistics.median(vals) if vals else None

    out = {}
    for key, rs in groups.items():
        out[key] = Result(*key, rps=med([r.rps for r in rs]) or 0.0,
                          p50_ms=med([r.p50_ms for r in rs]) or 0.0,
                          p99_ms=med([r.p99_ms for r in rs]) or 0.0,
                          errors=sum(r.errors for r in rs),
                          proxy_cpu_us=med([r.proxy_cpu_us for r in rs]),
                          other_cores=max(r.other_cores for r in rs))
    return out


def render(agg: dict[tuple[str, int, str], Result], info: dict[str, str],
           settings: str, counts: dict[str, float], experiments: dict[str, float]) -> str:
    lines = ["| backend | conns | target | req/s | p50 ms | p99 ms | vs yardstick "
             "| added p50 ms | proxy CPU µs/req | errors | other load (cores) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for (backend, conns, target), r in sorted(agg.items(), key=lambda kv: (
            kv[0][0] != "fast", kv[0][1], TARGETS.index(kv[0][2]))):
        direct = agg.get((backend, conns, "direct"))
        yard = agg.get((backend, conns, "yardstick"))
        ratio = f"{r.rps / yard.rps:.2f}" if yard and target == "splitway" else ""
        added = f"{r.p50_ms - direct.p50_ms:+.2f}" if direct and target != "direct" else ""
        cpu = f"{r.proxy_cpu_us:.0f}" if r.proxy_cpu_us is not None else ""
        lines.append(f"| {backend} | {conns} | {target} | {r.rps:,.0f} | {r.p50_ms:.2f} "
                     f"| {r.p99_ms:.2f} | {ratio} | {added} | {cpu} | {r.errors} "
                     f"| {r.other_cores:.2f} |")
        if target == "splitway" and yard:
            ok = r.rps / yard.rps >= MIN_RATIO
            cpu_ratio = (f"; by proxy CPU per request, yardstick/splitway = "
                         f"{yard.proxy_cpu_us / r.proxy_cpu_us:.2f}"
                         if yard.proxy_cpu_us and r.proxy_cpu_us else "")
            verdicts.append(f"- {backend}, {conns} conns: splitway/yardstick = "
                            f"{r.rps / yard.rps:.2f} (target ≥ {MIN_RATIO:.2f}): "
                            f"{'met' if ok else 'NOT met'}{cpu_ratio}")
        if target == "splitway" and direct and backend == "fast" and conns == 8:
            added_ms = r.p50_ms - direct.p50_ms
            verdicts.append(f"- fast, 8 conns: added p50 = {added_ms:.2f} ms "
                            f"(target < {MAX_ADDED_P50_MS} ms): "
                            f"{'met' if added_ms < MAX_ADDED_P50_MS else 'NOT met'}")
    busiest = max((r.other_cores for r in agg.values()), default=0.0)
    if busiest > NOISY_CORES:
        verdicts.append(f"- WARNING: processes outside the bench used up to {busiest:.2f} "
                        "cores during these runs; with 2 cores that depresses and skews every "
                        "figure. Compare within a row group, or run again on a quiet machine.")
    machine = [f"- {k}: {v}" for k, v in info.items()]
    split = ", ".join(f"{k}={v:,.0f}" for k, v in sorted(counts.items()))
    ab = ", ".join(f"{k}={v:,.0f}" for k, v in sorted(experiments.items())) or "none"
    return "\n".join([
        "## Machine", *machine, "", "## Settings", settings, "", "## Results", *lines, "",
        "## Targets", *verdicts, "",
        f"splitway's own count of requests per route/variant (all runs, warm-up included): "
        f"{split}; recorded by the A/B experiments: {ab}.", ""])


# -- main -------------------------------------------------------------------------------------
def main() -> int:
    p = argparse.ArgumentParser(description="splitway throughput/latency bench")
    p.add_argument("--duration", type=int, default=10, help="seconds per run")
    p.add_argument("--warmup", type=int, default=2, help="seconds per target, unmeasured")
    p.add_argument("--connections", default="8,64", help="comma-separated")
    p.add_argument("--repeat", type=int, default=1, help="rounds; figures are medians")
    p.add_argument("--tool", choices=("auto", "wrk", "python"), default="auto")
    p.add_argument("--pin-wrk", default="", metavar="CPUS",
                   help="taskset CPU list for the load generator (default: not pinned)")
    p.add_argument("--base-port", type=int, default=18000)
    p.add_argument("--out", type=Path, help="also write the markdown here")
    args = p.parse_args()

    tool = ("wrk" if shutil.which("wrk") else "python") if args.tool == "auto" else args.tool
    conns_list = [int(c) for c in args.connections.split(",")]
    base = args.base_port
    backends = [BackendSpec("fast", 0, base + 1, base + 101),
                BackendSpec("slow", 20, base + 2, base + 102)]
    sw_port, admin_port = base + 200, base + 290
    check_ports_free([x for b in backends for x in (b.port, b.yardstick_port)]
                     + [sw_port, admin_port])
    info = describe()
    if tool == "python":
        info["load generator"] = "bench/loadgen.py (Python, aiohttp)"
    settings = (f"- {args.duration:g} s per run, {args.warmup:g} s warm-up per target, "
                f"{args.repeat} round(s), connections {conns_list}, "
                f"load generator {'wrk -t1 + bench/report.lua' if tool == 'wrk' else tool}, "
                f"pinned to CPUs {args.pin_wrk or 'none (not pinned)'}; splitway 1 worker")

    # SIGTERM unwinds like Ctrl-C, so the ExitStack below stops every service.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: list[Result] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="splitway-bench-")))
        services: list[Service] = []

        def start(name: str, cmd: list[str], ready: str) -> Service:
            s = Service.start(name, cmd, ready, tmp, cwd=ROOT)
            stack.callback(s.stop)
            services.append(s)
            return s

        for b in backends:
            start(f"backend-{b.name}", [PY, str(BENCH / "backend.py"), "--port", str(b.port),
                                        "--latency-ms", str(b.latency_ms), "--name", b.name],
                  r"backend ready")
            start(f"yardstick-{b.name}", [PY, str(BENCH / "yardstick.py"), "--port",
                                          str(b.yardstick_port), "--upstream",
                                          f"http://127.0.0.1:{b.port}"], r"yardstick ready")
        config = tmp / "splitway.yaml"
        config.write_text(yaml.safe_dump(splitway_config(backends, sw_port, admin_port,
                                                         tmp / "state.db"), sort_keys=False))
        sw = start("splitway", [PY, "-m", "proxy", "run", "-c", str(config),
                                "--log-level", "WARNING"],
                   r"splitway ready data=(\S+) admin=(\S+)")
        assert sw.match is not None
        admin_url = sw.match.group(2)
        by_name = {s.name: s for s in services}

        def targets(b: BackendSpec) -> dict[str, tuple[str, Service | None]]:
            return {
                "direct": (f"http://127.0.0.1:{b.port}{b.path}", None),
                "yardstick": (f"http://127.0.0.1:{b.yardstick_port}{b.path}",
                              by_name[f"yardstick-{b.name}"]),
                "splitway": (f"http://127.0.0.1:{sw_port}{b.path}", sw),
            }

        for b in backends:
            for target, (url, _) in targets(b).items():
                smoke(url, expect_variant=target == "splitway")
        total = len(backends) * len(conns_list) * len(TARGETS)
        eta = total * args.repeat * args.duration + len(backends) * 3 * args.warmup
        print(f"bench: {total * args.repeat} runs with {tool}, about {eta:.0f} s",
              file=sys.stderr)
        for rnd in range(args.repeat):
            for b in backends:
                if rnd == 0 and args.warmup > 0:
                    for url, _ in targets(b).values():
                        run_load(load_command(url, max(conns_list), args.warmup, tool,
                                              args.pin_wrk), timeout=args.warmup + 30)
                for conns in conns_list:
                    for target, (url, proxy) in targets(b).items():
                        r = measure(b.name, conns, target, url, args.duration, tool,
                                    args.pin_wrk or None, proxy, services)
                        results.append(r)
                        print(f"  {b.name:4s} c={conns:<3d} {target:9s} {r.rps:9,.0f} req/s "
                              f"p50 {r.p50_ms:6.2f} ms p99 {r.p99_ms:6.2f} ms "
                              f"other load {r.other_cores:.2f}", file=sys.stderr)
        counts = variant_counts(admin_url)
        experiments = experiment_counts(admin_url, [f"{b.name}-ab" for b in backends])

    report = render(aggregate(results), info, settings, counts, experiments)
    print(report)
    if args.out:
        args.out.write_text("# splitway bench results\n\n" + report)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StartError as exc:
        sys.exit(f"bench: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
