"""The applications under test, each buildable bare or guarded.

Every app serves the same two routes: a protected one (``/hello``, needing
``bench:read``; ``/api/orders`` in the FastAPI orders example) and a public
one (``/healthz``). The view bodies return a small JSON object. A bare app is
the same app without zt-middleware, so bare vs guarded isolates its cost.

Builders take the zt settings (``None`` for bare) and the public key PEM
(used only by flask-jwt-extended).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zt_middleware import Principal, public, requires

from . import workload

ZT_DJANGO = "zt_middleware.adapters.django.ZeroTrustMiddleware"

Builder = Callable[[dict[str, Any] | None, str], Any]


@dataclass(frozen=True)
class AppSpec:
    name: str
    interface: str  # "asgi" or "wsgi"
    protected: str
    public: str
    build: Builder
    note: str = ""


# -- Starlette -----------------------------------------------------------------


def starlette_app(settings: dict[str, Any] | None, _pem: str = "") -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from zt_middleware.adapters.asgi import ZeroTrustMiddleware

    @requires("bench:read")
    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    @public
    async def healthz(request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    middleware = []
    if settings is not None:
        middleware.append(Middleware(ZeroTrustMiddleware, settings=settings))

    return Starlette(
        routes=[Route("/hello", hello), Route("/healthz", healthz)],
        middleware=middleware,
    )


# -- FastAPI -------------------------------------------------------------------


class FixedPrincipal:
    """Bare stand-in for the guard: the orders views read the principal."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.principal = Principal(
            subject=workload.SUBJECT,
            issuer=workload.ISSUER,
            scopes=frozenset(workload.SCOPES),
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["principal"] = self.principal
        await self.app(scope, receive, send)


def orders_app(settings: dict[str, Any] | None, _pem: str = "") -> Any:
    """The orders example; bare means its guard swapped for FixedPrincipal."""
    from starlette.middleware import Middleware

    from integrations.orders_fastapi.app import create_app

    if settings is not None:
        return create_app(settings)

    # create_app always adds the guard; it is built lazily, so replacing the
    # middleware list before the first request means it is never built.
    app = create_app({})
    app.user_middleware = [Middleware(FixedPrincipal)]

    return app


def fastapi_hello_app(settings: dict[str, Any] | None, _pem: str = "") -> Any:
    from fastapi import FastAPI

    from zt_middleware.adapters.asgi import ZeroTrustMiddleware

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/hello")
    @requires("bench:read")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/healthz")
    @public
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if settings is not None:
        app.add_middleware(ZeroTrustMiddleware, settings=settings)
    return app


def fastapi_spec() -> AppSpec:
    """The orders example when it imports, else a hello-world FastAPI app."""
    try:
        import integrations.orders_fastapi.app  # noqa: F401
    except ImportError as exc:
        note = f"orders example not importable ({type(exc).__name__}); hello-world"
        return AppSpec("fastapi", "asgi", "/hello", "/healthz", fastapi_hello_app, note)

    return AppSpec(
        "fastapi",
        "asgi",
        "/api/orders",
        "/healthz",
        orders_app,
        "orders example, GET /api/orders (3 orders via pydantic)",
    )


# -- Flask ---------------------------------------------------------------------


def flask_app(settings: dict[str, Any] | None, _pem: str = "") -> Any:
    from flask import Flask

    from zt_middleware.adapters.flask import ZeroTrust

    app = Flask("bench_flask")

    @app.get("/hello")
    @requires("bench:read")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/healthz")
    @public
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if settings is not None:
        ZeroTrust(app, settings)
    return app


def flask_jwt_extended_app(_settings: dict[str, Any] | None, pem: str) -> Any:
    """The same routes behind ``@jwt_required()``: RS256, same public key."""
    from flask import Flask
    from flask_jwt_extended import JWTManager, jwt_required

    app = Flask("bench_flask_jwt_extended")
    app.config.update(
        JWT_ALGORITHM="RS256",
        JWT_DECODE_ALGORITHMS=["RS256"],
        JWT_PUBLIC_KEY=pem,  # a PEM string, as its documentation shows
        JWT_DECODE_AUDIENCE=workload.AUDIENCE,
        JWT_DECODE_ISSUER=workload.ISSUER,
        JWT_TOKEN_LOCATION=["headers"],
    )
    JWTManager(app)

    @app.get("/hello")
    @jwt_required()
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


# -- Django --------------------------------------------------------------------


def configure_django(settings: dict[str, Any] | None, *, asynchronous: bool) -> None:
    """Configure Django once per process (its settings are global)."""
    import django
    from django.conf import settings as django_settings

    if django_settings.configured:
        return
    django_settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only-not-a-secret",  # noqa: S106 - throwaway, local
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF="bench.django_urls",
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        USE_TZ=True,
        ZERO_TRUST=settings,
        BENCH_ASYNC_VIEWS=asynchronous,
    )
    django.setup()


def django_handler(settings: dict[str, Any] | None, *, asynchronous: bool) -> Any:
    """A WSGI or ASGI handler; its middleware list is read when it is built."""
    from django.conf import settings as django_settings

    configure_django(settings, asynchronous=asynchronous)
    if settings is not None:
        django_settings.ZERO_TRUST = settings
    django_settings.MIDDLEWARE = [ZT_DJANGO] if settings is not None else []

    if asynchronous:
        from django.core.handlers.asgi import ASGIHandler

        return ASGIHandler()
    from django.core.handlers.wsgi import WSGIHandler

    return WSGIHandler()


def django_wsgi_app(settings: dict[str, Any] | None, _pem: str = "") -> Any:
    return django_handler(settings, asynchronous=False)


def django_asgi_app(settings: dict[str, Any] | None, _pem: str = "") -> Any:
    return django_handler(settings, asynchronous=True)


# -- the registry ----------------------------------------------------------------


def specs() -> dict[str, AppSpec]:
    found = [
        AppSpec("starlette", "asgi", "/hello", "/healthz", starlette_app),
        fastapi_spec(),
        AppSpec("flask", "wsgi", "/hello", "/healthz", flask_app),
        AppSpec(
            "flask-jwt-extended", "wsgi", "/hello", "/healthz", flask_jwt_extended_app
        ),
        AppSpec("django-wsgi", "wsgi", "/hello", "/healthz", django_wsgi_app),
        AppSpec(
            "django-asgi", "asgi", "/hello", "/healthz", django_asgi_app, "async views"
        ),
    ]
    return {spec.name: spec for spec in found}
