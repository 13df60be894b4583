"""A plain WSGI middleware, and the context builder the WSGI adapters share.

The plain middleware knows nothing of the app's views, so only the settings'
route table applies; Flask users get per-view annotations from
:mod:`zt_middleware.adapters.flask`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

from ..context import RequestContext, client_address, request_id
from ..guard import Guard
from ..routes import Requirement
from ..settings import Settings
from ..stepup_web import MAX_BODY

__all__ = ["ZeroTrustWSGIMiddleware", "context_from_environ"]

PRINCIPAL_KEY = "zt.principal"

_STATUS_TEXT = {
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    503: "503 Service Unavailable",
}


def context_from_environ(
    environ: Mapping[str, Any],
    trusted_proxies: tuple[str, ...],
    *,
    path: str | None = None,
    requirement: Requirement | None = None,
    route: str | None = None,
) -> RequestContext:
    """A request context from a WSGI environ (or Django's ``request.META``)."""
    headers = {
        key[5:].replace("_", "-").lower(): value
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    # PEP 3333 keeps these two out of HTTP_*; the step-up endpoint reads them.
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    if path is None:
        # PEP 3333 carries the path as latin-1; undo that to get UTF-8 text.
        raw = environ.get("PATH_INFO", "/")
        path = raw.encode("latin-1", "replace").decode("utf-8", "replace")

    return RequestContext(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        path=path or "/",
        headers=headers,
        client=client_address(
            environ.get("REMOTE_ADDR"), headers.get("x-forwarded-for"), trusted_proxies
        ),
        requirement=requirement,
        route=route,
        query_has_token="access_token=" in environ.get("QUERY_STRING", ""),
        request_id=request_id(headers),
    )


def status_line(status: int) -> str:
    if status in _STATUS_TEXT:
        return _STATUS_TEXT[status]
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Refused"


def read_limited(read: Callable[[int], bytes], size: int) -> bytes:
    """Up to ``size`` bytes from a stream that may return fewer per call."""
    data = b""
    for _ in range(size):  # bounded: each pass reads a byte or stops
        chunk = read(size - len(data))
        if not chunk:
            break
        data += chunk
        if len(data) >= size:
            break
    return data


def read_body(environ: Mapping[str, Any]) -> bytes:
    """The step-up request's body, at most ``MAX_BODY + 1`` bytes of it.

    Never reads past CONTENT_LENGTH (PEP 3333); without one, only a server
    that marks its input terminated is read, else the body is empty.
    """
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    try:
        length = int(environ.get("CONTENT_LENGTH") or -1)
    except ValueError:
        length = -1
    if length < 0:
        if not environ.get("wsgi.input_terminated"):
            return b""
        length = MAX_BODY + 1

    return read_limited(stream.read, min(length, MAX_BODY + 1))


class ZeroTrustWSGIMiddleware:
    """Wraps any WSGI app, the route table deciding.

    ``app.wsgi_app = ZeroTrustWSGIMiddleware(app.wsgi_app, {...})``
    """

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        settings: Settings | dict[str, Any] | str | None = None,
        *,
        guard: Guard | None = None,
    ) -> None:
        self.app = app
        self.guard = guard or Guard(settings)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        ctx = context_from_environ(environ, self.guard.settings.trusted_proxies)
        if self.guard.is_step_up(ctx):
            body = read_body(environ) if ctx.method == "POST" else b""
            return respond(self.guard.step_up(ctx, body), start_response)

        decision = self.guard.decide(ctx)
        if decision.passes:
            environ[PRINCIPAL_KEY] = decision.principal
            return self.app(environ, start_response)

        return respond(self.guard.render(decision, ctx), start_response)


def respond(
    response: tuple[int, list[tuple[str, str]], bytes],
    start_response: Callable[..., Any],
) -> list[bytes]:
    status, headers, body = response
    start_response(status_line(status), headers)
    return [body]
