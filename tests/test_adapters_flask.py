"""The Flask extension and the plain WSGI middleware, driven through WebTest."""

from __future__ import annotations

import logging

import pytest
from flask import Flask, g
from webtest import TestApp

from integrations.inventory_flask.app import create_app
from zt_middleware import requires
from zt_middleware.adapters.flask import ZeroTrust
from zt_middleware.adapters.wsgi import PRINCIPAL_KEY, ZeroTrustWSGIMiddleware
from zt_middleware.errors import ConfigurationError
from zt_middleware.issuer import Issuer, generate_key

ISSUER = "https://issuer.example.test"
KEY = generate_key("EdDSA", "flask-k1")
MINT = Issuer(KEY, ISSUER)


def bearer(*scopes: str, audience: str = "inventory") -> dict[str, str]:
    return {"Authorization": "Bearer " + MINT.issue("alice", audience, scopes=scopes)}


def zt_settings(**extra: object) -> dict[str, object]:
    return {"issuer": ISSUER, "audience": "inventory", "jwks": KEY.jwks(), **extra}


@pytest.fixture
def inventory() -> TestApp:
    return TestApp(create_app(zt_settings()))


def test_annotated_view_gets_principal_in_g(inventory: TestApp) -> None:
    response = inventory.get("/api/items", headers=bearer("inventory:read"))

    assert response.status_int == 200
    assert response.json["seen_by"] == "alice"


def test_no_token_is_401_with_json_body(inventory: TestApp) -> None:
    response = inventory.get("/api/items", status=401)

    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json["reason"] == "missing_token"


def test_missing_scope_is_403(inventory: TestApp) -> None:
    response = inventory.post(
        "/api/items/KB-104/reserve", headers=bearer("inventory:read"), status=403
    )

    assert 'scope="inventory:write"' in response.headers["WWW-Authenticate"]


def test_unannotated_view_is_refused_with_valid_token(inventory: TestApp) -> None:
    response = inventory.get(
        "/api/internal/export", headers=bearer("inventory:read"), status=403
    )

    assert response.json["reason"] == "route_unannotated"


def test_token_for_another_service_is_refused(inventory: TestApp) -> None:
    response = inventory.get(
        "/api/items", headers=bearer("inventory:read", audience="orders"), status=401
    )

    assert response.json["reason"] == "wrong_audience"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_head_follows_get(inventory: TestApp) -> None:
    inventory.head("/api/items", status=401)
    inventory.head("/api/items", headers=bearer("inventory:write"), status=403)
    inventory.head("/api/items", headers=bearer("inventory:read"), status=200)


@pytest.mark.parametrize(
    "path", ["//admin", "/%61dmin", "/x/../admin", "/admin/", "/ADMIN", "/./admin"]
)
def test_admin_spellings_are_refused_like_admin(inventory: TestApp, path: str) -> None:
    anonymous = inventory.get(path, status="*")
    lacking = inventory.get(path, headers=bearer("inventory:read"), status="*")

    assert anonymous.status_int == 401
    assert lacking.status_int == 403


def test_public_route_and_unknown_path(inventory: TestApp) -> None:
    assert inventory.get("/healthz").json == {"status": "ok"}
    inventory.get("/healthzevil", status=401)
    inventory.get("/no/such/page", headers=bearer("inventory:read"), status=403)


def test_forwarded_for_from_untrusted_peer_is_not_believed(
    inventory: TestApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        inventory.get(
            "/healthz",
            headers={"X-Forwarded-For": "127.0.0.1"},
            extra_environ={"REMOTE_ADDR": "203.0.113.9"},
        )

    event = caplog.records[-1].zt_event  # type: ignore[attr-defined]
    assert event["client"] == "203.0.113.9"


def test_forwarded_for_through_trusted_proxy_is_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = TestApp(create_app(zt_settings(trusted_proxies=["10.0.0.0/8"])))
    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        app.get(
            "/healthz",
            headers={"X-Forwarded-For": "198.51.100.7, 10.1.2.3"},
            extra_environ={"REMOTE_ADDR": "10.0.0.1"},
        )

    assert caplog.records[-1].zt_event["client"] == "198.51.100.7"  # type: ignore[attr-defined]


def test_init_app_pattern_and_config_validation() -> None:
    zt = ZeroTrust()
    app = Flask(__name__)
    app.config["ZERO_TRUST"] = zt_settings()

    @app.get("/ping")
    @requires("inventory:read")
    def ping() -> str:
        return f"pong {g.principal.subject}"

    zt.init_app(app)
    client = TestApp(app)

    assert client.get("/ping", headers=bearer("inventory:read")).text == "pong alice"
    bad = Flask(__name__)
    bad.config["ZERO_TRUST"] = {
        "issuer": ISSUER,
        "audience": "inventory",
        "leeway": 9000,
    }
    with pytest.raises(ConfigurationError, match="leeway"):
        ZeroTrust(bad)


def test_flask_static_endpoint_is_default_denied() -> None:
    app = Flask(__name__, static_folder=None)
    app.add_url_rule("/static/<path:filename>", "static", lambda filename: filename)
    ZeroTrust(app, settings=zt_settings())

    TestApp(app).get("/static/app.js", status=401)


def test_plain_wsgi_middleware_uses_the_route_table() -> None:
    def legacy_app(environ, start_response):  # type: ignore[no-untyped-def]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"hello {environ[PRINCIPAL_KEY].subject}".encode()]

    wrapped = ZeroTrustWSGIMiddleware(
        legacy_app,
        zt_settings(
            routes=[
                {
                    "path": "/reports/{name}",
                    "methods": ["GET"],
                    "scopes": ["reports:read"],
                },
                {"path": "/up", "public": True},
            ]
        ),
    )
    client = TestApp(wrapped)

    assert (
        client.get("/reports/q3", headers=bearer("reports:read")).text == "hello alice"
    )
    client.get("/reports/q3", headers=bearer("inventory:read"), status=403)
    client.get("/reports//q3/", status=401)
    client.get("/elsewhere", headers=bearer("reports:read"), status=403)


def test_exception_in_guard_is_a_refusal(
    monkeypatch: pytest.MonkeyPatch, inventory: TestApp
) -> None:
    from zt_middleware.tokens import TokenVerifier

    def explode(self, token):  # type: ignore[no-untyped-def]
        raise ValueError("boom")

    monkeypatch.setattr(TokenVerifier, "verify", explode)
    response = inventory.get("/api/items", headers=bearer("inventory:read"), status=403)

    assert response.json["reason"] == "decision_error"
