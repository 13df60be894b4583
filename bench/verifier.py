"""Verifier cost per token: ``TokenVerifier.verify_now`` vs ``jwt.decode``.

``jwt.decode`` gets the same public key object, ``algorithms=[alg]``,
``audience`` and ``issuer``. Ours runs from the library's real settings
(inline JWK Set, ``typ`` required, lifetime cap) and so checks more.

First-seen: N distinct tokens, minted up front, each verified once by a
verifier built for that repeat (empty cache). Repeated: one token, already
verified, served from the cache. Cache off: ``verified_cache_size=0``, N
distinct tokens. All per-token figures are total time over the loop / N.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from zt_middleware import Guard
from zt_middleware.issuer import SigningKey

from .workload import AUDIENCE, ISSUER, zt_settings

FIRST_SEEN = "first-seen (N distinct tokens)"
REPEATED = "repeated (cache hit)"
CACHE_OFF = "first-seen, cache off"
DECODE = "jwt.decode (baseline)"


@dataclass(frozen=True)
class VerifierRow:
    algorithm: str
    case: str
    micros: float  # median per token, over repeats

    def ratio_to(self, baseline: VerifierRow) -> float:
        return self.micros / baseline.micros


def _per_token(verify: Callable[[str], Any], tokens: Sequence[str]) -> float:
    start = time.perf_counter()
    for token in tokens:
        verify(token)
    return (time.perf_counter() - start) / len(tokens) * 1e6


def measure(
    key: SigningKey, tokens: Sequence[str], repeats: int, hits: int
) -> list[VerifierRow]:
    """Interleave the four cases ``repeats`` times; keep each one's median."""
    public_key = key.private_key.public_key()
    settings = zt_settings(key)

    def decode(token: str) -> Any:
        return jwt.decode(
            token, public_key, algorithms=[key.algorithm], audience=AUDIENCE, issuer=ISSUER
        )

    times: dict[str, list[float]] = {DECODE: [], FIRST_SEEN: [], REPEATED: [], CACHE_OFF: []}
    for _ in range(repeats):
        times[DECODE].append(_per_token(decode, tokens))

        fresh = Guard(settings).verifier
        times[FIRST_SEEN].append(_per_token(fresh.verify_now, tokens))
        times[REPEATED].append(_per_token(fresh.verify_now, [tokens[-1]] * hits))

        uncached = Guard({**settings, "verified_cache_size": 0}).verifier
        times[CACHE_OFF].append(_per_token(uncached.verify_now, tokens))

    return [
        VerifierRow(key.algorithm, case, statistics.median(values))
        for case, values in times.items()
    ]
