"""Drive an app in this process, one request at a time, no server.

ASGI apps get a hand-built ``http`` scope and a two-message ``receive``;
WSGI apps get a prepared environ, copied per request. Only the time inside
the app call is timed (for WSGI, until the body is drained and closed), so
the figures are framework plus middleware cost, nothing of a network or a
client library. Each run stops at its deadline or when its tokens run out.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Iterable
from typing import Any

from .samples import Sample, sample_from

_REQUEST = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT = {"type": "http.disconnect"}
_HOST = "127.0.0.1"
USER_AGENT = "zt-bench/1.0"  # real clients send one; the guard hashes it


def run(
    app: Any, interface: str, path: str, tokens: Iterable[str | None], seconds: float
) -> Sample:
    """Send GET ``path`` once per token (``None``: no Authorization)."""
    if interface == "asgi":
        return asyncio.run(_asgi_loop(app, path, tokens, seconds))
    return _wsgi_loop(app, path, tokens, seconds)


# -- ASGI ----------------------------------------------------------------------


def _asgi_scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("ascii"),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", _HOST.encode()), (b"user-agent", USER_AGENT.encode())],
        "client": (_HOST, 50000),
        "server": (_HOST, 8000),
    }


def _receiver() -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return _DISCONNECT
        sent = True
        return _REQUEST

    return receive


async def _asgi_loop(
    app: Any, path: str, tokens: Iterable[str | None], seconds: float
) -> Sample:
    template = _asgi_scope(path)
    base_headers = template["headers"]
    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    latencies: list[float] = []
    failed: list[int] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    for token in tokens:
        headers = base_headers
        if token is not None:
            headers = [*base_headers, (b"authorization", b"Bearer " + token.encode())]
        scope = {**template, "headers": headers}
        receive = _receiver()

        start = clock()
        await app(scope, receive, send)
        end = clock()

        latencies.append(end - start)
        if status != 200:
            failed.append(status)
        if end >= deadline:
            break

    return sample_from(latencies, sum(latencies), len(failed), failed)


# -- WSGI ----------------------------------------------------------------------


def _environ(path: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": _HOST,
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": _HOST,
        "HTTP_HOST": _HOST,
        "HTTP_USER_AGENT": USER_AGENT,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


def _wsgi_loop(
    app: Any, path: str, tokens: Iterable[str | None], seconds: float
) -> Sample:
    template = _environ(path)
    status = ""

    def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
        nonlocal status
        status = line
        return None

    latencies: list[float] = []
    failed: list[int] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    for token in tokens:
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO()
        if token is not None:
            environ["HTTP_AUTHORIZATION"] = "Bearer " + token

        start = clock()
        body = app(environ, start_response)
        try:
            for _chunk in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        end = clock()

        latencies.append(end - start)
        if not status.startswith("200"):
            failed.append(int(status[:3]))
        if end >= deadline:
            break

    return sample_from(latencies, sum(latencies), len(failed), failed)
