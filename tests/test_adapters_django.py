"""The Django middleware, sync and async, on the registry example project."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from zt_middleware.issuer import Issuer, generate_key

ISSUER = "https://issuer.example.test"
KEY = generate_key("RS256", "django-k1")
MINT = Issuer(KEY, ISSUER)
ZT = {"issuer": ISSUER, "audience": "registry", "jwks": KEY.jwks()}


@pytest.fixture(scope="module", autouse=True)
def registry(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "integrations.registry_django.settings"
    os.environ["ZT_SETTINGS_JSON"] = json.dumps(ZT)
    os.environ["REGISTRY_DB"] = str(tmp_path_factory.mktemp("registry") / "db.sqlite3")

    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    settings.ZERO_TRUST = ZT
    settings.DATABASES["default"]["NAME"] = os.environ["REGISTRY_DB"]
    call_command("migrate", verbosity=0)
    call_command("seed", verbosity=0)


def bearer(*scopes: str, audience: str = "registry") -> dict[str, str]:
    token = MINT.issue("alice", audience, scopes=scopes)
    return {"HTTP_AUTHORIZATION": "Bearer " + token}


@pytest.fixture
def client():  # type: ignore[no-untyped-def]
    from django.test import Client

    return Client()


@pytest.fixture
def async_client():  # type: ignore[no-untyped-def]
    from django.test import AsyncClient

    return AsyncClient()


def test_function_view_needs_its_scope(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/users").status_code == 401
    assert client.get("/api/users", **bearer("registry:write")).status_code == 403

    response = client.get("/api/users", **bearer("registry:read"))
    assert response.status_code == 200
    assert response.json()["seen_by"] == "alice"


def test_class_view_method_marks_apply_per_method(client) -> None:  # type: ignore[no-untyped-def]
    body = json.dumps({"username": "dmitri", "email": "dmitri@example.test"})

    refused = client.post(
        "/api/users", body, content_type="application/json", **bearer("registry:read")
    )
    created = client.post(
        "/api/users", body, content_type="application/json", **bearer("registry:write")
    )

    assert refused.status_code == 403
    assert 'scope="registry:write"' in refused["WWW-Authenticate"]
    assert created.status_code == 201


def test_class_decorated_view_is_protected(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/users/alice").status_code == 401
    assert client.get("/api/users/alice", **bearer("registry:read")).status_code in (
        200,
        404,
    )


def test_unannotated_view_and_unknown_path_are_refused(client) -> None:  # type: ignore[no-untyped-def]
    purge = client.get(
        "/api/internal/purge", **bearer("registry:read", "registry:admin")
    )
    unknown = client.get("/nowhere", **bearer("registry:read"))

    assert purge.status_code == 403
    assert purge.json()["reason"] == "route_unannotated"
    assert unknown.status_code == 403


@pytest.mark.parametrize(
    "path", ["/admin", "/admin/", "//admin/", "/%61dmin/", "/x/../admin/", "/ADMIN/"]
)
def test_admin_spellings_never_reach_admin(client, path: str) -> None:  # type: ignore[no-untyped-def]
    anonymous = client.get(path)
    lacking = client.get(path, **bearer("registry:read"))

    assert anonymous.status_code == 401
    assert lacking.status_code == 403
    assert b"admin" not in lacking.content.replace(b"registry:admin", b"")


def test_async_stack_decides_the_same(async_client) -> None:  # type: ignore[no-untyped-def]
    def headers(*scopes: str) -> dict[str, str]:
        return {"Authorization": bearer(*scopes)["HTTP_AUTHORIZATION"]}

    async def scenario() -> tuple[int, int, int, int]:
        anonymous = await async_client.get("/api/users")
        lacking = await async_client.get(
            "/api/users", headers=headers("registry:write")
        )
        allowed = await async_client.get("/api/users", headers=headers("registry:read"))
        unannotated = await async_client.get(
            "/api/internal/purge", headers=headers("registry:read")
        )
        return (
            anonymous.status_code,
            lacking.status_code,
            allowed.status_code,
            unannotated.status_code,
        )

    assert asyncio.run(scenario()) == (401, 403, 200, 403)


def test_middleware_runs_in_async_mode_under_an_async_handler() -> None:
    from zt_middleware.adapters.django import ZeroTrustMiddleware

    async def get_response(request):  # type: ignore[no-untyped-def]
        return None

    def sync_get_response(request):  # type: ignore[no-untyped-def]
        return None

    assert ZeroTrustMiddleware(get_response).async_mode is True
    assert ZeroTrustMiddleware(sync_get_response).async_mode is False


def test_webtest_over_the_wsgi_application() -> None:
    from django.core.wsgi import get_wsgi_application
    from webtest import TestApp

    app = TestApp(get_wsgi_application())
    token = bearer("registry:read")["HTTP_AUTHORIZATION"]

    assert (
        app.get("/api/users", headers={"Authorization": token}).json["seen_by"]
        == "alice"
    )
    app.get("/api/users", status=401)
    app.get("/api/users", headers={"Authorization": token + ", Bearer x"}, status=400)


def test_bad_settings_stop_django_at_start() -> None:
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from zt_middleware.adapters.django import ZeroTrustMiddleware

    with (
        override_settings(
            ZERO_TRUST={"issuer": ISSUER, "audience": 7, "jwks": KEY.jwks()}
        ),
        pytest.raises(ImproperlyConfigured, match="audience"),
    ):
        ZeroTrustMiddleware(lambda request: None)
