"""Effects: the I/O a decision needs, run by whoever drives it.

The guard's checks are generators that yield these objects and receive their
results. A sync driver calls ``run()``; an async driver awaits ``arun()``,
which never blocks the event loop. Any store failure becomes
:class:`StoreUnavailable`, so the guard answers 503, never an allow.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from .errors import StoreUnavailable
from .stores.base import StateKeys, StateRead, StateWrite, Store

__all__ = ["ReadState", "StoreCall", "WriteState", "adrive", "drive", "store_errors"]


class ReadState:
    """An effect: read what the decision needs, in one round trip."""

    __slots__ = ("keys", "store")

    def __init__(self, store: Store, keys: StateKeys) -> None:
        self.store = store
        self.keys = keys

    def run(self) -> StateRead:
        with store_errors():
            return self.store.read(self.keys)

    async def arun(self) -> StateRead:
        with store_errors():
            return await self.store.aread(self.keys)


class WriteState:
    """An effect: record the request and claim a one-time token."""

    __slots__ = ("store", "update")

    def __init__(self, store: Store, update: StateWrite) -> None:
        self.store = store
        self.update = update

    def run(self) -> bool:
        with store_errors():
            return self.store.write(self.update)

    async def arun(self) -> bool:
        with store_errors():
            return await self.store.awrite(self.update)


class store_errors:
    """Any store failure is a StoreUnavailable: 503, never an allow."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is not None and not isinstance(exc, StoreUnavailable):
            raise StoreUnavailable(f"the store failed ({type(exc).__name__})") from exc


class StoreCall:
    """An effect: one of the store's small primitives (claim, count, get...)."""

    __slots__ = ("args", "name", "store")

    def __init__(self, store: Store, name: str, *args: Any) -> None:
        self.store = store
        self.name = name
        self.args = args

    def run(self) -> Any:
        with store_errors():
            return getattr(self.store, self.name)(*self.args)

    async def arun(self) -> Any:
        with store_errors():
            return await getattr(self.store, "a" + self.name)(*self.args)


T = TypeVar("T")


def drive(steps: Generator[Any, Any, T]) -> T:
    """Run a flow to its end, each effect inline (sync stacks)."""
    try:
        effect = next(steps)
        while True:
            effect = steps.send(effect.run())
    except StopIteration as done:
        result: T = done.value
        return result


async def adrive(steps: Generator[Any, Any, T]) -> T:
    """Run a flow to its end from an event loop, awaiting each effect."""
    try:
        effect = next(steps)
        while True:
            effect = steps.send(await effect.arun())
    except StopIteration as done:
        result: T = done.value
        return result
