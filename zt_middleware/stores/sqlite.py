"""The SQLite store: several worker processes on one host share one file.

The file is in WAL mode, so readers never wait for the writer, and every
write transaction starts with ``BEGIN IMMEDIATE``, so two writers queue on
the lock (SQLite's busy timeout, ``timeout`` seconds) instead of failing
half-way, as a deferred transaction upgraded to a writer can. A read
is one ``SELECT``; a write is one short transaction, whose one-time claim is
an upsert that only takes an expired row: whichever process commits first
wins, the others see no row changed. The step-up primitives work on the
``zt_values`` table: ``get`` is one ``SELECT``, ``claim``, ``count``, ``put``
and ``delete`` one short ``BEGIN IMMEDIATE`` transaction each.

Each thread opens its own connection (sqlite3 connections must not cross
threads, nor a ``fork``); the async twins run in a worker thread.
Keep the file on a local disk: WAL needs shared memory between the
processes, which network file systems do not give.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StoreUnavailable
from .base import (
    Revocation,
    SessionRecord,
    StateKeys,
    StateRead,
    StateWrite,
    Store,
    check_kind,
)

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS zt_revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL,
    revoked_at REAL NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zt_once (
    key TEXT PRIMARY KEY, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zt_sessions (
    sid TEXT PRIMARY KEY, device TEXT, network TEXT,
    seen_at REAL NOT NULL, expires_at REAL NOT NULL,
    country TEXT, latitude REAL, longitude REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zt_history (
    subject TEXT NOT NULL, kind TEXT NOT NULL, item TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (subject, kind, item)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zt_last (
    subject TEXT PRIMARY KEY, device TEXT, network TEXT,
    seen_at REAL NOT NULL, expires_at REAL NOT NULL,
    country TEXT, latitude REAL, longitude REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zt_values (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL
) WITHOUT ROWID;
"""

# A version 1 file gains the place of each request and the new tables; the
# rows it holds keep their meaning.
_UPGRADE_FROM_1 = (
    """
ALTER TABLE zt_sessions ADD COLUMN country TEXT;
ALTER TABLE zt_sessions ADD COLUMN latitude REAL;
ALTER TABLE zt_sessions ADD COLUMN longitude REAL;
"""
    + _SCHEMA
)

_UPGRADES = {0: _SCHEMA, 1: _UPGRADE_FROM_1}

# Everything one decision needs, in one statement: each branch is a
# primary-key lookup, tagged so the rows can be told apart. The columns: a
# tag, a time, two texts, and a place (country, latitude, longitude).
_READ = """
SELECT 'jti', revoked_at, NULL, NULL, NULL, NULL, NULL FROM zt_revocations
    WHERE kind = 'jti' AND value IN (:jti, :parent) AND expires_at > :now
UNION ALL SELECT 'sid', revoked_at, NULL, NULL, NULL, NULL, NULL FROM zt_revocations
    WHERE kind = 'sid' AND value = :sid AND expires_at > :now
UNION ALL SELECT 'sub', revoked_at, NULL, NULL, NULL, NULL, NULL FROM zt_revocations
    WHERE kind = 'sub' AND value = :sub AND expires_at > :now
UNION ALL SELECT 'svc', revoked_at, NULL, NULL, NULL, NULL, NULL FROM zt_revocations
    WHERE kind = 'svc' AND value = :sub AND expires_at > :now
UNION ALL SELECT 'session', seen_at, device, network, country, latitude, longitude
    FROM zt_sessions WHERE sid = :sid AND expires_at > :now
UNION ALL SELECT 'last', seen_at, device, network, country, latitude, longitude
    FROM zt_last WHERE subject = :sub AND expires_at > :now
UNION ALL SELECT kind, NULL, item, NULL, NULL, NULL, NULL FROM zt_history
    WHERE subject = :sub AND expires_at > :now
"""

# Takes the key when it is new or its claim has expired; rowcount says.
_CLAIM = """
INSERT INTO zt_once (key, expires_at) VALUES (?, ?)
ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at
WHERE zt_once.expires_at <= ?
"""

# The last request of a session, and of the subject in any session: the
# same record under two keys.
_RECORD = """
INSERT INTO {table} ({key}, device, network, seen_at, country, latitude,
    longitude, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT ({key}) DO UPDATE SET device = excluded.device,
    network = excluded.network, seen_at = excluded.seen_at,
    country = excluded.country, latitude = excluded.latitude,
    longitude = excluded.longitude, expires_at = excluded.expires_at
"""
_SESSION = _RECORD.format(table="zt_sessions", key="sid")
_LAST = _RECORD.format(table="zt_last", key="subject")

_HISTORY = """
INSERT INTO zt_history (subject, kind, item, expires_at) VALUES {rows}
ON CONFLICT (subject, kind, item) DO UPDATE SET expires_at = excluded.expires_at
"""

_REVOKE = """
INSERT INTO zt_revocations (kind, value, revoked_at, expires_at)
VALUES (?, ?, ?, ?)
ON CONFLICT (kind, value) DO UPDATE SET revoked_at = excluded.revoked_at,
    expires_at = excluded.expires_at
"""

# The step-up primitives. An expired row counts as absent, so a claim or a
# first count takes it over; a NULL expires_at is kept until deleted.
_VALUE_GET = """
SELECT value FROM zt_values
WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)
"""

_VALUE_CLAIM = """
INSERT INTO zt_values (key, value, expires_at) VALUES (?, X'31', ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value,
    expires_at = excluded.expires_at
WHERE zt_values.expires_at <= ?
"""

# A live counter gains one and keeps its expiry; an expired one starts again
# at one, with a new expiry.
_VALUE_COUNT = """
INSERT INTO zt_values (key, value, expires_at) VALUES (:key, 1, :expires)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN zt_values.expires_at <= :now THEN 1
        ELSE zt_values.value + 1 END,
    expires_at = CASE WHEN zt_values.expires_at <= :now THEN excluded.expires_at
        ELSE zt_values.expires_at END
"""

_VALUE_PUT = """
INSERT INTO zt_values (key, value, expires_at) VALUES (?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value,
    expires_at = excluded.expires_at
"""

# Bounded purge: at most _PURGE_BATCH expired rows per table at a time.
_PURGE = (
    "DELETE FROM zt_once WHERE key IN "
    "(SELECT key FROM zt_once WHERE expires_at <= ?1 LIMIT ?2)",
    "DELETE FROM zt_sessions WHERE sid IN "
    "(SELECT sid FROM zt_sessions WHERE expires_at <= ?1 LIMIT ?2)",
    "DELETE FROM zt_last WHERE subject IN "
    "(SELECT subject FROM zt_last WHERE expires_at <= ?1 LIMIT ?2)",
    "DELETE FROM zt_values WHERE key IN "
    "(SELECT key FROM zt_values WHERE expires_at <= ?1 LIMIT ?2)",
    "DELETE FROM zt_history WHERE (subject, kind, item) IN "
    "(SELECT subject, kind, item FROM zt_history WHERE expires_at <= ?1 LIMIT ?2)",
    "DELETE FROM zt_revocations WHERE (kind, value) IN "
    "(SELECT kind, value FROM zt_revocations WHERE expires_at <= ?1 LIMIT ?2)",
)
_PURGE_BATCH = 500

_DEVICE, _NETWORK = "d", "n"


class SQLiteStore(Store):
    """Shared state in one SQLite file, for the workers of one host.

    ``timeout`` is how long a writer waits for the lock before the request
    fails with a 503. Expired rows are ignored by every read and deleted
    every ``purge_every`` writes, a bounded batch at a time.
    """

    def __init__(
        self,
        path: str,
        *,
        timeout: float = 5.0,
        purge_every: int = 1000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._timeout = timeout
        self._purge_every = purge_every
        self._clock = clock
        self._local = threading.local()
        self._writes = itertools.count(1)
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

        # Open now, so that a wrong path fails at start-up, not per request.
        try:
            with self._errors("open"):
                _create_private(path)
                self._create_schema(self.connection())
        except StoreUnavailable:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- the request path --------------------------------------------------------

    def read(self, keys: StateKeys) -> StateRead:
        params = {
            "jti": keys.token_id,
            "parent": keys.parent_token_id,
            "sid": keys.session_id,
            "sub": keys.subject,
            "now": self._clock(),
        }
        with self._errors("read"):
            rows = self.connection().execute(_READ, params).fetchall()

        return _state(rows)

    def write(self, update: StateWrite) -> bool:
        now = self._clock()
        expires = now + update.history_ttl
        record = (
            update.device,
            update.network,
            update.seen_at,
            update.country,
            update.latitude,
            update.longitude,
            expires,
        )
        history = [
            (update.subject, kind, item, expires)
            for kind, item in ((_DEVICE, update.device), (_NETWORK, update.network))
            if item is not None
        ]

        with self._errors("write"), self._transaction() as db:
            if update.once_key is not None:
                claim = (update.once_key, now + update.once_ttl, now)
                if db.execute(_CLAIM, claim).rowcount == 0:
                    db.execute("ROLLBACK")
                    return False

            db.execute(_LAST, (update.subject, *record))
            if update.session_id is not None:
                db.execute(_SESSION, (update.session_id, *record))
            if history:
                rows = ", ".join(["(?, ?, ?, ?)"] * len(history))
                values = [value for row in history for value in row]
                db.execute(_HISTORY.format(rows=rows), values)
            self._purge(db, now)

        return True

    async def aread(self, keys: StateKeys) -> StateRead:
        return await asyncio.to_thread(self.read, keys)

    async def awrite(self, update: StateWrite) -> bool:
        return await asyncio.to_thread(self.write, update)

    # -- step-up primitives ------------------------------------------------------
    # Each write is its own BEGIN IMMEDIATE transaction: two processes queue
    # on the lock, and the second sees the first's row. The async twins are
    # the base class's, in a worker thread.

    def claim(self, key: str, ttl: int) -> bool:
        now = self._clock()
        with self._errors("claim"), self._transaction() as db:
            claimed = db.execute(_VALUE_CLAIM, (key, now + ttl, now)).rowcount == 1
            self._purge(db, now)

        return claimed

    def count(self, key: str, ttl: int) -> int:
        # Upsert, then read back under the same lock: RETURNING would need
        # SQLite 3.35, which older distributions' Pythons do not have.
        now = self._clock()
        with self._errors("count"), self._transaction() as db:
            db.execute(_VALUE_COUNT, {"key": key, "expires": now + ttl, "now": now})
            (value,) = db.execute(
                "SELECT value FROM zt_values WHERE key = ?", (key,)
            ).fetchone()
            self._purge(db, now)

        return int(value)

    def get(self, key: str) -> bytes | None:
        with self._errors("get"):
            row = self.connection().execute(_VALUE_GET, (key, self._clock())).fetchone()

        if row is None:
            return None
        # A counter is an integer: it reads as its decimal digits.
        return row[0] if isinstance(row[0], bytes) else str(row[0]).encode()

    def put(self, key: str, value: bytes, ttl: int | None = None) -> None:
        now = self._clock()
        expires = None if ttl is None else now + ttl
        with self._errors("put"), self._transaction() as db:
            db.execute(_VALUE_PUT, (key, bytes(value), expires))
            self._purge(db, now)

    def delete(self, key: str) -> None:
        with self._errors("delete"), self._transaction() as db:
            db.execute("DELETE FROM zt_values WHERE key = ?", (key,))

    # -- revocations -------------------------------------------------------------

    def revoke(self, kind: str, value: str, *, now: float, ttl: int) -> Revocation:
        check_kind(kind)
        revocation = Revocation(kind, value, revoked_at=now, expires_at=now + ttl)

        # A revocation must survive a power cut, not only a crash: this one
        # commit is synced in full.
        with self._errors("revoke"):
            db = self.connection()
            db.execute("PRAGMA synchronous = FULL")
            try:
                with self._transaction() as db:
                    db.execute(_REVOKE, (kind, value, now, now + ttl))
            finally:
                db.execute("PRAGMA synchronous = NORMAL")

        return revocation

    def revocations(self, *, now: float) -> list[Revocation]:
        with self._errors("list revocations"):
            rows = (
                self.connection()
                .execute(
                    "SELECT kind, value, revoked_at, expires_at FROM zt_revocations "
                    "WHERE expires_at > ? ORDER BY revoked_at, kind, value",
                    (now,),
                )
                .fetchall()
            )

        return [Revocation(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    # -- connections -------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and after a fork)."""
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None and self._local.pid == os.getpid():
            return connection

        # isolation_level=None: no implicit transactions; write() says
        # BEGIN IMMEDIATE itself. check_same_thread is off only so that
        # close() may close every thread's connection.
        connection = sqlite3.connect(
            self.path,
            timeout=self._timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        connection.execute("PRAGMA synchronous = NORMAL")
        self._local.connection = connection
        self._local.pid = os.getpid()
        with self._lock:
            self._connections.append(connection)

        return connection

    def _purge(self, db: sqlite3.Connection, now: float) -> None:
        """Every ``purge_every`` writes, delete a bounded batch of expired rows."""
        if next(self._writes) % self._purge_every == 0:
            for statement in _PURGE:
                db.execute(statement, (now, _PURGE_BATCH))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        if db.in_transaction:
            db.execute("COMMIT")

    def _create_schema(self, db: sqlite3.Connection) -> None:
        # journal_mode is a property of the file: set once, kept by all.
        if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
            raise sqlite3.OperationalError("cannot switch the file to WAL mode")
        if db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return

        # Another process may be creating or upgrading the file at the same
        # time: look again under the write lock.
        with self._transaction():
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if version not in _UPGRADES:
                raise sqlite3.DatabaseError(
                    f"schema version {version}, expected {SCHEMA_VERSION} or older"
                )
            for statement in _UPGRADES[version].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            # SQLite's messages ("database is locked", "unable to open
            # database file") carry no secret; the path helps the operator.
            raise StoreUnavailable(
                f"SQLite store {self.path!r}: {action} failed "
                f"({type(exc).__name__}: {exc})"
            ) from exc


def _state(rows: list[tuple[Any, ...]]) -> StateRead:
    found: dict[str, Any] = {}
    records: dict[str, SessionRecord] = {}
    devices: set[str] = set()
    networks: set[str] = set()
    for tag, when, first, second, *place in rows:
        if tag in ("session", "last"):
            records[tag] = SessionRecord(first, second, when, *place)
        elif tag == _DEVICE:
            devices.add(first)
        elif tag == _NETWORK:
            networks.add(first)
        else:
            found[tag] = when

    return StateRead(
        token_revoked="jti" in found,
        session_revoked="sid" in found,
        subject_revoked_before=found.get("sub"),
        service_revoked="svc" in found,
        session=records.get("session"),
        subject_last=records.get("last"),
        subject_devices=frozenset(devices),
        subject_networks=frozenset(networks),
    )


def _create_private(path: str) -> None:
    """Create the database file readable by its owner only (0600).

    It holds revocations and, without an encryption key, TOTP secrets.
    SQLite gives its -wal and -shm files the database file's permissions.
    """
    if path == ":memory:" or os.path.exists(path):
        return
    # Exists already, or cannot be made: sqlite3 says why when it opens it.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
