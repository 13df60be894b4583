"""Risk signals through the guard: each named, weighed, and deciding.

Locations come from MaxMind's test databases: 2a02:d3c0::1 is in Britain
(54.76, -2.70), 216.160.83.56 in Milton, WA, 65.0.0.1 a Tor exit node and
71.160.223.1 a hosting provider (see tests/test_geo.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zt_middleware import reasons
from zt_middleware.context import RequestContext
from zt_middleware.decision import Outcome
from zt_middleware.errors import ConfigurationError
from zt_middleware.issuer import Issuer, generate_key
from zt_middleware.risk import DEFAULT_WEIGHTS

VECTORS = Path(__file__).parent / "vectors" / "maxmind"
DATA = Path(__file__).parent / "data"
BRITAIN = "2a02:d3c0::1"
USA = "216.160.83.56"
TOR_EXIT = "65.0.0.1"
HOSTING = "71.160.223.1"


@pytest.fixture
def geo_guard(make_guard):  # type: ignore[no-untyped-def]
    def build(**settings: Any):  # type: ignore[no-untyped-def]
        return make_guard(
            geoip_city_db=str(VECTORS / "GeoIP2-City-Test.mmdb"),
            geoip_anonymous_db=str(VECTORS / "GeoIP2-Anonymous-IP-Test.mmdb"),
            **settings,
        )

    return build


def request(
    token: str,
    client: str,
    path: str = "/api/orders",
    agent: str = "ua-1",
    **headers: str,
) -> RequestContext:
    return RequestContext(
        "GET",
        path,
        {"authorization": f"Bearer {token}", "user-agent": agent, **headers},
        client=client,
    )


def session_token(mint, **extra: Any) -> str:  # type: ignore[no-untyped-def]
    return mint(scopes=["orders:read"], session_id="sess-1", lifetime=900, **extra)


def test_same_place_and_device_carries_no_risk(geo_guard, mint, clock) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard()
    token = session_token(mint)

    first = guard.decide(request(token, BRITAIN))
    clock.advance(60)
    second = guard.decide(request(token, BRITAIN))

    assert first.allowed and second.allowed
    assert second.score == 0 and second.signals == ()


def test_session_from_another_continent_ten_minutes_later_is_challenged(
    geo_guard, mint, clock
) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard()
    token = session_token(mint)
    assert guard.decide(request(token, BRITAIN)).allowed

    clock.advance(600)
    decision = guard.decide(request(token, USA))

    assert decision.outcome is Outcome.CHALLENGE
    assert decision.status == 401
    assert decision.error == "insufficient_user_authentication"
    assert "impossible_travel" in decision.reasons
    assert (
        "impossible_travel",
        DEFAULT_WEIGHTS["impossible_travel"],
    ) in decision.signals
    assert decision.score == sum(weight for _, weight in decision.signals)
    header = decision.www_authenticate("api")
    assert 'acr_values="urn:zt:acr:mfa"' in header
    assert 'max_age="300"' in header


def test_same_trip_over_a_day_is_not_impossible(geo_guard, mint, clock) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard()
    token_uk = session_token(mint)
    assert guard.decide(request(token_uk, BRITAIN)).allowed

    clock.advance(24 * 3600)
    token_us = mint(scopes=["orders:read"], session_id="sess-2")
    decision = guard.decide(request(token_us, USA))

    assert "impossible_travel" not in decision.reasons
    assert decision.allowed


def test_tor_exit_on_a_sensitive_route_is_denied(geo_guard, mint) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard(
        routes=[{"path": "/api/pay", "scopes": ["orders:read"], "deny_at": 80}]
    )
    decision = guard.decide(request(session_token(mint), TOR_EXIT, path="/api/pay"))

    assert decision.outcome is Outcome.DENY
    assert decision.status == 403
    assert decision.reasons[0] == reasons.RISK_TOO_HIGH
    assert "tor_exit" in decision.reasons


def test_tor_exit_on_an_ordinary_route_is_challenged_not_denied(
    geo_guard, mint
) -> None:  # type: ignore[no-untyped-def]
    decision = geo_guard().decide(request(session_token(mint), TOR_EXIT))

    assert decision.outcome is Outcome.CHALLENGE


def test_hosting_provider_alone_stays_below_the_challenge(geo_guard, mint) -> None:  # type: ignore[no-untyped-def]
    decision = geo_guard().decide(request(session_token(mint), HOSTING))

    assert decision.allowed
    assert decision.signals == (
        ("hosting_provider", DEFAULT_WEIGHTS["hosting_provider"]),
    )


def test_device_changing_mid_session_is_drift(geo_guard, mint, clock) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard()
    token = session_token(mint)
    guard.decide(request(token, BRITAIN, agent="laptop"))

    clock.advance(30)
    decision = guard.decide(request(token, BRITAIN, agent="someone-else"))

    assert "session_device_changed" in decision.reasons
    assert "new_device" in decision.reasons


def test_weights_and_thresholds_come_from_settings(geo_guard, mint) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard(risk_weights={"hosting_provider": 60}, risk_challenge_at=55)
    decision = guard.decide(request(session_token(mint), HOSTING))

    assert decision.outcome is Outcome.CHALLENGE
    assert decision.signals == (("hosting_provider", 60),)


def test_route_threshold_is_stricter_than_global(geo_guard, mint) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard(
        routes=[
            {"path": "/api/orders", "scopes": ["orders:read"]},
            {"path": "/api/admin", "scopes": ["orders:read"], "challenge_at": 20},
        ]
    )
    token = session_token(mint)

    assert guard.decide(request(token, HOSTING)).allowed
    assert (
        guard.decide(request(token, HOSTING, path="/api/admin")).outcome
        is Outcome.CHALLENGE
    )


def test_recent_step_up_answers_a_challenge_but_not_a_denial(
    geo_guard, mint, clock
) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard(
        routes=[
            {"path": "/api/orders", "scopes": ["orders:read"]},
            {"path": "/api/pay", "scopes": ["orders:read"], "deny_at": 80},
        ]
    )
    stepped = session_token(mint, extra={"acr": "urn:zt:acr:mfa", "auth_time": clock()})

    assert guard.decide(request(stepped, TOR_EXIT)).allowed
    assert not guard.decide(request(stepped, TOR_EXIT, path="/api/pay")).allowed

    clock.advance(301)  # auth_time now older than step_up_max_age
    assert guard.decide(request(stepped, TOR_EXIT)).outcome is Outcome.CHALLENGE


def test_deny_listed_network_is_refused_and_allow_listed_lowers_the_score(
    geo_guard, mint, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    deny = tmp_path / "deny.txt"
    deny.write_text("# known bad\n198.51.100.0/24\n")
    allow = tmp_path / "allow.txt"
    allow.write_text("71.160.223.0/24\n")
    guard = geo_guard(ip_deny_file=str(deny), ip_allow_file=str(allow))

    denied = guard.decide(request(session_token(mint), "198.51.100.7"))
    trusted = guard.decide(request(session_token(mint), HOSTING))

    assert denied.status == 403 and "ip_deny_listed" in denied.reasons
    assert trusted.allowed and "ip_allow_listed" in trusted.reasons
    assert trusted.score < DEFAULT_WEIGHTS["hosting_provider"]


def test_outdated_device_posture_is_a_signal(geo_guard, mint, clock) -> None:  # type: ignore[no-untyped-def]
    mdm_key = generate_key("ES256", "mdm-1")
    mdm = Issuer(mdm_key, "https://mdm.example.test")
    guard = geo_guard(
        posture_jwks=mdm_key.jwks(),
        posture_issuer="https://mdm.example.test",
        posture_minimums={"macos": "14.4.1"},
    )

    def posture(version: str) -> str:
        now = int(clock())
        return mdm.sign(
            {
                "iss": "https://mdm.example.test",
                "sub": "device-7",
                "iat": now,
                "exp": now + 3600,
                "os": "macos",
                "os_version": version,
            }
        )

    old = guard.decide(
        request(session_token(mint), BRITAIN, **{"x-device-posture": posture("13.6")})
    )
    current = guard.decide(
        request(session_token(mint), BRITAIN, **{"x-device-posture": posture("14.5")})
    )

    assert "posture_outdated" in old.reasons
    assert "posture_outdated" not in current.reasons
    assert old.score > current.score


def test_missing_posture_counts_only_when_required(geo_guard, mint) -> None:  # type: ignore[no-untyped-def]
    mdm_key = generate_key("ES256", "mdm-1")
    optional = geo_guard(
        posture_jwks=mdm_key.jwks(),
        posture_issuer="https://mdm.test",
        posture_minimums={"macos": "14.0"},
    )
    required = geo_guard(
        posture_jwks=mdm_key.jwks(),
        posture_issuer="https://mdm.test",
        posture_minimums={"macos": "14.0"},
        posture_required=True,
    )

    assert (
        "posture_missing"
        not in optional.decide(request(session_token(mint), BRITAIN)).reasons
    )
    assert (
        "posture_missing"
        in required.decide(request(session_token(mint), BRITAIN)).reasons
    )


def test_unknown_signal_in_weights_fails_at_start(geo_guard) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError, match="risk_weights"):
        geo_guard(risk_weights={"moon_phase": 10})


def test_deny_threshold_below_challenge_fails_at_start(geo_guard) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigurationError, match="risk_deny_at"):
        geo_guard(risk_challenge_at=60, risk_deny_at=40)


def test_embedded_countries_work_without_any_database(make_guard, mint, clock) -> None:  # type: ignore[no-untyped-def]
    guard = make_guard()
    token = session_token(mint)
    guard.decide(request(token, "81.2.69.142"))  # GB in the embedded table

    clock.advance(60)
    decision = guard.decide(request(token, "8.8.8.8"))  # US

    assert "new_country" in decision.reasons


def test_route_threshold_of_zero_challenges_every_request(geo_guard, mint) -> None:  # type: ignore[no-untyped-def]
    guard = geo_guard(
        routes=[{"path": "/api/orders", "scopes": ["orders:read"], "challenge_at": 0}]
    )

    decision = guard.decide(request(session_token(mint), BRITAIN))

    assert decision.score == 0
    assert decision.outcome is Outcome.CHALLENGE


def test_allow_listed_network_never_drives_the_score_below_zero(
    geo_guard, mint, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    allow = tmp_path / "allow.txt"
    allow.write_text("203.0.113.0/24\n")
    guard = geo_guard(
        ip_allow_file=str(allow),
        routes=[{"path": "/api/orders", "scopes": ["orders:read"], "challenge_at": 0}],
    )

    decision = guard.decide(request(session_token(mint), "203.0.113.9"))

    assert decision.score == 0
    assert decision.outcome is Outcome.CHALLENGE


def test_an_unreadable_client_address_is_itself_a_signal(geo_guard, mint) -> None:  # type: ignore[no-untyped-def]
    decision = geo_guard().decide(request(session_token(mint), "unknown"))

    assert "address_unknown" in decision.reasons
    assert decision.outcome is Outcome.CHALLENGE
