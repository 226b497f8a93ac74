"""Benchmark processes: start one, wait for its ready line, stop it for sure.

Every server of the bench (backends, yardstick, splitway) prints one line on stdout when
it listens. :class:`Service` starts the command in its own session (so a Ctrl-C in the
terminal reaches only ``run.py``, which then stops everything in order), waits for that
line, and keeps draining stdout so the pipe never fills. stderr goes to a log file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


class StartError(RuntimeError):
    """A service exited or stayed silent instead of printing its ready line."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Service:
    """One started server process; ``match`` is its ready line's regex match."""

    name: str
    proc: subprocess.Popen[str]
    log_path: Path
    match: re.Match[str] | None = None
    _lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, name: str, cmd: list[str], ready: str, log_dir: Path, *,
              cwd: Path | None = None, timeout: float = 30.0,
              taskset: str | None = None) -> Service:
        """Run ``cmd`` and wait until a stdout line matches ``ready``."""
        log_path = log_dir / f"{name}.log"
        if taskset:
            cmd = ["taskset", "-c", taskset, *cmd]
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                                    cwd=cwd, start_new_session=True)
        self = cls(name, proc, log_path)
        got = threading.Event()
        pattern = re.compile(ready)

        def drain() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self._lines.append(line.rstrip())
                if self.match is None and (m := pattern.search(line)):
                    self.match = m
                    got.set()

        threading.Thread(target=drain, name=f"drain-{name}", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not got.wait(0.1):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = "\n".join(log_path.read_text().splitlines()[-20:])
                raise StartError(f"{name} did not become ready ({' '.join(cmd)}):\n{tail}")
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; a no-op once it exited."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
