"""A bounded dict for verified credentials, shared by tokens and posture."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def put_bounded(cache: dict[K, V], size: int, key: K, value: V) -> None:
    """Store ``value`` unless ``size`` is 0, evicting the oldest entry first.

    Dicts keep insertion order; another thread may evict at the same time,
    in which case the cache is simply emptied.
    """
    if not size:
        return
    if len(cache) >= size:
        try:
            del cache[next(iter(cache))]
        except (StopIteration, KeyError, RuntimeError):
            cache.clear()
    cache[key] = value
