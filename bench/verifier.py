"""Verifier cost per token: ``TokenVerifier.verify_now`` vs ``jwt.decode``.

``jwt.decode`` gets the same public key object, ``algorithms=[alg]``,
``audience`` and ``issuer``. Ours runs from the library's real settings
(inline JWK Set, ``typ`` required, lifetime cap) and so checks more.

First-seen: N distinct tokens, minted up front, each verified once by a
verifier built for that repeat (empty cache). Repeated: one token, already
verified, served from the cache. Cache off: ``verified_cache_size=0``, N
distinct tokens. Within a repeat the cases alternate every 100 tokens, so
that a change in the machine's speed hits them alike; a ratio is taken per
repeat and the median reported.
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


CHUNK = 100  # tokens per timed slice; the cases alternate slice by slice


@dataclass(frozen=True)
class VerifierRow:
    algorithm: str
    case: str
    micros: float  # per token, median over repeats
    ratio: float  # over jwt.decode, median of the per-repeat ratios


def _elapsed(verify: Callable[[str], Any], tokens: Sequence[str]) -> float:
    start = time.perf_counter()
    for token in tokens:
        verify(token)
    return time.perf_counter() - start


def _one_repeat(
    decode: Callable[[str], Any],
    settings: dict[str, Any],
    tokens: Sequence[str],
    hits: int,
) -> dict[str, float]:
    """Seconds per token for each case, the cases interleaved by chunk."""
    fresh = Guard(settings).verifier
    uncached = Guard({**settings, "verified_cache_size": 0}).verifier
    totals = dict.fromkeys((DECODE, FIRST_SEEN, CACHE_OFF), 0.0)
    for start in range(0, len(tokens), CHUNK):
        chunk = tokens[start : start + CHUNK]
        totals[DECODE] += _elapsed(decode, chunk)
        totals[FIRST_SEEN] += _elapsed(fresh.verify_now, chunk)
        totals[CACHE_OFF] += _elapsed(uncached.verify_now, chunk)
    per_token = {case: total / len(tokens) for case, total in totals.items()}

    # The last token is certainly still cached by ``fresh``.
    per_token[REPEATED] = _elapsed(fresh.verify_now, [tokens[-1]] * hits) / hits

    return per_token


def measure(
    key: SigningKey, tokens: Sequence[str], repeats: int, hits: int
) -> list[VerifierRow]:
    """Each case's median cost per token, and its median ratio to decode."""
    public_key = key.private_key.public_key()
    settings = zt_settings(key)

    def decode(token: str) -> Any:
        return jwt.decode(
            token,
            public_key,
            algorithms=[key.algorithm],
            audience=AUDIENCE,
            issuer=ISSUER,
        )

    # Warm both paths (imports, caches) with verifiers that are then dropped.
    _one_repeat(decode, settings, tokens[:CHUNK], CHUNK)
    runs = [_one_repeat(decode, settings, tokens, hits) for _ in range(repeats)]

    return [
        VerifierRow(
            key.algorithm,
            case,
            statistics.median(run[case] for run in runs) * 1e6,
            statistics.median(run[case] / run[DECODE] for run in runs),
        )
        for case in (DECODE, FIRST_SEEN, REPEATED, CACHE_OFF)
    ]
