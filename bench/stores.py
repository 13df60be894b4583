"""Requests per second with each store, against the same app without one.

Run: ``.venv/bin/python bench/stores.py [--seconds 2] [--rounds 3]``

One hello-world route behind the middleware, driven in this process (no
server, no client library), with a repeated token and every check on. The
only thing that changes between columns is where shared state lives:

- ``no store``: a store that remembers nothing and answers at once, i.e. the
  guard's own cost with revocation and history switched off in effect;
- ``memory``: the default, in-process;
- ``sqlite``: a WAL file in a temp dir (one host, several workers);
- ``redis``: a ``redis-server`` this script starts on a free 127.0.0.1 port
  and stops by its PID (skipped when redis-server is not installed).

ASGI (Starlette) uses the async store path, WSGI (Flask) the sync one.
Rounds interleave the stores, and each figure is the median of the rounds,
so every column sees the same machine noise. Ratios are to ``no store``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flask import Flask
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from zt_middleware import requires
from zt_middleware.adapters.asgi import ZeroTrustMiddleware
from zt_middleware.adapters.flask import ZeroTrust
from zt_middleware.issuer import Issuer, generate_key
from zt_middleware.stores.base import (
    Revocation,
    StateKeys,
    StateRead,
    StateWrite,
    Store,
)

ISSUER = "https://issuer.bench.test"
EVENT_LOOP = asyncio.new_event_loop()
AUDIENCE = "bench"


class NullStore(Store):
    """Remembers nothing: the baseline without shared state."""

    def read(self, keys: StateKeys) -> StateRead:
        return StateRead()

    def write(self, update: StateWrite) -> bool:
        return True

    async def aread(self, keys: StateKeys) -> StateRead:
        return StateRead()

    async def awrite(self, update: StateWrite) -> bool:
        return True

    def revoke(self, kind: str, value: str, *, now: float, ttl: int) -> Revocation:
        raise NotImplementedError("the baseline store holds no revocations")

    def revocations(self, *, now: float) -> list[Revocation]:
        return []

    def claim(self, key: str, ttl: int) -> bool:
        return True

    def count(self, key: str, ttl: int) -> int:
        return 1

    def get(self, key: str) -> bytes | None:
        return None

    def put(self, key: str, value: bytes, ttl: int | None = None) -> None:
        return None

    def delete(self, key: str) -> None:
        return None


@contextmanager
def redis_server() -> Iterator[str | None]:
    program = shutil.which("redis-server")
    if program is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 - the system's redis-server
        [
            program,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=5)


def settings(key: Any, store: str) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks": key.jwks(),
        "store": store,
        "routes": [{"path": "/hello", "scopes": ["hello:read"]}],
    }


def starlette_app(config: dict[str, Any], store: Store | None) -> Any:
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = Starlette(routes=[Route("/hello", hello)])
    middleware = ZeroTrustMiddleware(app, settings=config)
    if store is not None:
        middleware.guard.store = store
    return middleware


def flask_app(config: dict[str, Any], store: Store | None) -> Any:
    app = Flask("bench")

    @app.get("/hello")
    @requires("hello:read")
    def hello() -> str:
        return "hello"

    app.config["ZERO_TRUST"] = config
    extension = ZeroTrust(app)
    if store is not None:
        extension.guard(app).store = store
    return app


def asgi_rate(app: Any, token: str, seconds: float) -> float:
    headers = [
        (b"authorization", f"Bearer {token}".encode()),
        (b"user-agent", b"zt-bench/1.0"),
        (b"host", b"127.0.0.1"),
    ]
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/hello",
        "raw_path": b"/hello",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
        "asgi": {"version": "3.0"},
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def loop() -> float:
        count, deadline = 0, time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            await app(dict(scope), receive, send)
            count += 1
        return count / (time.perf_counter() - start)

    # One event loop for the whole run: an asyncio Redis client belongs to
    # the loop it first ran on.
    rate = EVENT_LOOP.run_until_complete(loop())
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses {sorted(set(statuses))}")
    return rate


def wsgi_rate(app: Any, token: str, seconds: float) -> float:
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/hello",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_USER_AGENT": "zt-bench/1.0",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    count, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        body = app(dict(environ), start_response)
        for _ in body:
            pass
        getattr(body, "close", lambda: None)()
        count += 1
    rate = count / (time.perf_counter() - start)
    if {s[:3] for s in statuses} != {"200"}:
        raise SystemExit(f"unexpected statuses {sorted(set(statuses))}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    key = generate_key("ES256", "bench")
    token = Issuer(key, ISSUER).issue(
        "alice", AUDIENCE, scopes=["hello:read"], lifetime=900
    )

    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        stores: dict[str, tuple[str, Store | None]] = {
            "no store": ("memory://", NullStore()),
            "memory": ("memory://", None),
            "sqlite": (f"sqlite:///{tmp}/zt.sqlite3", None),
        }
        if redis_url:
            stores["redis"] = (redis_url, None)

        stacks: dict[str, tuple[Callable[..., Any], Callable[..., float]]] = {
            "Starlette (ASGI, async store calls)": (starlette_app, asgi_rate),
            "Flask (WSGI, sync store calls)": (flask_app, wsgi_rate),
        }
        for title, (build, rate) in stacks.items():
            apps = {
                name: build(settings(key, url), store)
                for name, (url, store) in stores.items()
            }
            for app in apps.values():
                rate(app, token, 0.2)  # warm up: caches, connections, files
            samples: dict[str, list[float]] = {name: [] for name in apps}
            for _ in range(args.rounds):
                for name, app in apps.items():
                    samples[name].append(rate(app, token, args.seconds))

            base = statistics.median(samples["no store"])
            print(f"\n{title}: GET /hello, repeated token, median of {args.rounds}")
            print(f"  {'store':<10} {'req/s':>9} {'vs no store':>12}")
            for name, values in samples.items():
                median = statistics.median(values)
                print(f"  {name:<10} {median:>9.0f} {median / base:>11.2f}x")
        if not redis_url:
            print("\n(redis-server not installed: no redis column)")


if __name__ == "__main__":
    main()
