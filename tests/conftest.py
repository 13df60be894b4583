"""Shared fixtures: real keys, a development issuer, a frozen clock and guards.

RSA keys are generated once per session. Every token is minted at the frozen
clock's time, and every guard built by ``make_guard`` reads the same clock,
so tests move time with ``clock.advance`` instead of sleeping.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest
from jwt.algorithms import get_default_algorithms

from zt_middleware.guard import Guard
from zt_middleware.issuer import Issuer, SigningKey, generate_key
from zt_middleware.keys import KeySource

ISSUER = "https://issuer.example.test"
AUDIENCE = "https://orders.example.test"
START = 1_767_225_600  # 2026-01-01T00:00:00Z


class FrozenClock:
    """A clock that moves only when told to; call it for the time."""

    def __init__(self, now: float = START) -> None:
        self.now = float(now)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64url(data: bytes | str) -> str:
    """Unpadded base64url, as compact JWS spells it."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@pytest.fixture(scope="session")
def rsa_key() -> SigningKey:
    """The service's trusted signing key, kid ``k1``."""
    return generate_key("RS256", kid="k1")


@pytest.fixture(scope="session")
def stranger_key() -> SigningKey:
    """A well-formed RSA key the service has never heard of, kid ``k2``."""
    return generate_key("RS256", kid="k2")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def issuer(rsa_key: SigningKey) -> Issuer:
    return Issuer(rsa_key, ISSUER)


@pytest.fixture
def mint(issuer: Issuer, clock: FrozenClock) -> Callable[..., str]:
    """``mint(subject="alice", scopes=..., audience=..., extra=..., ...)``.

    Signs with the trusted key at the frozen clock's time.
    """

    def mint(
        subject: str = "alice",
        *,
        scopes: Iterable[str] = (),
        audience: str | list[str] = AUDIENCE,
        **options: Any,
    ) -> str:
        options.setdefault("now", clock())
        return issuer.issue(subject, audience, scopes=scopes, **options)

    return mint


@pytest.fixture
def claims(clock: FrozenClock) -> Callable[..., dict[str, Any]]:
    """A valid claim set at the clock's time; keyword arguments override."""

    def claims(**overrides: Any) -> dict[str, Any]:
        now = int(clock())
        values: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice",
            "iat": now,
            "exp": now + 300,
            "scope": "orders:read",
        }
        values.update(overrides)
        return values

    return claims


@pytest.fixture
def forge(rsa_key: SigningKey) -> Callable[..., str]:
    """Sign any header and payload exactly as given (dicts or raw JSON text).

    ``forge(header, payload, key=None, alg=None)`` signs with the trusted
    key unless told otherwise; the algorithm used to sign is ``alg`` or the
    header's ``alg`` (default RS256). For tokens no library would produce:
    duplicate names, ``crit``, non-numeric dates.
    """

    def forge(
        header: Mapping[str, Any] | str | bytes,
        payload: Mapping[str, Any] | str | bytes,
        *,
        key: SigningKey | None = None,
        alg: str | None = None,
    ) -> str:
        if isinstance(header, Mapping):
            alg = alg or header.get("alg")
            header = json.dumps(dict(header), separators=(",", ":"))
        if isinstance(payload, Mapping):
            payload = json.dumps(dict(payload), separators=(",", ":"))

        signing_input = f"{b64url(header)}.{b64url(payload)}"
        algorithm = get_default_algorithms()[alg or "RS256"]
        signature = algorithm.sign(
            signing_input.encode("ascii"), (key or rsa_key).private_key
        )

        return f"{signing_input}.{b64url(signature)}"

    return forge


@pytest.fixture
def base_settings(rsa_key: SigningKey) -> dict[str, Any]:
    """Settings for a service protecting ``GET /api/orders`` (scope
    ``orders:read``) with a public ``/healthz``, keyed by ``rsa_key``."""
    return {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks": rsa_key.jwks(),
        "routes": [
            {"path": "/api/orders", "methods": ["GET"], "scopes": ["orders:read"]},
            {"path": "/healthz", "public": True},
        ],
    }


@pytest.fixture
def make_guard(
    base_settings: dict[str, Any], clock: FrozenClock
) -> Callable[..., Guard]:
    """``make_guard(**settings)``: a guard on the frozen clock.

    Keyword arguments replace keys of ``base_settings``; ``key_source=`` and
    ``audit=`` go to :class:`Guard` itself.
    """

    def make_guard(
        *, key_source: KeySource | None = None, audit: Any = None, **settings: Any
    ) -> Guard:
        return Guard(
            {**base_settings, **settings},
            key_source=key_source,
            audit=audit,
            clock=clock,
        )

    return make_guard
