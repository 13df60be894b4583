"""The store contract, run against memory, SQLite and a real redis-server.

Every test taking ``backend`` runs three times. Memory and SQLite read a
clock the test moves; Redis expires keys on its own clock, so for it the
test sleeps instead (TTLs of one second keep that short).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.cluster
import redis.connection
from redis.crc import key_slot
from redis_server import (
    RedisServer,
    free_port,
    running_cluster,
    running_redis,
    running_sentinel,
)

from zt_middleware.errors import ConfigurationError, StoreUnavailable
from zt_middleware.stores import (
    MemoryStore,
    SessionRecord,
    StateKeys,
    StateRead,
    StateWrite,
    Store,
)
from zt_middleware.stores.redis import RedisStore
from zt_middleware.stores.sqlite import SQLiteStore
from zt_middleware.stores.urls import store_from_url

DAY = 24 * 3600


class ManualClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    name: str
    store: Store
    clock: Callable[[], float]
    wait: Callable[[float], None]
    url: str | None = None

    def update(self, subject: str = "alice", **fields: Any) -> StateWrite:
        values: dict[str, Any] = {
            "subject": subject,
            "session_id": "s1",
            "device": "dev-a",
            "network": "10.0.0.0/24",
            "seen_at": self.clock(),
            "history_ttl": DAY,
        }
        values.update(fields)
        return StateWrite(**values)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def make_backend(name: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    if name == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        return Backend(
            name, store_from_url(server.url), time.time, time.sleep, server.url
        )

    clock = ManualClock()

    def advance(seconds: float) -> None:
        clock.now += seconds

    if name == "sqlite":
        path = tmp_path / "zt.db"
        return Backend(
            name,
            SQLiteStore(str(path), clock=clock),
            clock,
            advance,
            f"sqlite://{path}",
        )
    return Backend(name, MemoryStore(clock=clock), clock, advance)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = make_backend(request.param, tmp_path, request)
    yield made
    made.store.close()


@pytest.fixture(params=["sqlite", "redis"])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The stores that several processes can share."""
    made = make_backend(request.param, tmp_path, request)
    yield made
    made.store.close()


# -- the contract, on every store -----------------------------------------------


def test_nothing_written_reads_as_nothing_known(backend: Backend) -> None:
    state = backend.store.read(StateKeys("alice", "s1", "t1"))

    assert state == StateRead()


def test_a_write_is_read_back_as_session_and_subject_history(backend: Backend) -> None:
    store = backend.store
    assert store.write(backend.update(seen_at=1234.5)) is True

    state = store.read(StateKeys("alice", "s1", "t1"))

    assert state.session is not None
    assert (state.session.device, state.session.network) == ("dev-a", "10.0.0.0/24")
    assert state.session.seen_at == 1234.5
    assert state.subject_devices == {"dev-a"}
    assert state.subject_networks == {"10.0.0.0/24"}
    assert not (state.token_revoked or state.session_revoked or state.service_revoked)


def test_session_keeps_its_last_request_and_subject_keeps_every_device(
    backend: Backend,
) -> None:
    store = backend.store
    store.write(backend.update(session_id="s1", device="dev-a", network="10.0.0.0/24"))
    store.write(backend.update(session_id="s2", device="dev-b", network="10.0.1.0/24"))
    store.write(backend.update(session_id="s1", device="dev-c", network=None))
    store.write(backend.update("bob", session_id="s9", device="dev-z"))

    state = store.read(StateKeys("alice", "s1"))

    assert state.session is not None
    assert (state.session.device, state.session.network) == ("dev-c", None)
    assert state.subject_devices == {"dev-a", "dev-b", "dev-c"}
    assert state.subject_networks == {"10.0.0.0/24", "10.0.1.0/24"}
    assert store.read(StateKeys("bob", "s9")).subject_devices == {"dev-z"}


def test_a_request_without_session_or_context_records_only_the_subjects_last(
    backend: Backend,
) -> None:
    update = backend.update(session_id=None, device=None, network=None)

    assert backend.store.write(update) is True
    assert backend.store.read(StateKeys("alice")) == StateRead(
        subject_last=update.record()
    )


def test_one_time_key_is_claimed_once(backend: Backend) -> None:
    store = backend.store

    first = store.write(backend.update(once_key="t1", once_ttl=60))
    second = store.write(backend.update(once_key="t1", once_ttl=60))
    other = store.write(backend.update(once_key="t2", once_ttl=60))

    assert (first, second, other) == (True, False, True)


def test_ordinary_writes_claim_nothing_and_never_refuse(backend: Backend) -> None:
    # Regression: a jti check applied to ordinary tokens refused their
    # second request as a replay.
    results = {backend.store.write(backend.update()) for _ in range(20)}

    assert results == {True}


def test_each_revocation_kind_is_read_and_listed(backend: Backend) -> None:
    store = backend.store
    now = backend.clock()
    store.revoke("jti", "t1", now=now, ttl=60)
    store.revoke("sid", "s1", now=now + 1, ttl=60)
    store.revoke("sub", "alice", now=now + 2, ttl=60)
    store.revoke("svc", "svc:orders", now=now + 3, ttl=60)

    alice = store.read(StateKeys("alice", "s1", "t1"))
    service = store.read(StateKeys("svc:orders"))
    listed = store.revocations(now=now)

    assert alice.token_revoked and alice.session_revoked
    assert alice.subject_revoked_before == pytest.approx(now + 2)
    assert not alice.service_revoked
    assert service.service_revoked and service.subject_revoked_before is None
    assert [(r.kind, r.value) for r in listed] == [
        ("jti", "t1"),
        ("sid", "s1"),
        ("sub", "alice"),
        ("svc", "svc:orders"),
    ]
    assert listed[2].revoked_at == pytest.approx(now + 2)
    assert listed[2].expires_at == pytest.approx(now + 62)


def test_revocations_of_other_tokens_sessions_and_subjects_do_not_leak(
    backend: Backend,
) -> None:
    store = backend.store
    now = backend.clock()
    for kind, value in (
        ("jti", "t1"),
        ("sid", "s1"),
        ("sub", "alice"),
        ("svc", "alice"),
    ):
        store.revoke(kind, value, now=now, ttl=60)

    assert store.read(StateKeys("bob", "s2", "t2")) == StateRead()


def test_revoking_a_subject_again_moves_its_cutoff(backend: Backend) -> None:
    store = backend.store
    now = backend.clock()
    store.revoke("sub", "alice", now=now, ttl=60)
    store.revoke("sub", "alice", now=now + 30, ttl=60)

    state = store.read(StateKeys("alice"))

    assert state.subject_revoked_before == pytest.approx(now + 30)
    assert len(store.revocations(now=now)) == 1


def test_unknown_revocation_kind_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError, match="revocation kind"):
        backend.store.revoke("user", "alice", now=backend.clock(), ttl=60)


def test_revocations_claims_and_history_expire(backend: Backend) -> None:
    store = backend.store
    now = backend.clock()
    for kind, value in (
        ("jti", "t1"),
        ("sid", "s1"),
        ("sub", "alice"),
        ("svc", "alice"),
    ):
        store.revoke(kind, value, now=now, ttl=1)
    store.revoke("jti", "kept", now=now, ttl=60)
    assert store.write(backend.update(once_key="t1", once_ttl=1, history_ttl=1))

    backend.wait(1.5)

    assert store.read(StateKeys("alice", "s1", "t1")) == StateRead()
    assert [r.value for r in store.revocations(now=backend.clock())] == ["kept"]
    assert store.write(backend.update(once_key="t1", once_ttl=1)) is True


def test_async_twins_read_and_write_the_same_state(backend: Backend) -> None:
    store = backend.store
    store.revoke("jti", "t1", now=backend.clock(), ttl=60)

    async def run() -> tuple[bool, bool, StateRead]:
        try:
            first = await store.awrite(backend.update(once_key="t9", once_ttl=60))
            second = await store.awrite(backend.update(once_key="t9", once_ttl=60))
            return first, second, await store.aread(StateKeys("alice", "s1", "t1"))
        finally:
            if isinstance(store, RedisStore):
                await store.aclose()

    first, second, state = asyncio.run(run())

    assert (first, second) == (True, False)
    assert state.token_revoked
    assert state == store.read(StateKeys("alice", "s1", "t1"))


def test_one_time_claim_from_five_threads_has_exactly_one_winner(
    backend: Backend,
) -> None:
    def claim() -> list[bool]:
        return [backend.store.write(backend.update(once_key="race", once_ttl=60))]

    assert race_in_threads(claim) == [False, False, False, False, True]


def test_one_time_claim_from_five_processes_has_exactly_one_winner(
    shared_backend: Backend,
) -> None:
    assert shared_backend.url is not None

    outcomes = race_in_processes(shared_backend.url, "write")

    assert outcomes == [False, False, False, False, True]


# -- where requests came from ----------------------------------------------------


@pytest.mark.parametrize(
    "place",
    [("DE", 52.520008, 13.404954), ("FR", None, None), (None, None, None)],
    ids=["country-and-point", "country-only", "unknown"],
)
def test_place_of_a_request_is_read_back_for_its_session_and_its_subject(
    backend: Backend, place: tuple[str | None, float | None, float | None]
) -> None:
    country, latitude, longitude = place
    update = backend.update(
        seen_at=1234.5, country=country, latitude=latitude, longitude=longitude
    )
    backend.store.write(update)

    state = backend.store.read(StateKeys("alice", "s1"))

    assert state.session == state.subject_last == update.record()
    assert state.session == SessionRecord(
        "dev-a", "10.0.0.0/24", 1234.5, country, latitude, longitude
    )


def test_subjects_last_request_follows_the_latest_write_in_any_session(
    backend: Backend,
) -> None:
    store = backend.store
    paris = backend.update(
        session_id="s1",
        seen_at=1000.0,
        country="FR",
        latitude=48.8566,
        longitude=2.3522,
    )
    tokyo = backend.update(
        session_id="s2",
        seen_at=1060.0,
        country="JP",
        latitude=35.6762,
        longitude=139.6503,
        device="dev-b",
    )
    store.write(paris)
    store.write(tokyo)
    store.write(backend.update("bob", session_id="s9", country="US"))

    in_s1 = store.read(StateKeys("alice", "s1"))
    anywhere = store.read(StateKeys("alice"))

    assert in_s1.session == paris.record()
    assert in_s1.subject_last == anywhere.subject_last == tokyo.record()
    assert anywhere.session is None
    bob = store.read(StateKeys("bob")).subject_last
    assert bob is not None and bob.country == "US"


# -- step-up primitives, on every store ---------------------------------------------

# A caller's key with its own Redis Cluster hash tag, and one without.
USED = "totp:used:{sub:alice}:57"
LOCKOUT = "lockout:alice"
SECRET = bytes(range(256))


def test_claim_is_true_once_then_false_until_it_expires(backend: Backend) -> None:
    store = backend.store

    assert [store.claim(USED, 1), store.claim(USED, 1)] == [True, False]
    assert store.claim("totp:used:{sub:alice}:58", 1) is True

    backend.wait(1.1)

    assert [store.claim(USED, 60), store.claim(USED, 60)] == [True, False]


def test_count_adds_one_and_reads_back_as_digits(backend: Backend) -> None:
    store = backend.store

    assert [store.count(LOCKOUT, 60) for _ in range(3)] == [1, 2, 3]
    assert store.get(LOCKOUT) == b"3"
    assert store.count("lockout:bob", 60) == 1


def test_count_ttl_starts_at_the_first_increment_and_is_not_extended(
    backend: Backend,
) -> None:
    store = backend.store
    assert store.count(LOCKOUT, 1) == 1

    backend.wait(0.5)
    assert store.count(LOCKOUT, 1) == 2

    # 1.1 s after the first count: gone, though the second was 0.6 s ago.
    backend.wait(0.6)
    assert store.get(LOCKOUT) is None
    assert store.count(LOCKOUT, 1) == 1


def test_put_get_and_delete_a_value(backend: Backend) -> None:
    store = backend.store
    assert store.get(LOCKOUT) is None

    store.put(LOCKOUT, b"first")
    store.put(LOCKOUT, b"second")
    assert store.get(LOCKOUT) == b"second"

    store.delete(LOCKOUT)
    store.delete(LOCKOUT)  # already gone: no error
    assert store.get(LOCKOUT) is None


@pytest.mark.parametrize("value", [SECRET, b"", b"\x00", SECRET[::-1] * 16])
def test_binary_values_round_trip_byte_for_byte(backend: Backend, value: bytes) -> None:
    backend.store.put("totp:secret:{sub:alice}", value)

    assert backend.store.get("totp:secret:{sub:alice}") == value


def test_value_with_ttl_expires_and_one_without_is_kept(backend: Backend) -> None:
    store = backend.store
    store.put("kept", b"k")
    store.put("brief", b"b", ttl=1)
    store.put("made-permanent", b"old", ttl=1)
    store.put("made-permanent", b"new")  # a put replaces the TTL too
    assert store.get("brief") == b"b"

    backend.wait(1.1)

    assert store.get("kept") == b"k"
    assert store.get("brief") is None
    assert store.get("made-permanent") == b"new"


def test_delete_forgets_a_claim_and_a_counter(backend: Backend) -> None:
    store = backend.store
    store.claim(USED, 60)
    store.count(LOCKOUT, 60)
    store.count(LOCKOUT, 60)

    store.delete(USED)
    store.delete(LOCKOUT)

    assert store.claim(USED, 60) is True
    assert store.count(LOCKOUT, 60) == 1


def test_step_up_keys_are_apart_from_one_time_tokens(backend: Backend) -> None:
    store = backend.store
    assert store.claim("t1", 60) is True

    assert store.write(backend.update(once_key="t1", once_ttl=60)) is True
    assert store.get("t1") == b"1"


def test_claim_from_five_threads_has_exactly_one_winner(backend: Backend) -> None:
    outcomes = race_in_threads(lambda: [backend.store.claim(USED, 60)])

    assert outcomes == [False, False, False, False, True]


def test_count_from_five_threads_counts_every_increment_once(
    backend: Backend,
) -> None:
    outcomes = race_in_threads(
        lambda: [backend.store.count(LOCKOUT, 60) for _ in range(20)]
    )

    assert outcomes == list(range(1, 101))
    assert backend.store.get(LOCKOUT) == b"100"


def test_five_processes_get_one_claim_and_every_count_once(
    shared_backend: Backend,
) -> None:
    assert shared_backend.url is not None

    # Each process claims once, then counts twenty times.
    outcomes = race_in_processes(shared_backend.url, "step-up")

    claims = [value for action, value in outcomes if action == "claim"]
    counts = [value for action, value in outcomes if action == "count"]
    assert claims == [False, False, False, False, True]
    assert counts == list(range(1, 101))


def test_async_twins_of_the_step_up_primitives_share_the_state(
    backend: Backend,
) -> None:
    store = backend.store

    async def run() -> list[Any]:
        try:
            return [
                await store.aclaim(USED, 60),
                await store.aclaim(USED, 60),
                await store.acount(LOCKOUT, 60),
                await store.acount(LOCKOUT, 60),
                await store.aput("totp:secret:{sub:alice}", SECRET, 60),
                await store.aget("totp:secret:{sub:alice}"),
                await store.adelete("totp:secret:{sub:alice}"),
                await store.aget("totp:secret:{sub:alice}"),
            ]
        finally:
            if isinstance(store, RedisStore):
                await store.aclose()

    results = asyncio.run(run())

    assert results == [True, False, 1, 2, None, SECRET, None, None]
    assert store.claim(USED, 60) is False
    assert store.count(LOCKOUT, 60) == 3


# -- racing helpers -----------------------------------------------------------------


def race_in_threads(action: Callable[[], list[Any]]) -> list[Any]:
    """Everything ``action`` returned in five threads started at once, sorted."""
    start = threading.Barrier(5)
    results: list[Any] = []

    def run() -> None:
        start.wait(timeout=30)
        results.extend(action())

    threads = [threading.Thread(target=run) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    return sorted(results)


def _race_in_process(url: str, action: str, ready: Any, go: Any, results: Any) -> None:
    store = store_from_url(url)
    store.read(StateKeys("alice"))  # connected and warm before the race
    ready.release()
    go.wait(timeout=30)
    if action == "write":
        update = StateWrite(
            "alice", "s1", "dev", None, time.time(), DAY, once_key="race", once_ttl=60
        )
        results.put([store.write(update)])
    else:
        claim = ("claim", store.claim(USED, 60))
        counts = [("count", store.count(LOCKOUT, 60)) for _ in range(20)]
        results.put([claim, *counts])
    store.close()


def race_in_processes(url: str, action: str) -> list[Any]:
    """Everything five processes got from ``action`` ("write" or "step-up")
    on the store at ``url``, started at once, sorted."""
    # spawn, not fork: the parent may have threads (the event loop's, SQLite's).
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    workers = [
        context.Process(target=_race_in_process, args=(url, action, ready, go, results))
        for _ in range(5)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert ready.acquire(timeout=30)

    go.set()
    outcomes = sorted(value for _ in workers for value in results.get(timeout=30))
    for worker in workers:
        worker.join(timeout=30)
    assert all(worker.exitcode == 0 for worker in workers)

    return outcomes


# -- SQLite ---------------------------------------------------------------------


def test_sqlite_file_is_in_wal_mode_with_its_schema(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "zt.db"))
    with closing(sqlite3.connect(tmp_path / "zt.db")) as db:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    store.close()

    assert mode == "wal"
    assert {
        "zt_revocations",
        "zt_once",
        "zt_sessions",
        "zt_history",
        "zt_last",
        "zt_values",
    } <= tables


def test_sqlite_second_store_on_the_same_file_sees_the_first_ones_writes(
    tmp_path: Path,
) -> None:
    first = SQLiteStore(str(tmp_path / "zt.db"))
    second = SQLiteStore(str(tmp_path / "zt.db"))
    first.revoke("jti", "t1", now=time.time(), ttl=60)

    assert second.read(StateKeys("alice", None, "t1")).token_revoked
    first.close()
    second.close()


def test_sqlite_threads_use_their_own_connections(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "zt.db"))
    seen: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: seen.append(store.connection()))
    thread.start()
    thread.join()

    assert seen[0] is not store.connection()
    store.close()


def test_sqlite_expired_rows_are_purged_a_bounded_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("zt_middleware.stores.sqlite._PURGE_BATCH", 2)
    clock = ManualClock()
    store = SQLiteStore(str(tmp_path / "zt.db"), clock=clock, purge_every=3)
    for index in range(4):
        store.write(
            StateWrite(f"u{index}", f"s{index}", "d", "n", clock(), 1, f"t{index}", 1)
        )
    store.revoke("jti", "old", now=clock(), ttl=1)
    clock.now += 10

    store.write(StateWrite("later", "s-later", "d", "n", clock(), DAY))
    store.write(StateWrite("later", "s-later", "d", "n", clock(), DAY))
    counts = [
        store.connection().execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        for table in ("zt_once", "zt_sessions", "zt_last", "zt_revocations")
    ]
    store.close()

    # The sixth write purges: two expired rows of each table at most.
    assert counts == [2, 3, 3, 0]


def test_sqlite_file_that_is_no_database_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database file" * 100)

    with pytest.raises(StoreUnavailable, match=r"garbage\.db"):
        SQLiteStore(str(path))


def test_sqlite_directory_that_does_not_exist_is_store_unavailable(
    tmp_path: Path,
) -> None:
    with pytest.raises(StoreUnavailable, match="unable to open"):
        SQLiteStore(str(tmp_path / "missing" / "zt.db"))


def test_sqlite_failure_while_serving_is_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "zt.db"))
    store.connection().execute("DROP TABLE zt_history")

    with pytest.raises(StoreUnavailable, match="read failed"):
        store.read(StateKeys("alice"))
    with pytest.raises(StoreUnavailable, match="write failed"):
        store.write(StateWrite("alice", "s1", "d", None, time.time(), DAY))
    store.close()


def test_sqlite_step_up_primitive_failure_is_store_unavailable(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "zt.db"))
    store.connection().execute("DROP TABLE zt_values")
    calls: dict[str, Callable[[], object]] = {
        "claim": lambda: store.claim(USED, 60),
        "count": lambda: store.count(LOCKOUT, 60),
        "get": lambda: store.get(LOCKOUT),
        "put": lambda: store.put(LOCKOUT, b"x"),
        "delete": lambda: store.delete(LOCKOUT),
    }

    for action, call in calls.items():
        with pytest.raises(StoreUnavailable, match=f"{action} failed"):
            call()
    with pytest.raises(StoreUnavailable, match="claim failed"):
        asyncio.run(store.aclaim(USED, 60))
    store.close()


# The schema the first SQLite store wrote, version 1.
SCHEMA_1 = """
CREATE TABLE zt_revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL,
    revoked_at REAL NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
CREATE TABLE zt_once (key TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE zt_sessions (
    sid TEXT PRIMARY KEY, device TEXT, network TEXT,
    seen_at REAL NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE zt_history (
    subject TEXT NOT NULL, kind TEXT NOT NULL, item TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (subject, kind, item)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def test_sqlite_file_of_schema_version_1_is_upgraded_keeping_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "zt.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_1)
        db.execute(
            "INSERT INTO zt_sessions VALUES ('s1', 'dev-a', 'net', 1000.0, ?)",
            (time.time() + DAY,),
        )
        db.commit()

    store = SQLiteStore(str(path))
    kept = store.read(StateKeys("alice", "s1")).session
    update = StateWrite("alice", "s2", "dev-b", None, 2000.0, DAY, country="DE")
    store.write(update)
    written = store.read(StateKeys("alice", "s2"))
    claimed = store.claim(USED, 60)
    version = store.connection().execute("PRAGMA user_version").fetchone()[0]
    store.close()

    assert kept == SessionRecord("dev-a", "net", 1000.0)
    assert written.session == written.subject_last == update.record()
    assert claimed and version == 2


def test_sqlite_file_of_a_newer_schema_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "zt.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")

    with pytest.raises(StoreUnavailable, match="schema version 99"):
        SQLiteStore(str(path))


def test_sqlite_step_up_writes_are_one_transaction_and_get_one_select(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(str(tmp_path / "zt.db"))
    statements: list[str] = []
    store.connection().set_trace_callback(statements.append)
    calls: dict[str, Callable[[], object]] = {
        "claim": lambda: store.claim(USED, 60),
        "count": lambda: store.count(LOCKOUT, 60),
        "put": lambda: store.put("secret", SECRET),
        "delete": lambda: store.delete("secret"),
        "get": lambda: store.get(LOCKOUT),
    }
    traced = {}
    for action, call in calls.items():
        statements.clear()
        call()
        traced[action] = list(statements)
    store.close()

    get = traced.pop("get")
    assert len(get) == 1 and get[0].lstrip().startswith("SELECT")
    for action, trace in traced.items():
        assert trace[0] == "BEGIN IMMEDIATE" and trace[-1] == "COMMIT", action
        assert sum(s.startswith(("BEGIN", "COMMIT")) for s in trace) == 2, action


def test_sqlite_read_is_one_statement_and_write_one_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "zt.db"))
    statements: list[str] = []
    store.connection().set_trace_callback(statements.append)

    store.read(StateKeys("alice", "s1", "t1"))
    read = list(statements)
    statements.clear()
    store.write(StateWrite("alice", "s1", "d", "n", time.time(), DAY, "t1", 60))
    store.close()

    assert len(read) == 1 and read[0].lstrip().startswith("SELECT")
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"
    assert sum(s.startswith("BEGIN") for s in statements) == 1


# -- Redis ----------------------------------------------------------------------

TAG = re.compile(r"\{([^}]*)\}")


def test_redis_keys_of_a_session_a_token_and_a_subject_share_their_slot(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    store = store_from_url(redis_server.url)
    assert isinstance(store, RedisStore)
    now = time.time()
    store.write(StateWrite("alice", "s-1", "dev", "10.0.0.0/24", now, DAY, "t-1", 60))
    for kind, value in (
        ("jti", "t-1"),
        ("sid", "s-1"),
        ("sub", "alice"),
        ("svc", "alice"),
    ):
        store.revoke(kind, value, now=now, ttl=60)

    keys = sorted(key.decode() for key in store.client.scan_iter("zt:*"))
    store.close()

    assert keys == [
        "zt:revocations",
        "zt:{jti:t-1}:revoked:jti",
        "zt:{jti:t-1}:used",
        "zt:{sid:s-1}:last",
        "zt:{sid:s-1}:revoked:sid",
        "zt:{sub:alice}:last",
        "zt:{sub:alice}:revoked:sub",
        "zt:{sub:alice}:revoked:svc",
        "zt:{sub:alice}:seen",
    ]
    by_tag: dict[str, set[int]] = {}
    for key in keys:
        tag = TAG.search(key)
        if tag is not None:
            by_tag.setdefault(tag.group(1), set()).add(key_slot(key.encode()))
    assert set(by_tag) == {"jti:t-1", "sid:s-1", "sub:alice"}
    assert all(len(slots) == 1 for slots in by_tag.values())


def test_redis_every_key_has_a_ttl(redis_server: RedisServer) -> None:
    redis_server.flush()
    store = store_from_url(redis_server.url)
    assert isinstance(store, RedisStore)
    now = time.time()
    store.write(StateWrite("alice", "s-1", "dev", "10.0.0.0/24", now, 3600, "t-1", 60))
    store.revoke("sub", "alice", now=now, ttl=900)
    store.claim(USED, 90)
    store.count(LOCKOUT, 900)
    store.put("totp:secret:{sub:alice}", SECRET, ttl=600)

    ttls = {key.decode(): store.client.ttl(key) for key in store.client.scan_iter("*")}
    store.put("kept", b"until deleted")
    kept = store.client.ttl("zt:{kv:kept}")
    store.close()

    assert len(ttls) == 9
    assert all(0 < ttl <= 3600 for ttl in ttls.values()), ttls
    assert kept == -1  # a put without ttl: the one key that has none


def test_redis_step_up_key_keeps_a_callers_hash_tag_and_tags_any_other_whole(
    redis_server: RedisServer,
) -> None:
    redis_server.flush()
    store = store_from_url(redis_server.url)
    assert isinstance(store, RedisStore)
    store.claim(USED, 60)
    store.count(LOCKOUT, 60)
    store.put("odd:{}:key", b"{} is no hash tag to Redis", 60)
    store.put("{kv:lockout:alice}", b"must not pass for LOCKOUT", 60)

    keys = sorted(key.decode() for key in store.client.scan_iter("zt:*"))
    lockout = store.get(LOCKOUT)
    store.close()

    assert keys == [
        "zt:kv:totp:used:{sub:alice}:57",
        "zt:kv:{kv:lockout:alice}",
        "zt:{kv:lockout:alice}",
        "zt:{kv:odd:{}:key}",
    ]
    assert lockout == b"1"
    # The caller's tag puts its key beside the subject's own keys.
    assert key_slot(keys[0].encode()) == key_slot(b"zt:{sub:alice}:last")


def test_redis_step_up_primitives_are_one_round_trip_each(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_server.flush()
    store = store_from_url(redis_server.url)
    assert isinstance(store, RedisStore)
    sent = count_round_trips(monkeypatch)
    calls: dict[str, Callable[[], object]] = {
        "claim": lambda: store.claim(USED, 60),
        "count": lambda: store.count(LOCKOUT, 60),
        "put": lambda: store.put("secret", SECRET, 60),
        "get": lambda: store.get("secret"),
        "delete": lambda: store.delete("secret"),
    }
    acalls: dict[str, Callable[[], Any]] = {
        "aclaim": lambda: store.aclaim(USED, 60),
        "acount": lambda: store.acount(LOCKOUT, 60),
        "aput": lambda: store.aput("secret", SECRET, 60),
        "aget": lambda: store.aget("secret"),
        "adelete": lambda: store.adelete("secret"),
    }
    trips: dict[str, int] = {}

    store.client.ping()  # connected before counting: the handshake is no call's
    for name, call in calls.items():
        before = sent[0]
        call()
        trips[name] = sent[0] - before

    async def run() -> None:
        try:
            await store.async_client.ping()
            for name, call in acalls.items():
                before = sent[0]
                await call()
                trips[name] = sent[0] - before
        finally:
            await store.aclose()

    asyncio.run(run())
    store.close()

    assert trips == {name: 1 for name in [*calls, *acalls]}


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list counting what redis-py sends: one per command or
    pipeline, sync or asyncio."""
    sent = [0]
    sync_send = redis.connection.AbstractConnection.send_packed_command
    async_send = redis.asyncio.connection.AbstractConnection.send_packed_command

    def counted(conn: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        sync_send(conn, command, check_health)

    async def acounted(conn: Any, command: Any, check_health: bool = True) -> None:
        sent[0] += 1
        await async_send(conn, command, check_health)

    monkeypatch.setattr(
        redis.connection.AbstractConnection, "send_packed_command", counted
    )
    monkeypatch.setattr(
        redis.asyncio.connection.AbstractConnection, "send_packed_command", acounted
    )

    return sent


def test_redis_unreachable_step_up_primitives_are_store_unavailable() -> None:
    store = store_from_url(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    calls: dict[str, Callable[[], object]] = {
        "claim": lambda: store.claim(USED, 60),
        "count": lambda: store.count(LOCKOUT, 60),
        "get": lambda: store.get(LOCKOUT),
        "put": lambda: store.put(LOCKOUT, b"x"),
        "delete": lambda: store.delete(LOCKOUT),
    }
    for action, call in calls.items():
        with pytest.raises(StoreUnavailable, match=f"{action} failed"):
            call()

    async def run() -> list[str]:
        failures = []
        try:
            for call in (
                store.aclaim(USED, 60),
                store.acount(LOCKOUT, 60),
                store.aget(LOCKOUT),
                store.aput(LOCKOUT, b"x"),
                store.adelete(LOCKOUT),
            ):
                with pytest.raises(StoreUnavailable) as caught:
                    await call
                failures.append(caught.value.description)
        finally:
            await store.aclose()  # type: ignore[attr-defined]
        return failures

    failures = asyncio.run(run())
    store.close()

    assert len(failures) == 5
    assert not any("hunter2" in failure for failure in failures)


def test_redis_prefix_keeps_two_deployments_apart(redis_server: RedisServer) -> None:
    redis_server.flush()
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    blue, green = RedisStore(client, prefix="blue"), RedisStore(client, prefix="green")
    blue.revoke("jti", "t1", now=time.time(), ttl=60)

    assert blue.read(StateKeys("alice", None, "t1")).token_revoked
    assert not green.read(StateKeys("alice", None, "t1")).token_revoked
    client.close()


def test_redis_store_builds_an_asyncio_twin_of_a_plain_client(
    redis_server: RedisServer,
) -> None:
    client = redis.Redis(
        host="127.0.0.1", port=redis_server.port, db=3, socket_timeout=2
    )
    store = RedisStore(client)

    twin = store.async_client
    assert isinstance(twin, redis.asyncio.Redis)
    kwargs = twin.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == (
        redis_server.port,
        3,
        2,
    )
    client.close()


def test_redis_unreachable_fails_fast_as_store_unavailable_naming_no_password() -> None:
    store = store_from_url(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    started = time.monotonic()

    with pytest.raises(StoreUnavailable) as caught:
        store.read(StateKeys("alice", "s1", "t1"))

    async def aread() -> None:
        try:
            await store.aread(StateKeys("alice"))
        finally:
            await store.aclose()  # type: ignore[attr-defined]

    with pytest.raises(StoreUnavailable) as caught_async:
        asyncio.run(aread())
    store.close()

    assert time.monotonic() - started < 3
    for error in (caught.value, caught_async.value):
        assert error.reason == "store_unavailable"
        assert "hunter2" not in error.description
        assert "127.0.0.1" in error.description


def test_redis_store_works_through_a_real_sentinel(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.flush()
    with running_sentinel(tmp_path / "sentinel", redis_server) as sentinel:
        store = store_from_url(
            f"redis+sentinel://127.0.0.1:{sentinel.port}/zt-master/0"
        )
        assert isinstance(store, RedisStore)
        store.revoke("sid", "s1", now=time.time(), ttl=60)
        claimed = store.write(
            StateWrite("alice", "s1", "d", None, time.time(), DAY, "t1", 60)
        )

        async def aread() -> StateRead:
            try:
                return await store.aread(StateKeys("alice", "s1"))
            finally:
                await store.aclose()  # type: ignore[attr-defined]

        state = asyncio.run(aread())
        store.close()

    assert claimed and state.session_revoked and state.subject_devices == {"d"}
    # The master is the server the sentinel watches: the same data.
    direct = store_from_url(redis_server.url)
    assert direct.read(StateKeys("alice", "s1")).session_revoked
    direct.close()


def test_redis_store_works_on_a_real_cluster_sync_and_async(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "cluster") as nodes:
        port = nodes[0].port
        store = RedisStore(
            redis.cluster.RedisCluster("127.0.0.1", port),
            redis.asyncio.cluster.RedisCluster("127.0.0.1", port),
        )
        now = time.time()
        store.revoke("sub", "alice", now=now, ttl=60)
        first = store.write(StateWrite("alice", "s1", "d", "n", now, DAY, "t1", 60))
        again = store.write(StateWrite("alice", "s1", "d", "n", now, DAY, "t1", 60))
        steps = [store.claim(USED, 60), store.claim(USED, 60)]
        steps += [store.count(LOCKOUT, 60), store.count(LOCKOUT, 60)]
        store.put("totp:secret:{sub:alice}", SECRET)

        async def run() -> tuple[bool, StateRead, list[Any]]:
            try:
                claimed = await store.awrite(
                    StateWrite("alice", "s2", "e", None, now, DAY, "t2", 60)
                )
                state = await store.aread(StateKeys("alice", "s2", "t1"))
                asteps = [
                    await store.aclaim(USED, 60),
                    await store.acount(LOCKOUT, 60),
                    await store.aget("totp:secret:{sub:alice}"),
                    await store.adelete("totp:secret:{sub:alice}"),
                    await store.aget("totp:secret:{sub:alice}"),
                ]
                return claimed, state, asteps
            finally:
                await store.aclose()

        claimed, state, asteps = asyncio.run(run())
        listed = store.revocations(now=now)
        store.close()

    assert (first, again, claimed) == (True, False, True)
    assert state.subject_revoked_before == pytest.approx(now)
    assert state.subject_devices == {"d", "e"}
    assert state.session is not None and state.session.device == "e"
    assert state.subject_last == state.session
    assert [(r.kind, r.value) for r in listed] == [("sub", "alice")]
    assert steps == [True, False, 1, 2]
    assert asteps == [False, 3, SECRET, None, None]


# -- store_from_url ---------------------------------------------------------------


def test_url_memory_is_a_memory_store() -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)


def test_url_sqlite_absolute_and_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absolute = store_from_url(f"sqlite://{tmp_path}/abs.db")
    monkeypatch.chdir(tmp_path)
    relative = store_from_url("sqlite:///./rel.db")

    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/abs.db"
    assert isinstance(relative, SQLiteStore) and relative.path == "./rel.db"
    assert (tmp_path / "abs.db").exists() and (tmp_path / "rel.db").exists()
    absolute.close()
    relative.close()


PASSWORD = "s3cret-pw"  # a test value: the point is not to see it


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_url_redis_builds_sync_and_async_clients_with_short_timeouts(
    scheme: str,
) -> None:
    store = store_from_url(f"{scheme}://:{PASSWORD}@cache.internal:6380/2")

    assert isinstance(store, RedisStore)
    for client in (store.client, store.async_client):
        pool = client.connection_pool
        kwargs = pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == (
            "cache.internal",
            6380,
            2,
        )
        assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (
            0.5,
            1.0,
        )
        assert kwargs["password"] == PASSWORD
        assert ("SSL" in pool.connection_class.__name__) is (scheme == "rediss")
    assert PASSWORD not in repr(store)


def test_url_sentinel_names_every_sentinel_the_service_and_the_db() -> None:
    store = store_from_url(
        f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379,10.0.0.2/orders/3"
    )

    assert isinstance(store, RedisStore)
    for client in (store.client, store.async_client):
        pool = client.connection_pool
        sentinels = pool.sentinel_manager.sentinels
        ports = [s.connection_pool.connection_kwargs["port"] for s in sentinels]
        assert (pool.service_name, pool.connection_kwargs["db"]) == ("orders", 3)
        assert pool.connection_kwargs["socket_timeout"] == 1.0
        assert pool.connection_kwargs["password"] == PASSWORD
        assert ports == [26379, 26379]
    assert PASSWORD not in repr(store)


@pytest.mark.parametrize(
    "url, message",
    [
        ("postgres://db/zt", "scheme 'postgres'"),
        ("sqlite://host/zt.db", "sqlite:///absolute"),
        ("sqlite:///", "names no file"),
        ("redis://:s3cret@/0", "no host"),
        ("redis://:s3cret@cache:http/0", "port"),
        ("redis://:s3cret@cache:6379/zero", "database"),
        ("redis+sentinel://:s3cret@s1:26379", "service_name"),
        ("redis+sentinel://:s3cret@s1:99999/svc/0", "port"),
    ],
)
def test_url_errors_name_the_store_setting_and_never_the_password(
    url: str, message: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        store_from_url(url)

    assert caught.value.description.startswith("store: ")
    assert message in caught.value.description
    assert "s3cret" not in caught.value.description


def test_redis_step_up_keys_of_the_two_forms_never_collide() -> None:
    store = RedisStore(redis.Redis(), prefix="zt")

    assert store._value_key("lockout:alice") == "zt:{kv:lockout:alice}"
    assert store._value_key("{kv:lockout:alice}") == "zt:kv:{kv:lockout:alice}"
    assert store._value_key("a:{b}") == "zt:kv:a:{b}"
    assert store._value_key("a:{}b}") == "zt:{kv:a:{}b}}"


def test_keys_of_unique_values_never_collide() -> None:
    # A value holding "}:" must not forge another kind's key.
    store = RedisStore(redis.Redis(), prefix="zt")
    forged = store._revoked_key("jti", "x}:used")

    assert forged != store._key("jti", "x", "used")
    assert forged == "zt:{jti:x}:used}:revoked:jti"


def test_sqlite_file_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    from zt_middleware.stores.sqlite import SQLiteStore

    path = tmp_path / "zt.sqlite3"
    store = SQLiteStore(str(path))
    store.put("k", b"v")
    store.close()

    assert path.stat().st_mode & 0o777 == 0o600
