"""Flask extension: ``ZeroTrust(app)`` or ``zt.init_app(app)``.

Settings come from ``app.config["ZERO_TRUST"]`` (or the constructor). The
check runs first among ``before_request`` functions, after Flask has routed
the request, so the view's ``@requires`` / ``@public`` mark is known. The
principal is ``flask.g.principal``. A URL that routes to no view, Flask's
``static`` endpoint included, needs a route-table entry like any other.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, request

from ..guard import Guard
from ..routes import requirement_of
from ..settings import Settings
from ..stepup_web import MAX_BODY
from .wsgi import context_from_environ, read_limited

__all__ = ["ZeroTrust"]

EXTENSION_KEY = "zero_trust"


class ZeroTrust:
    def __init__(
        self,
        app: Flask | None = None,
        settings: Settings | dict[str, Any] | str | None = None,
    ) -> None:
        self._settings = settings
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = (
            self._settings
            if self._settings is not None
            else app.config.get("ZERO_TRUST")
        )
        guard = Guard(settings)
        app.extensions[EXTENSION_KEY] = guard
        app.before_request_funcs.setdefault(None, []).insert(0, _check)

    @staticmethod
    def guard(app: Flask) -> Guard:
        guard: Guard = app.extensions[EXTENSION_KEY]
        return guard


def _check() -> Response | None:
    from flask import current_app

    guard: Guard = current_app.extensions[EXTENSION_KEY]
    view = (
        current_app.view_functions.get(request.endpoint) if request.endpoint else None
    )
    rule = request.url_rule.rule if request.url_rule is not None else None
    ctx = context_from_environ(
        request.environ,
        guard.settings.trusted_proxies,
        requirement=requirement_of(view, request.method),
        route=rule,
    )

    if guard.is_step_up(ctx):
        # Werkzeug's stream stops at Content-Length (and is empty without).
        body = b""
        if ctx.method == "POST":
            body = read_limited(request.stream.read, MAX_BODY + 1)
        status, headers, payload = guard.step_up(ctx, body)
        return current_app.response_class(payload, status=status, headers=headers)

    decision = guard.decide(ctx)
    if decision.passes:
        g.principal = decision.principal
        return None

    status, headers, body = guard.render(decision, ctx)
    return current_app.response_class(body, status=status, headers=headers)
