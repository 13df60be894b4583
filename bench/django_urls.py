"""URLs of the benchmark's Django project: sync views under WSGI, async
views under ASGI, so neither handler hops threads to reach its view."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

from zt_middleware import public, requires


def _json(data: dict[str, str]) -> JsonResponse:
    response = JsonResponse(data)
    response["Content-Length"] = str(len(response.content))
    return response


@requires("bench:read")
def hello(request: HttpRequest) -> JsonResponse:
    return _json({"hello": "world"})


@public
def healthz(request: HttpRequest) -> JsonResponse:
    return _json({"status": "ok"})


@requires("bench:read")
async def ahello(request: HttpRequest) -> JsonResponse:
    return _json({"hello": "world"})


@public
async def ahealthz(request: HttpRequest) -> JsonResponse:
    return _json({"status": "ok"})


def _views() -> tuple[Any, Any]:
    if getattr(settings, "BENCH_ASYNC_VIEWS", False):
        return ahello, ahealthz
    return hello, healthz


urlpatterns = [
    path("hello", _views()[0]),
    path("healthz", _views()[1]),
]
