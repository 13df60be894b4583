"""Stores for shared state: memory (default), SQLite (one host), Redis (many)."""

from __future__ import annotations

from .base import Revocation, SessionRecord, StateKeys, StateRead, StateWrite, Store
from .memory import MemoryStore

__all__ = [
    "MemoryStore",
    "Revocation",
    "SessionRecord",
    "StateKeys",
    "StateRead",
    "StateWrite",
    "Store",
]
