"""What every benchmark shares: one RS256 key, the settings, the tokens.

The settings are the library's real configuration with every check on: an
inline JWK Set, issuer and audience, a required ``typ`` of ``at+jwt``, the
default lifetime cap and leeway, the default verified-token cache, and a
route table that agrees with the views' ``@requires`` / ``@public`` marks
(so both sources are consulted and merged on every request).

Tokens come in two kinds. ``repeated`` is one token sent again and again (the
cache-hit path). ``pool`` holds distinct tokens, minted up front, each sent
at most once to any one guard, so every use is a first-seen verification.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zt_middleware.issuer import Issuer, SigningKey, generate_key

ISSUER = "https://idp.bench.invalid"
AUDIENCE = "bench-api"
TYP_HEADER = "at+jwt"
SUBJECT = "alice"
SCOPES = ("bench:read", "orders:read")
LIFETIME = 900  # the verifier's default cap; the run must end before this

ROUTE_TABLE = (
    {"path": "/hello", "methods": ["GET"], "scopes": ["bench:read"]},
    {"path": "/api/orders", "methods": ["GET"], "scopes": ["orders:read"]},
    {"path": "/healthz", "methods": ["GET"], "public": True},
)


def zt_settings(key: SigningKey, **overrides: Any) -> dict[str, Any]:
    """The guard's settings for tokens signed by ``key``."""
    settings: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks": key.jwks(),
        "token_type": TYP_HEADER,
        "routes": [dict(rule) for rule in ROUTE_TABLE],
    }
    settings.update(overrides)

    return settings


def mint(key: SigningKey, count: int, now: float | None = None) -> list[str]:
    """``count`` distinct tokens (each has its own ``jti`` and ``sid``)."""
    issuer = Issuer(key, ISSUER)
    return [
        issuer.issue(
            SUBJECT,
            AUDIENCE,
            scopes=SCOPES,
            lifetime=LIFETIME,
            headers={"typ": TYP_HEADER},
            now=now,
        )
        for _ in range(count)
    ]


def _mint_from_pem(pem: bytes, kid: str, count: int, now: float) -> list[str]:
    return mint(SigningKey.from_pem(pem, kid), count, now)


def mint_parallel(key: SigningKey, count: int, workers: int = 2) -> list[str]:
    """Mint in worker processes: an RSA signature costs about 0.4 ms."""
    if count < 2000 or workers < 2:
        return mint(key, count)

    now = time.time()
    shares = [count // workers + (i < count % workers) for i in range(workers)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        parts = pool.map(
            _mint_from_pem,
            [key.private_pem()] * workers,
            [key.kid] * workers,
            shares,
            [now] * workers,
        )
        return [token for part in parts for token in part]


@dataclass(frozen=True)
class Workload:
    key: SigningKey
    settings: dict[str, Any]
    repeated: str
    pool: tuple[str, ...]

    @classmethod
    def create(cls, pool_size: int) -> Workload:
        key = generate_key("RS256", kid="bench-rs256")
        tokens = mint_parallel(key, pool_size + 1)

        return cls(key, zt_settings(key), tokens[0], tuple(tokens[1:]))

    @property
    def public_pem(self) -> str:
        return self.key.public_pem().decode("ascii")

    def save(self, path: Path) -> None:
        """What a server subprocess needs: settings and the public key."""
        document = {"settings": self.settings, "public_pem": self.public_pem}
        path.write_text(json.dumps(document))


def load_server_workload(path: str) -> tuple[dict[str, Any], str]:
    document = json.loads(Path(path).read_text())
    return document["settings"], document["public_pem"]


class TokenSlices:
    """Disjoint runs of pool tokens, so no guard sees a token twice.

    The first ``warmup`` tokens warm the first-seen path; the rest is cut
    into one slice per repeat. Every guard (each app, each server) has its
    own cache, so each may use the same slices once.
    """

    def __init__(self, pool_size: int, repeats: int, warmup: int) -> None:
        self.warmup = (0, min(warmup, pool_size // 4))
        per_repeat = (pool_size - self.warmup[1]) // repeats
        start = self.warmup[1]
        self.repeats = [
            (start + i * per_repeat, start + (i + 1) * per_repeat)
            for i in range(repeats)
        ]
