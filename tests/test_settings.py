"""Settings: one schema, validated at start, errors that name the field."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import pytest

from zt_middleware.errors import ConfigurationError
from zt_middleware.settings import (
    InsecureSettingWarning,
    RouteRule,
    Settings,
    load_settings,
)

MINIMAL = {
    "issuer": "https://issuer.example.test",
    "audience": "https://orders.example.test",
    "jwks_url": "https://issuer.example.test/jwks",
}


def build(**values: Any) -> Settings:
    return Settings.from_mapping({**MINIMAL, **values})


def test_minimal_settings_take_the_safe_defaults() -> None:
    settings = build()

    assert settings.algorithms == ("RS256", "PS256", "ES256", "EdDSA")
    assert settings.leeway == 30
    assert settings.max_token_lifetime == 900
    assert settings.max_token_size == 8192
    assert settings.routes == ()
    assert settings.trusted_proxies == ()
    assert settings.case_insensitive_paths is False


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        build().leeway = 300  # type: ignore[misc]


def test_settings_object_passes_through_unchanged() -> None:
    settings = build()

    assert Settings.from_mapping(settings) is settings
    assert load_settings(settings) is settings


def test_unknown_key_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown key\(s\) 'leway'.*leeway"):
        build(leway=10)


@pytest.mark.parametrize("field", ["issuer", "audience"])
def test_missing_required_field_is_named(field: str) -> None:
    values = {k: v for k, v in MINIMAL.items() if k != field}

    with pytest.raises(ConfigurationError, match=f"^{field}: required"):
        Settings.from_mapping(values)


def test_settings_that_are_not_a_mapping_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="expected a mapping, got list"):
        Settings.from_mapping([("issuer", "x")])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("issuer", 7, "issuer: expected a non-empty string, got int"),
        ("audience", "", "audience: expected a non-empty string, got str"),
        ("leeway", "30", "leeway: expected an integer, got str"),
        ("leeway", True, "leeway: expected an integer, got bool"),
        ("leeway", 30.0, "leeway: expected an integer, got float"),
        ("leeway", 301, "leeway: expected from 0 to 300, got 301"),
        ("leeway", -1, "leeway: expected from 0 to 300, got -1"),
        ("max_token_lifetime", 0, "max_token_lifetime: expected >= 1, got 0"),
        ("max_token_size", 100, "max_token_size: expected from 256 to"),
        ("algorithms", "RS256", "algorithms: expected a list of strings, got str"),
        ("algorithms", [], "algorithms: expected at least one algorithm"),
        ("algorithms", ["none"], "algorithms: 'none' is not supported"),
        (
            "algorithms",
            ["RS256", 1],
            "algorithms: expected a list of strings, found int",
        ),
        ("jwks_url", "ftp://issuer.example.test/jwks", "jwks_url: expected an http"),
        ("jwks", ["k1"], "jwks: expected a mapping, got list"),
        ("pem_keys", {"k1": 7}, "pem_keys: expected {kid: path} strings"),
        ("token_type", 1, "token_type: expected a non-empty string"),
        ("realm", "", "realm: expected a non-empty string"),
        (
            "case_insensitive_paths",
            "yes",
            "case_insensitive_paths: expected true or false",
        ),
        (
            "trusted_proxies",
            ["proxy.internal"],
            "trusted_proxies: 'proxy.internal' is not",
        ),
        ("trusted_proxies", "10.0.0.1", "trusted_proxies: expected a list of strings"),
        ("allow_cors_preflight", 1, "allow_cors_preflight: expected true or false"),
        ("jwks_timeout", 0, "jwks_timeout: expected a positive number"),
        ("jwks_max_bytes", 10, "jwks_max_bytes: expected >= 1024"),
        ("verified_cache_size", -1, "verified_cache_size: expected >= 0"),
        ("store", "ftp://cache", "store: expected memory://"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 30 else None,
)
def test_wrong_value_is_refused_with_a_message_naming_the_field(
    field: str, value: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        build(**{field: value})

    assert str(refused.value).startswith(message)


def test_no_key_source_is_refused_naming_every_option() -> None:
    values = {k: v for k, v in MINIMAL.items() if k != "jwks_url"}

    with pytest.raises(ConfigurationError) as refused:
        Settings.from_mapping(values)

    for option in ("jwks_url", "jwks", "jwks_file", "pem_keys"):
        assert option in str(refused.value)


def test_refused_values_are_described_never_echoed() -> None:
    """A mistyped secret must not end up in a start-up log."""
    secret = "hmac-secret-value-9f1c"

    with pytest.raises(ConfigurationError) as refused:
        build(jwks=secret)

    assert secret not in str(refused.value)


# -- route rules --------------------------------------------------------------


def test_route_rules_are_read_into_rules() -> None:
    settings = build(
        routes=[
            {
                "path": "/api/orders",
                "methods": ["get", "HEAD"],
                "scopes": "orders:read orders:list",
            },
            {"path": "/healthz", "public": True},
            {"path": "/api/pay", "acr": "phr", "max_age": 300},
        ]
    )

    assert settings.routes == (
        RouteRule(
            path="/api/orders",
            methods=frozenset({"GET", "HEAD"}),
            scopes=frozenset({"orders:read", "orders:list"}),
        ),
        RouteRule(path="/healthz", public=True),
        RouteRule(path="/api/pay", acr="phr", max_age=300),
    )


@pytest.mark.parametrize(
    ("route", "message"),
    [
        (
            {"path": "/a", "public": True, "scopes": ["x"]},
            "routes[0]: a public route cannot require scopes",
        ),
        ({"path": "/a"}, "routes[0]: say either public = true or the scopes"),
        ({"path": "a", "scopes": []}, "routes[0].path: expected to start with '/'"),
        ({"scopes": []}, "routes[0].path: expected a non-empty string"),
        (
            {"path": "/a", "methods": ["FETCH"], "scopes": []},
            "routes[0].methods: unknown method",
        ),
        (
            {"path": "/a", "scopes": ['orders"read']},
            "routes[0].scopes: 'orders\"read' is not",
        ),
        ({"path": "/a", "scope": ["x"]}, "routes[0]: unknown key(s) ['scope']"),
        ({"path": "/a", "public": "yes"}, "routes[0].public: expected true or false"),
        (
            {"path": "/a", "scopes": [], "max_age": -1},
            "routes[0].max_age: expected >= 0",
        ),
        ("/a", "routes[0]: expected a mapping"),
    ],
    ids=[
        "public-with-scopes",
        "neither",
        "relative",
        "no-path",
        "method",
        "quote",
        "unknown-key",
        "public-not-bool",
        "negative-max-age",
        "not-mapping",
    ],
)
def test_bad_route_rule_is_refused_naming_its_index_and_field(
    route: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError) as refused:
        build(routes=[route])

    assert str(refused.value).startswith(message)


def test_route_table_must_be_a_list() -> None:
    with pytest.raises(ConfigurationError, match="routes: expected a list"):
        build(routes={"/a": {"public": True}})


# -- loud at start ------------------------------------------------------------


def test_turning_off_the_lifetime_cap_warns_naming_the_setting() -> None:
    with pytest.warns(InsecureSettingWarning, match="max_token_lifetime"):
        settings = build(max_token_lifetime=None)

    assert settings.max_token_lifetime is None


def test_plain_http_jwks_url_to_a_remote_host_warns() -> None:
    with pytest.warns(InsecureSettingWarning, match="jwks_url"):
        build(jwks_url="http://issuer.example.test/jwks")


@pytest.mark.parametrize(
    "url",
    [
        "https://issuer.example.test/jwks",
        "http://127.0.0.1:8000/jwks",
        "http://localhost/jwks",
        "http://[::1]/jwks",
    ],
)
def test_https_or_loopback_jwks_url_does_not_warn(url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(jwks_url=url)


# -- other sources ------------------------------------------------------------


def test_toml_file_is_read_from_its_zero_trust_table(tmp_path) -> None:
    path = tmp_path / "zt.toml"
    path.write_text(
        "[zero_trust]\n"
        'issuer = "https://issuer.example.test"\n'
        'audience = "orders"\n'
        'jwks_url = "https://issuer.example.test/jwks"\n'
        "leeway = 10\n"
        "[[zero_trust.routes]]\n"
        'path = "/healthz"\n'
        "public = true\n"
    )

    settings = load_settings(str(path))

    assert settings.leeway == 10
    assert settings.routes == (RouteRule(path="/healthz", public=True),)


def test_unreadable_toml_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[zero_trust\n")

    with pytest.raises(ConfigurationError, match=r"broken\.toml"):
        Settings.from_toml(str(path))


def test_environment_variables_are_read_as_json_or_text() -> None:
    settings = Settings.from_env(
        {
            "ZT_ISSUER": "https://issuer.example.test",
            "ZT_AUDIENCE": "orders",
            "ZT_JWKS_URL": "https://issuer.example.test/jwks",
            "ZT_LEEWAY": "5",
            "ZT_ALGORITHMS": '["ES256"]',
            "UNRELATED": "x",
        }
    )

    assert settings.leeway == 5
    assert settings.algorithms == ("ES256",)
    assert settings.audience == "orders"


def test_environment_may_point_at_a_settings_file(tmp_path) -> None:
    path = tmp_path / "zt.toml"
    path.write_text(
        'issuer = "https://issuer.example.test"\naudience = "a"\n'
        'jwks_url = "https://issuer.example.test/jwks"\n'
    )

    assert Settings.from_env({"ZT_SETTINGS_FILE": str(path)}).audience == "a"
