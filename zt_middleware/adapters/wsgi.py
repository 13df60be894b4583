"""A plain WSGI middleware, and the context builder the WSGI adapters share.

The plain middleware knows nothing of the app's views, so only the settings'
route table applies; Flask users get per-view annotations from
:mod:`zt_middleware.adapters.flask`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..context import RequestContext, client_address, request_id
from ..decision import Decision
from ..guard import Guard
from ..routes import Requirement
from ..settings import Settings

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
    return _STATUS_TEXT.get(status, f"{status} Refused")


class ZeroTrustWSGIMiddleware:
    """Wraps any WSGI app: ``app.wsgi_app = ZeroTrustWSGIMiddleware(app.wsgi_app, {...})``."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        settings: Settings | dict[str, Any] | str | None = None,
        *,
        guard: Guard | None = None,
    ) -> None:
        self.app = app
        self.guard = guard or Guard(settings)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        ctx = context_from_environ(environ, self.guard.settings.trusted_proxies)
        decision = self.guard.decide(ctx)
        if decision.passes:
            environ[PRINCIPAL_KEY] = decision.principal
            return self.app(environ, start_response)

        return refuse(decision, ctx, self.guard.settings.realm, start_response)


def refuse(
    decision: Decision, ctx: RequestContext, realm: str, start_response: Callable[..., Any]
) -> list[bytes]:
    status, headers, body = decision.render(realm, ctx.request_id)
    start_response(status_line(status), headers)
    return [body]
