"""Stores for shared state: memory (default), SQLite (one host), Redis (many).

``SQLiteStore`` and ``RedisStore`` live in their own modules
(``zt_middleware.stores.sqlite``, ``zt_middleware.stores.redis``) so that
importing the package never imports redis-py; ``store_from_url`` builds any
of them from the ``store`` setting.
"""

from __future__ import annotations

from .base import Revocation, SessionRecord, StateKeys, StateRead, StateWrite, Store
from .memory import MemoryStore
from .urls import store_from_url

__all__ = [
    "MemoryStore",
    "Revocation",
    "SessionRecord",
    "StateKeys",
    "StateRead",
    "StateWrite",
    "Store",
    "store_from_url",
]
