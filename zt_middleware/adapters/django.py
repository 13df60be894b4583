"""Django middleware for sync and async stacks.

Add ``"zt_middleware.adapters.django.ZeroTrustMiddleware"`` to MIDDLEWARE
and put the settings mapping in ``settings.ZERO_TRUST``. The middleware
resolves the URL itself, so ``@requires`` / ``@public`` on function views and
on class-based views are honoured; the principal is ``request.principal``.
Like ``LoginRequiredMiddleware``, it refuses what is not explicitly opened.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, resolve

from ..context import RequestContext
from ..decision import Decision
from ..errors import ConfigurationError
from ..guard import Guard
from ..routes import Requirement, requirement_of
from ..stepup_web import MAX_BODY
from .wsgi import context_from_environ, read_limited

__all__ = ["ZeroTrustMiddleware"]


class ZeroTrustMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

        try:
            self.guard = Guard(getattr(django_settings, "ZERO_TRUST", None))
        except ConfigurationError as exc:
            raise ImproperlyConfigured(f"ZERO_TRUST: {exc}") from exc

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)

        ctx = self._context(request)
        if self.guard.is_step_up(ctx):
            return _response(self.guard.step_up(ctx, _body(request, ctx)))

        decision = self.guard.decide(ctx)
        if not decision.passes:
            return self._refusal(decision, ctx)

        request.principal = decision.principal
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        ctx = self._context(request)
        if self.guard.is_step_up(ctx):
            # Django's ASGI handler has spooled the body already: no I/O.
            return _response(await self.guard.astep_up(ctx, _body(request, ctx)))

        decision = await self.guard.adecide(ctx)
        if not decision.passes:
            return self._refusal(decision, ctx)

        request.principal = decision.principal
        return await self.get_response(request)

    def _context(self, request: HttpRequest) -> RequestContext:
        requirement: Requirement | None
        try:
            match = resolve(request.path_info)
            requirement = requirement_of(match.func, request.method)
            route = match.route
        except Resolver404:
            requirement, route = None, None

        return context_from_environ(
            request.META,
            self.guard.settings.trusted_proxies,
            path=request.path_info,
            requirement=requirement,
            route=route,
        )

    def _refusal(self, decision: Decision, ctx: RequestContext) -> HttpResponse:
        return _response(self.guard.render(decision, ctx))


def _body(request: HttpRequest, ctx: RequestContext) -> bytes:
    if ctx.method != "POST":
        return b""
    # Django's stream stops at Content-Length; read one byte past the cap.
    return read_limited(request.read, MAX_BODY + 1)


def _response(answer: tuple[int, list[tuple[str, str]], bytes]) -> HttpResponse:
    status, headers, body = answer
    content_type = next(
        (value for name, value in headers if name == "content-type"), "application/json"
    )
    response = HttpResponse(body, status=status, content_type=content_type)
    for name, value in headers:
        if name != "content-type":
            response[name] = value
    return response
