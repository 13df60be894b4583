"""The one interface behind which shared state lives.

A request needs two round trips at most: :meth:`Store.read` fetches, in one
go, everything the decision depends on (revocations of the token, its
session and its subject; the session's and the subject's history), and
:meth:`Store.write` records what this request changed and claims one-time
tokens atomically. Async twins (``aread``, ``awrite``) never block the event
loop. A store that cannot answer raises :class:`StoreUnavailable`; the guard
turns that into a 503, never an allow.

Every entry expires when what it protects would: a revoked token's entry
lives until the token's ``exp``, a subject revocation until every token
issued before it has expired, history for ``history_ttl``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = [
    "REVOCATION_KINDS",
    "Revocation",
    "SessionRecord",
    "StateKeys",
    "StateRead",
    "StateWrite",
    "Store",
]

# jti: one token; sid: a session; sub: tokens of a subject issued before a
# time; svc: every token of a service identity.
REVOCATION_KINDS = ("jti", "sid", "sub", "svc")


@dataclass(frozen=True, slots=True)
class Revocation:
    kind: str
    value: str
    revoked_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What the last request of a session looked like."""

    device: str | None
    network: str | None
    seen_at: float
    # Where the request came from, when a locator could tell.
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True, slots=True)
class StateKeys:
    """What one request's decision needs to read."""

    subject: str
    session_id: str | None = None
    token_id: str | None = None
    # A second token whose revocation also refuses the request: the session
    # token a step-up token was minted from, or rides beside.
    parent_token_id: str | None = None


@dataclass(frozen=True, slots=True)
class StateRead:
    # The token, or its parent, is revoked.
    token_revoked: bool = False
    session_revoked: bool = False
    # Tokens of the subject issued before this time are revoked.
    subject_revoked_before: float | None = None
    service_revoked: bool = False
    session: SessionRecord | None = None
    # The subject's last request in any session (for impossible travel).
    subject_last: SessionRecord | None = None
    subject_devices: frozenset[str] = frozenset()
    subject_networks: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class StateWrite:
    """What one allowed request records, in one round trip."""

    subject: str
    session_id: str | None
    device: str | None
    network: str | None
    seen_at: float
    history_ttl: int
    # A one-time token's jti, claimed atomically; None claims nothing.
    once_key: str | None = None
    once_ttl: int = 0
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None

    def record(self) -> SessionRecord:
        return SessionRecord(
            self.device,
            self.network,
            self.seen_at,
            self.country,
            self.latitude,
            self.longitude,
        )


class Store(ABC):
    """Revocation, replay and history, shared by workers and hosts."""

    @abstractmethod
    def read(self, keys: StateKeys) -> StateRead: ...

    @abstractmethod
    def write(self, update: StateWrite) -> bool:
        """Record ``update``; False when its ``once_key`` was already used."""

    async def aread(self, keys: StateKeys) -> StateRead:
        # A store that does I/O and has no async client of its own must not
        # block the event loop: by default the sync call runs in a thread.
        return await asyncio.to_thread(self.read, keys)

    async def awrite(self, update: StateWrite) -> bool:
        return await asyncio.to_thread(self.write, update)

    @abstractmethod
    def revoke(self, kind: str, value: str, *, now: float, ttl: int) -> Revocation:
        """Revoke a ``jti``, ``sid``, ``sub`` (issued before ``now``) or ``svc``."""

    @abstractmethod
    def revocations(self, *, now: float) -> list[Revocation]:
        """Revocations still in force."""

    # -- small primitives for the step-up flow -------------------------------
    # Keys are opaque strings chosen by the caller ("totp:used:<sub>:<n>");
    # each call is one round trip and expires with ``ttl`` seconds.

    @abstractmethod
    def claim(self, key: str, ttl: int) -> bool:
        """Set ``key`` if it is absent or expired: True for the first caller."""

    @abstractmethod
    def count(self, key: str, ttl: int) -> int:
        """Add one to a counter (its ``ttl`` starts at the first) and return it."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """A value put earlier and not yet expired, else None."""

    @abstractmethod
    def put(self, key: str, value: bytes, ttl: int | None = None) -> None:
        """Store ``value``; None keeps it until deleted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Forget a value or a counter (or a claim)."""

    async def aclaim(self, key: str, ttl: int) -> bool:
        return await asyncio.to_thread(self.claim, key, ttl)

    async def acount(self, key: str, ttl: int) -> int:
        return await asyncio.to_thread(self.count, key, ttl)

    async def aget(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self.get, key)

    async def aput(self, key: str, value: bytes, ttl: int | None = None) -> None:
        await asyncio.to_thread(self.put, key, value, ttl)

    async def adelete(self, key: str) -> None:
        await asyncio.to_thread(self.delete, key)

    def close(self) -> None:
        return None


def check_kind(kind: str) -> None:
    if kind not in REVOCATION_KINDS:
        raise ValueError(
            f"revocation kind: expected one of {REVOCATION_KINDS}, got {kind!r}"
        )
