"""Pure ASGI middleware for Starlette, FastAPI and any ASGI app.

Not ``BaseHTTPMiddleware``: the decision is made on the connection scope,
before the app sees a byte, for HTTP requests and WebSocket handshakes
alike. Lifespan and other scope types pass through untouched.

With Starlette or FastAPI the route is resolved the way their router will
resolve it, so ``@requires`` and ``@public`` on endpoints are honoured;
the settings' route table applies to every ASGI app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ..context import RequestContext, client_address, request_id
from ..decision import Decision, auth_param
from ..guard import Guard
from ..routes import Requirement, requirement_of
from ..settings import Settings
from ..stepup_web import MAX_BODY

__all__ = ["ZeroTrustMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("zt_middleware.adapters")

_FULL = 2  # starlette.routing.Match.FULL; NONE is 0. Compared by value.


class ZeroTrustMiddleware:
    """``app.add_middleware(ZeroTrustMiddleware, settings={...})``."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings | dict[str, Any] | str | None = None,
        *,
        guard: Guard | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self._failure: str | None = None
        try:
            self.guard = guard or Guard(
                settings if settings is not None else (options or None)
            )
        except Exception as exc:
            # Starlette builds middleware lazily, where an exception would
            # become a 500 on every request: refuse instead, and fail the
            # lifespan startup so the server stops.
            self._failure = getattr(exc, "description", type(exc).__name__)
            logger.error("zt-middleware cannot start: %s", self._failure)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._failure is not None:
            await _unavailable(scope, receive, send, self._failure)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        ctx = self._context(scope)
        if scope["type"] == "http" and self.guard.is_step_up(ctx):
            body = await _read_body(receive, MAX_BODY) if ctx.method == "POST" else b""
            await _send_response(send, await self.guard.astep_up(ctx, body))
            return

        decision = await self.guard.adecide(ctx)
        if decision.passes:
            scope.setdefault("state", {})["principal"] = decision.principal
            await self.app(scope, receive, send)
            return

        if scope["type"] == "websocket":
            await self._refuse_websocket(scope, receive, send, decision, ctx)
        else:
            await self._refuse_http(send, decision, ctx)

    def _context(self, scope: Scope) -> RequestContext:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value

        peer = scope.get("client")
        requirement, route = _resolve_route(scope, self.app)
        websocket = scope["type"] == "websocket"

        return RequestContext(
            method="WEBSOCKET" if websocket else scope["method"],
            path=scope["path"],
            headers=headers,
            client=client_address(
                peer[0] if peer else None,
                headers.get("x-forwarded-for"),
                self.guard.settings.trusted_proxies,
            ),
            requirement=requirement,
            route=route,
            websocket=websocket,
            query_has_token=b"access_token=" in scope.get("query_string", b""),
            request_id=request_id(headers),
        )

    async def _refuse_http(
        self, send: Send, decision: Decision, ctx: RequestContext
    ) -> None:
        await _send_response(send, self.guard.render(decision, ctx))

    async def _refuse_websocket(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        decision: Decision,
        ctx: RequestContext,
    ) -> None:
        # The handshake is answered before any accept: never a 101.
        message = await receive()
        if message["type"] != "websocket.connect":
            return

        if "websocket.http.response" in scope.get("extensions", {}):
            status, headers, body = self.guard.render(decision, ctx)
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [
                        (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return

        await send({"type": "websocket.close", "code": 1008, "reason": decision.reason})


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body, but never more than ``limit + 1`` bytes of it."""
    chunks: list[bytes] = []
    size = 0
    # Bounded: every message but a few empty ones brings a byte at least.
    for _ in range(limit + 16):
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit or not message.get("more_body", False):
            break

    return b"".join(chunks)[: limit + 1]


async def _send_response(
    send: Send, response: tuple[int, list[tuple[str, str]], bytes]
) -> None:
    status, headers, body = response
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _resolve_route(scope: Scope, app: Any) -> tuple[Requirement | None, str | None]:
    """The endpoint's annotation, found the way Starlette's router finds it."""
    router = getattr(scope.get("app"), "router", None) or getattr(app, "router", None)
    routes = getattr(router, "routes", None)
    if not routes:
        return None, None

    return _match(routes, scope)


def _match(routes: Any, scope: Scope) -> tuple[Requirement | None, str | None]:
    partial: tuple[Requirement | None, str | None] | None = None
    for route in routes:
        if hasattr(route, "effective_candidates"):
            # FastAPI's include_router keeps included routes behind a private
            # wrapper whose matches() names no endpoint; ask it the way
            # FastAPI's own router does.
            level, found = _match_included(route, scope)
            if level == _FULL:
                return found
            if level:
                partial = partial or found
            continue

        matches = getattr(route, "matches", None)
        if matches is None:
            continue
        try:
            match, child = matches(scope)
        except Exception:  # noqa: S112 - a route that cannot match resolves nothing
            continue
        level = getattr(match, "value", match)
        if not level:
            continue

        nested = getattr(route, "routes", None)
        if nested:
            found = _match(nested, {**scope, **child})
        else:
            found = (
                requirement_of(child.get("endpoint"), scope.get("method")),
                getattr(route, "path", None),
            )

        if level == _FULL:
            return found
        partial = partial or found

    return partial or (None, None)


def _match_included(
    router: Any, scope: Scope
) -> tuple[int, tuple[Requirement | None, str | None]]:
    """Match level and annotation inside a FastAPI included router.

    This leans on FastAPI's private ``_match``; if it changes, nothing is
    resolved and the request falls to default deny.
    """
    try:
        match, child, route, _ = router._match(scope)
    except Exception:
        return 0, (None, None)
    level = getattr(match, "value", match)
    if not level or route is None:
        return 0, (None, None)
    if hasattr(route, "effective_candidates"):
        return _match_included(route, scope)

    endpoint = child.get("endpoint") or getattr(route, "endpoint", None)
    return level, (
        requirement_of(endpoint, scope.get("method")),
        getattr(route, "path", None),
    )


async def _unavailable(scope: Scope, receive: Receive, send: Send, why: str) -> None:
    """Every request refused (503), the lifespan startup failed."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.failed", "message": why})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.close", "code": 1011})
        return

    body = json.dumps(
        {
            "error": "temporarily_unavailable",
            "error_description": "Access cannot be decided: the guard did not start.",
            "reason": "configuration_invalid",
        }
    ).encode()
    await _send_response(
        send,
        (
            503,
            [
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
                (
                    "www-authenticate",
                    f"Bearer {auth_param('realm', 'api')}, "
                    f"{auth_param('error', 'temporarily_unavailable')}",
                ),
                ("retry-after", "30"),
            ],
            body,
        ),
    )
