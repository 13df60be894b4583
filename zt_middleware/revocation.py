"""How long a revocation is kept: until what it protects would have expired.

Shared by :meth:`Guard.revoke` and ``zt revoke``, so that a revocation made
from the command line lives exactly as long as one made by the library.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone
from typing import Any

from .settings import Settings
from .stores.base import Revocation, check_kind

__all__ = ["describe", "revocation_ttl"]


def revocation_ttl(
    kind: str,
    settings: Settings | None,
    *,
    now: float,
    expires_at: float | None = None,
) -> int:
    """Seconds to keep a ``kind`` revocation; ``settings`` None means defaults.

    A token's entry lives until its ``exp`` when given, else for the
    lifetime cap; a subject's until every token issued before ``now`` has
    expired (the cap again); a session's and a service's for
    ``revocation_ttl``. The leeway is added wherever a token's ``exp`` is
    what the entry waits for, because the verifier accepts that much past it.
    """
    check_kind(kind)
    leeway = _setting(settings, "leeway")
    kept = _setting(settings, "revocation_ttl")
    # With the cap off a subject revocation cannot know the longest token
    # issued before it; it holds for revocation_ttl.
    cap = (_setting(settings, "max_token_lifetime") or kept) + leeway

    if kind == "jti":
        ttl = int(expires_at - now) + leeway if expires_at is not None else cap
    elif kind == "sub":
        ttl = cap
    else:
        ttl = kept

    return max(int(ttl), 1)


def _setting(settings: Settings | None, name: str) -> Any:
    if settings is not None:
        return getattr(settings, name)
    return next(f.default for f in fields(Settings) if f.name == name)


def describe(revocation: Revocation) -> str:
    """``kind, value, revoked at, expires at``: tab-separated, times in UTC."""
    # The value came from an operator or a token: no control characters.
    value = "".join(
        ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in revocation.value
    )
    return "\t".join(
        (
            revocation.kind,
            value,
            _utc(revocation.revoked_at),
            _utc(revocation.expires_at),
        )
    )


def _utc(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
