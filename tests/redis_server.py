"""Real Redis processes for the tests: each on its own free 127.0.0.1 port.

Nothing here talks to a Redis the tests did not start, and every process is
stopped by its own PID. ``redis-server`` missing means a skip on a developer's
machine and a failure in CI (``CI=true``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def require_redis_server(program: str = "redis-server") -> str:
    """The executable's path, or skip (locally) / fail (in CI, loudly)."""
    found = shutil.which(program)
    if found is not None:
        return found

    reason = f"{program} is not installed (apt-get install -y redis-server)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run must install it", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def command(port: int, *words: str) -> bytes:
    """Send one inline command to 127.0.0.1:port and return the raw reply."""
    with socket.create_connection((HOST, port), timeout=1.0) as conn:
        conn.sendall(" ".join(words).encode("ascii") + b"\r\n")
        return conn.recv(65536)


class RedisServer:
    """One ``redis-server`` process, started and stopped by these tests.

    With ``persistent=True`` it writes an append-only file in ``data_dir``,
    so stopping it and starting it again on the same port keeps the data.
    With ``config`` it reads that file first (a sentinel needs one).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        persistent: bool = False,
        config: Path | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.executable = require_redis_server()
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persistent = persistent
        self.config = config
        self.extra = tuple(extra)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.data_dir / f"redis-{self.port}.log"

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.executable, *([str(self.config)] if self.config else [])]
        argv += ["--port", str(self.port), "--bind", HOST, "--dir", str(self.data_dir)]
        if self.config is None:
            argv += ["--save", "", "--appendonly", "yes" if self.persistent else "no"]
            argv += ["--appendfsync", "always"]
        argv += self.extra

        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own arguments
                argv, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_until_ready()
        return self

    def stop(self) -> None:
        """SIGTERM to our own process, then wait for it to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def ping(self) -> bool:
        try:
            return command(self.port, "PING").startswith(b"+PONG")
        except OSError:
            return False

    def flush(self) -> None:
        command(self.port, "FLUSHALL")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited at start:\n{tail}")
            if self.ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")


@contextmanager
def running_redis(data_dir: Path, *, persistent: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(data_dir, persistent=persistent).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_sentinel(
    data_dir: Path, master: RedisServer, service: str = "zt-master"
) -> Iterator[RedisServer]:
    """One sentinel watching ``master``; it rewrites its own config file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "sentinel.conf"
    config.write_text(
        f"sentinel monitor {service} {HOST} {master.port} 1\n"
        f"sentinel down-after-milliseconds {service} 60000\n"
    )
    sentinel = RedisServer(data_dir, config=config, extra=("--sentinel",)).start()
    try:
        yield sentinel
    finally:
        sentinel.stop()


@contextmanager
def running_cluster(data_dir: Path, nodes: int = 3) -> Iterator[list[RedisServer]]:
    """A real Redis Cluster of ``nodes`` primaries, no replicas."""
    servers = [
        RedisServer(
            data_dir / f"node-{index}",
            # The bus port is chosen too: the default, port + 10000, may be
            # taken or past 65535.
            extra=(
                *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                *("--cluster-node-timeout", "5000", "--cluster-port", str(free_port())),
            ),
        )
        for index in range(nodes)
    ]
    try:
        for server in servers:
            server.start()
        addresses = [f"{HOST}:{server.port}" for server in servers]
        cli = require_redis_server("redis-cli")
        options = ["--cluster-replicas", "0", "--cluster-yes"]
        create = subprocess.run(  # noqa: S603 - our own arguments
            [cli, "--cluster", "create", *addresses, *options],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if create.returncode != 0:
            raise RuntimeError(create.stdout.decode(errors="replace")[-2000:])
        _wait_for_cluster(servers)
        yield servers
    finally:
        for server in servers:
            server.stop()


def _wait_for_cluster(servers: list[RedisServer]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if all(
            b"cluster_state:ok" in command(s.port, "CLUSTER", "INFO") for s in servers
        ):
            return
        time.sleep(0.05)
    raise RuntimeError("the cluster did not reach cluster_state:ok")
