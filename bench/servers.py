"""Start ``bench.serve`` subprocesses and stop them by their own PID."""

from __future__ import annotations

import http.client
import os
import select
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_TICKS = os.sysconf("SC_CLK_TCK")


class ServerError(RuntimeError):
    """A server did not come up; the message ends with its log's tail."""


class Server:
    def __init__(
        self,
        app: str,
        variant: str,
        workload: Path,
        log: Path,
        *,
        threads: int,
        http: str,
    ) -> None:
        self.name = f"{app}/{variant}"
        self.log = log
        self.port = 0
        command = [
            sys.executable, "-m", "bench.serve", app, variant, str(workload),
            "--threads", str(threads), "--http", http,
        ]  # fmt: skip
        with open(log, "wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 - our own argv
                command, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr
            )

    def wait_ready(self, probe_path: str, timeout: float = 30.0) -> None:
        """Read the port the server bound, then wait for one response."""
        deadline = time.monotonic() + timeout
        stdout = self.process.stdout
        if stdout is None:
            raise ServerError(f"{self.name}: no pipe to read its port from")
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            raise ServerError(f"{self.name} did not start:\n{self.log_tail()}")
        self.port = int(line.split()[1])

        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=5
                )
                connection.request("GET", probe_path)
                connection.getresponse().read()
                connection.close()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise ServerError(f"{self.name} does not answer:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the server process, all threads."""
        with open(f"/proc/{self.process.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM to this server's PID; SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
