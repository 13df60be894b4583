"""Build a store from the ``store`` setting's URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Store
from .memory import MemoryStore

__all__ = ["store_from_url"]


def store_from_url(url: str) -> Store:
    """``memory://``, ``sqlite:///path`` or ``redis://host:port/db``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryStore()

    raise ConfigurationError(f"store: no store for {scheme!r} URLs in this version")
