"""What machine the bench ran on, and how busy the machine was meanwhile.

:func:`describe` gives the facts the README records (CPU count and model, kernel,
Python, aiohttp, uvloop, load generator, UTC date). :class:`CpuMeter` measures how many
cores were busy during one load run in total, so the part used by processes outside the
bench (a test suite on the same box, say) can be reported next to the figures.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text()
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    return out.split("Copyright")[0].strip() or "wrk"


def describe() -> dict[str, str]:
    """The machine and software facts printed with the results."""
    import aiohttp
    import uvloop

    return {
        "date (UTC)": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uvloop.__version__,
        "load generator": wrk_version() or "bench/loadgen.py (Python, aiohttp)",
    }


def _busy_and_total() -> tuple[int, int]:
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first[:8]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


@dataclass
class CpuMeter:
    """Busy cores over an interval: ``start()``, run the load, ``busy_cores()``."""

    _busy: int = 0
    _total: int = 0

    def start(self) -> None:
        self._busy, self._total = _busy_and_total()

    def busy_cores(self) -> float:
        """Average number of busy cores since :meth:`start`."""
        busy, total = _busy_and_total()
        span = total - self._total
        ncpu = os.cpu_count() or 1
        return (busy - self._busy) / span * ncpu if span else 0.0
