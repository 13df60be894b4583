"""The pure ASGI middleware with Starlette and FastAPI."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from fastapi import FastAPI, Request, WebSocket
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from zt_middleware import public, requires
from zt_middleware.adapters.asgi import ZeroTrustMiddleware
from zt_middleware.issuer import Issuer, generate_key

ISSUER = "https://issuer.example.test"
KEY = generate_key("ES256", "asgi-k1")
MINT = Issuer(KEY, ISSUER)


def bearer(*scopes: str, audience: str = "orders") -> dict[str, str]:
    return {"authorization": "Bearer " + MINT.issue("alice", audience, scopes=scopes)}


def zt_settings(**extra: object) -> dict[str, object]:
    return {"issuer": ISSUER, "audience": "orders", "jwks": KEY.jwks(), **extra}


def fastapi_app(**extra: object) -> FastAPI:
    app = FastAPI()
    app.add_middleware(ZeroTrustMiddleware, settings=zt_settings(**extra))

    @app.get("/api/orders")
    @requires("orders:read")
    async def orders(request: Request) -> dict[str, str]:
        return {"body": "protected", "seen_by": request.state.principal.subject}

    @app.post("/api/orders")
    @requires("orders:write")
    async def create_order(request: Request) -> dict[str, str]:
        return {"body": "created"}

    @app.get("/healthz")
    @public
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/api/internal")
    async def internal() -> dict[str, str]:
        return {"body": "protected"}

    @app.websocket("/ws")
    @requires("orders:read")
    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("protected")
        await websocket.close()

    return app


@pytest.fixture
def client() -> TestClient:
    return TestClient(fastapi_app())


def test_fastapi_route_with_scope_reaches_view_with_principal(
    client: TestClient,
) -> None:
    response = client.get("/api/orders", headers=bearer("orders:read"))

    assert response.status_code == 200
    assert response.json() == {"body": "protected", "seen_by": "alice"}


def test_fastapi_route_without_token_is_401_with_bare_challenge(
    client: TestClient,
) -> None:
    response = client.get("/api/orders")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="api"'
    assert response.json()["reason"] == "missing_token"
    assert "protected" not in response.text


def test_fastapi_missing_scope_is_403_insufficient_scope(client: TestClient) -> None:
    response = client.get("/api/orders", headers=bearer("orders:write"))

    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert 'scope="orders:read"' in response.headers["www-authenticate"]
    assert response.json()["error"] == "insufficient_scope"


def test_unannotated_route_is_refused_even_with_a_valid_token(
    client: TestClient,
) -> None:
    response = client.get("/api/internal", headers=bearer("orders:read"))

    assert response.status_code == 403
    assert response.json()["reason"] == "route_unannotated"


def test_public_route_needs_no_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"ok": True}


def test_head_is_judged_as_get(client: TestClient) -> None:
    assert client.head("/api/orders").status_code == 401
    assert client.head("/api/orders", headers=bearer("orders:write")).status_code == 403
    # FastAPI routes answer HEAD with 405: the app decides that, not us.
    assert client.head("/api/orders", headers=bearer("orders:read")).status_code == 405


@pytest.mark.parametrize(
    "path",
    [
        "//api/orders",
        "/api//orders",
        "/./api/orders",
        "/x/../api/orders",
        "/API/ORDERS",
        "/api/orders/",
        "/%61pi/orders",
    ],
)
def test_other_spellings_never_reach_the_protected_body(
    client: TestClient, path: str
) -> None:
    anonymous = client.get(path, follow_redirects=False)
    lacking = client.get(path, headers=bearer("orders:write"), follow_redirects=False)

    assert anonymous.status_code == 401
    assert lacking.status_code == 403
    assert "protected" not in anonymous.text + lacking.text


@pytest.mark.parametrize(
    "header",
    ["X-Forwarded-Uri", "X-Original-URL", "X-Rewrite-URL", "X-Forwarded-Prefix"],
)
def test_rewrite_headers_pointing_at_public_routes_change_nothing(
    client: TestClient, header: str
) -> None:
    response = client.get("/api/orders", headers={header: "/healthz"})

    assert response.status_code == 401


def test_method_override_header_is_ignored(client: TestClient) -> None:
    headers = {"X-HTTP-Method-Override": "GET", **bearer("orders:read")}
    response = client.post("/api/orders", headers=headers)

    assert response.status_code == 403
    assert 'scope="orders:write"' in response.headers["www-authenticate"]


def test_cors_preflight_passes_only_when_real(client: TestClient) -> None:
    preflight = client.options(
        "/api/orders",
        headers={
            "Origin": "https://app.example.test",
            "Access-Control-Request-Method": "GET",
        },
    )
    bare_options = client.options("/api/orders")

    assert preflight.status_code == 204  # answered by the guard itself
    assert preflight.content == b""
    assert bare_options.status_code == 401


def test_preflight_never_runs_a_view_that_accepts_options() -> None:
    app = FastAPI()
    app.add_middleware(ZeroTrustMiddleware, settings=zt_settings())

    @app.api_route("/api/secret", methods=["GET", "OPTIONS"])
    @requires("orders:read")
    async def secret() -> dict[str, str]:
        return {"body": "protected"}

    response = TestClient(app).options(
        "/api/secret",
        headers={"Origin": "https://x.test", "Access-Control-Request-Method": "GET"},
    )

    assert response.status_code == 204
    assert "protected" not in response.text


def test_control_character_in_path_is_refused_before_routing() -> None:
    app = FastAPI()
    app.add_middleware(
        ZeroTrustMiddleware,
        settings=zt_settings(
            routes=[
                {"path": "/pages/{slug}", "public": True},
                {"path": "/pages/admin", "scopes": ["admin"]},
            ]
        ),
    )

    @app.get("/pages/admin")
    async def pages_admin() -> dict[str, str]:
        return {"body": "protected"}

    client = TestClient(app)

    response = client.get("/pages/admin%0a")
    assert response.status_code == 400
    assert response.json()["reason"] == "malformed_path"
    assert client.get("/pages/admin").status_code == 401


def test_websocket_in_included_router_keeps_its_own_mark() -> None:
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/live")
    @public
    async def page() -> dict[str, str]:
        return {"page": "public"}

    @router.websocket("/live")
    @requires("live:read")
    async def live(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("protected")
        await websocket.close()

    app = FastAPI()
    app.include_router(router, prefix="/v1")
    app.add_middleware(ZeroTrustMiddleware, settings=zt_settings())
    client = TestClient(app)

    assert client.get("/v1/live").json() == {"page": "public"}
    with pytest.raises(Exception) as refused:
        with client.websocket_connect("/v1/live") as websocket:
            websocket.receive_text()
    assert getattr(refused.value, "status_code", None) == 401
    with client.websocket_connect("/v1/live", headers=bearer("live:read")) as websocket:
        assert websocket.receive_text() == "protected"


def test_wrapping_the_app_directly_still_sees_annotations() -> None:
    inner = fastapi_app()
    inner.user_middleware.clear()
    inner.middleware_stack = None
    wrapped = ZeroTrustMiddleware(inner, settings=zt_settings())
    client = TestClient(wrapped)

    assert client.get("/healthz").status_code == 200
    assert client.get("/api/orders").status_code == 401


def test_websocket_without_token_is_refused_before_accept(client: TestClient) -> None:
    with pytest.raises(Exception) as refused:
        with client.websocket_connect("/ws") as websocket:
            websocket.receive_text()

    error = refused.value
    assert (
        isinstance(error, WebSocketDisconnect)
        or getattr(error, "status_code", None) == 401
    )


def test_websocket_with_token_and_scope_is_accepted(client: TestClient) -> None:
    with client.websocket_connect("/ws", headers=bearer("orders:read")) as websocket:
        assert websocket.receive_text() == "protected"


def test_lifespan_passes_through() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # type: ignore[no-untyped-def]
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(lifespan=lifespan)
    app.add_middleware(ZeroTrustMiddleware, settings=zt_settings())
    with TestClient(app):
        pass

    assert events == ["startup", "shutdown"]


def test_starlette_routes_and_mounts_carry_annotations() -> None:
    @requires("orders:read")
    async def protected(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("protected")

    @public
    async def open_page(request):  # type: ignore[no-untyped-def]
        return JSONResponse({"open": True})

    app = Starlette(
        routes=[
            Route("/open", open_page),
            Mount("/v1", routes=[Route("/orders", protected)]),
        ]
    )
    app.add_middleware(ZeroTrustMiddleware, settings=zt_settings())
    client = TestClient(app)

    assert client.get("/open").status_code == 200
    assert client.get("/v1/orders").status_code == 401
    assert client.get("/v1/orders", headers=bearer("orders:read")).text == "protected"


def test_route_table_in_settings_covers_unannotated_views() -> None:
    async def legacy(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("legacy body")

    app = Starlette(routes=[Route("/legacy/{item}", legacy)])
    app.add_middleware(
        ZeroTrustMiddleware,
        settings=zt_settings(
            routes=[
                {
                    "path": "/legacy/{item}",
                    "methods": ["GET"],
                    "scopes": ["legacy:read"],
                }
            ]
        ),
    )
    client = TestClient(app)

    assert client.get("/legacy/1", headers=bearer("legacy:read")).text == "legacy body"
    assert client.get("/legacy/1", headers=bearer("orders:read")).status_code == 403


def test_settings_accept_keyword_arguments_and_toml(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(KEY.jwks()))
    toml = tmp_path / "zt.toml"
    toml.write_text(
        f'[zero_trust]\nissuer = "{ISSUER}"\naudience = "orders"\njwks_file = "{jwks}"\n'
        '[[zero_trust.routes]]\npath = "/hello"\nscopes = ["orders:read"]\n'
    )

    async def hello(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("hello")

    for options in (
        {"settings": str(toml)},
        {
            "issuer": ISSUER,
            "audience": "orders",
            "jwks": KEY.jwks(),
            "routes": [{"path": "/hello", "scopes": ["orders:read"]}],
        },
    ):
        app = Starlette(routes=[Route("/hello", hello)])
        app.add_middleware(ZeroTrustMiddleware, **options)
        client = TestClient(app)
        assert client.get("/hello").status_code == 401
        assert client.get("/hello", headers=bearer("orders:read")).text == "hello"


def test_an_exception_while_deciding_is_a_refusal_not_a_500(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = fastapi_app()
    client = TestClient(app)
    from zt_middleware.routes import RouteTable

    def explode(self, method, path):  # type: ignore[no-untyped-def]
        raise RuntimeError("policy exploded")

    monkeypatch.setattr(RouteTable, "match", explode)
    with caplog.at_level(logging.ERROR, logger="zt_middleware"):
        response = client.get("/api/orders", headers=bearer("orders:read"))

    assert response.status_code == 403
    assert response.json()["reason"] == "decision_error"
    assert "www-authenticate" in response.headers


def test_key_fetch_runs_off_the_event_loop() -> None:
    """An unknown kid makes the JWKS source fetch; the loop keeps running."""
    import threading
    import time

    from zt_middleware.keys import JWKSSource

    fetch_threads: list[int] = []

    def slow_opener(url: str, timeout: float, max_bytes: int) -> bytes:
        fetch_threads.append(threading.get_ident())
        time.sleep(0.2)
        import json

        return json.dumps(KEY.jwks()).encode()

    source = JWKSSource(
        "https://idp.example.test/jwks", allowed={"ES256"}, opener=slow_opener
    )
    middleware = ZeroTrustMiddleware(
        fastapi_app(),
        guard=None,
        settings=zt_settings(jwks=None, jwks_url="https://idp.example.test/jwks"),
    )
    middleware.guard.key_source = source
    middleware.guard.verifier.key_source = source

    async def scenario() -> tuple[int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        sent: list[dict[str, object]] = []

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/healthz-none",
            "raw_path": b"/",
            "query_string": b"",
            "headers": [
                (b"authorization", bearer("orders:read")["authorization"].encode())
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "scheme": "http",
            "http_version": "1.1",
            "root_path": "",
        }
        await middleware(scope, receive, send)
        task.cancel()
        return ticks, int(sent[0]["status"])  # type: ignore[call-overload]

    loop_thread = threading.get_ident()
    ticks, status = asyncio.run(scenario())

    assert fetch_threads and fetch_threads[0] != loop_thread
    assert ticks >= 5  # the loop ran while the fetch slept
    assert status == 403  # verified, then refused: the path has no requirement


def test_a_guard_that_cannot_start_refuses_every_request_and_the_lifespan(
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    broken = zt_settings(store=f"sqlite:///{tmp_path}/missing/dir/zt.db")
    app = Starlette(
        routes=[Route("/healthz", public(lambda request: JSONResponse({})))]
    )
    app.add_middleware(ZeroTrustMiddleware, settings=broken)

    response = TestClient(app).get("/healthz")

    assert response.status_code == 503
    assert 'error="temporarily_unavailable"' in response.headers["www-authenticate"]

    # The lifespan startup fails, so a server stops instead of serving.
    middleware = ZeroTrustMiddleware(app, settings=broken)
    script = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return script.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(middleware({"type": "lifespan"}, receive, send), 5))
    assert [m["type"] for m in sent] == [
        "lifespan.startup.failed",
        "lifespan.shutdown.complete",
    ]
