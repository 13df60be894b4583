"""The in-process store: the default, for one process, no I/O at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .base import (
    Revocation,
    SessionRecord,
    StateKeys,
    StateRead,
    StateWrite,
    Store,
    check_kind,
)

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Dicts under one lock; expired entries are dropped as they are met.

    Only the process that holds it sees it: with several workers, use the
    SQLite or Redis store so that a revocation holds in all of them.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, max_entries: int = 100_000
    ) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._revoked: dict[tuple[str, str], Revocation] = {}
        self._once: dict[str, float] = {}
        self._sessions: dict[str, tuple[SessionRecord, float]] = {}
        self._last: dict[str, tuple[SessionRecord, float]] = {}
        self._values: dict[str, tuple[bytes | int, float]] = {}
        self._devices: dict[str, dict[str, float]] = {}
        self._networks: dict[str, dict[str, float]] = {}

    def __repr__(self) -> str:
        return (
            f"MemoryStore(revocations={len(self._revoked)}, "
            f"sessions={len(self._sessions)})"
        )

    def read(self, keys: StateKeys) -> StateRead:
        now = self._clock()
        with self._lock:
            subject = self._live(("sub", keys.subject), now)
            session = self._sessions.get(keys.session_id or "")
            last = self._last.get(keys.subject)
            return StateRead(
                token_revoked=any(
                    jti is not None and self._live(("jti", jti), now) is not None
                    for jti in (keys.token_id, keys.parent_token_id)
                ),
                session_revoked=keys.session_id is not None
                and self._live(("sid", keys.session_id), now) is not None,
                subject_revoked_before=subject.revoked_at if subject else None,
                service_revoked=self._live(("svc", keys.subject), now) is not None,
                session=session[0] if session and session[1] > now else None,
                subject_last=last[0] if last and last[1] > now else None,
                subject_devices=_alive(self._devices.get(keys.subject), now),
                subject_networks=_alive(self._networks.get(keys.subject), now),
            )

    async def aread(self, keys: StateKeys) -> StateRead:
        return self.read(keys)  # no I/O: nothing to wait for

    async def awrite(self, update: StateWrite) -> bool:
        return self.write(update)

    def write(self, update: StateWrite) -> bool:
        now = self._clock()
        with self._lock:
            if update.once_key is not None:
                used_until = self._once.get(update.once_key)
                if used_until is not None and used_until > now:
                    return False
                self._once[update.once_key] = now + update.once_ttl

            expires = now + update.history_ttl
            record = update.record()
            self._last[update.subject] = (record, expires)
            if update.session_id is not None:
                self._sessions[update.session_id] = (record, expires)
            if update.device is not None:
                self._devices.setdefault(update.subject, {})[update.device] = expires
            if update.network is not None:
                self._networks.setdefault(update.subject, {})[update.network] = expires
            self._trim(now)

        return True

    def revoke(self, kind: str, value: str, *, now: float, ttl: int) -> Revocation:
        check_kind(kind)
        revocation = Revocation(kind, value, revoked_at=now, expires_at=now + ttl)
        with self._lock:
            self._revoked[(kind, value)] = revocation
        return revocation

    def revocations(self, *, now: float) -> list[Revocation]:
        with self._lock:
            return sorted(
                (r for r in self._revoked.values() if r.expires_at > now),
                key=lambda r: (r.revoked_at, r.kind, r.value),
            )

    def claim(self, key: str, ttl: int) -> bool:
        now = self._clock()
        with self._lock:
            if self._value(key, now) is not None:
                return False
            self._values[key] = (b"1", now + ttl)
            return True

    def count(self, key: str, ttl: int) -> int:
        now = self._clock()
        with self._lock:
            current = self._value(key, now)
            expires = self._values[key][1] if current is not None else now + ttl
            value = (current if isinstance(current, int) else 0) + 1
            self._values[key] = (value, expires)
            return value

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._value(key, self._clock())
        if isinstance(value, int):
            return str(value).encode()
        return value

    def put(self, key: str, value: bytes, ttl: int | None = None) -> None:
        expires = float("inf") if ttl is None else self._clock() + ttl
        with self._lock:
            self._values[key] = (bytes(value), expires)

    def delete(self, key: str) -> None:
        with self._lock:
            self._values.pop(key, None)

    async def aclaim(self, key: str, ttl: int) -> bool:
        return self.claim(key, ttl)

    async def acount(self, key: str, ttl: int) -> int:
        return self.count(key, ttl)

    async def aget(self, key: str) -> bytes | None:
        return self.get(key)

    async def aput(self, key: str, value: bytes, ttl: int | None = None) -> None:
        self.put(key, value, ttl)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    def _value(self, key: str, now: float) -> bytes | int | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._values[key]
            return None
        return entry[0]

    def _live(self, key: tuple[str, str], now: float) -> Revocation | None:
        revocation = self._revoked.get(key)
        if revocation is not None and revocation.expires_at <= now:
            del self._revoked[key]
            return None
        return revocation

    def _trim(self, now: float) -> None:
        # Bounded memory: past the limit, drop what has expired, then the
        # oldest histories. Revocations are never dropped early.
        tables = (
            self._once,
            self._sessions,
            self._last,
            self._devices,
            self._networks,
            self._values,
        )
        for table in tables:
            if len(table) <= self._max_entries:
                continue
            for key in [k for k, v in table.items() if _expiry(v) <= now]:
                del table[key]
            while len(table) > self._max_entries:
                del table[next(iter(table))]


def _expiry(value: object) -> float:
    if isinstance(value, tuple):
        return float(value[1])
    if isinstance(value, dict):
        return max(value.values(), default=0.0)
    return float(value)  # type: ignore[arg-type]


def _alive(seen: dict[str, float] | None, now: float) -> frozenset[str]:
    if not seen:
        return frozenset()
    return frozenset(item for item, expires in seen.items() if expires > now)
