"""Revocation, replay, session history and store failures, through the guard.

The first part drives :class:`Guard` in this process against each store.
The second starts real workers, an ASGI one (uvicorn, Starlette, the asyncio
Redis client) and a WSGI one (waitress, Flask, the sync client), on one
redis-server and then on one SQLite file, and revokes with the real ``zt``
command in a third process: the very next request on each worker is refused.
The last test stops the redis-server in the middle of a run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio.connection
import redis.connection
from redis_server import RedisServer, free_port, running_redis

from zt_middleware.context import RequestContext
from zt_middleware.decision import Decision
from zt_middleware.guard import Guard
from zt_middleware.issuer import Issuer, generate_key
from zt_middleware.routes import Requirement
from zt_middleware.stores import MemoryStore, Store
from zt_middleware.stores.redis import RedisStore
from zt_middleware.stores.sqlite import SQLiteStore
from zt_middleware.stores.urls import store_from_url

ROOT = Path(__file__).resolve().parent.parent
ONE_TIME = Requirement(scopes=frozenset({"orders:write"}), one_time=True)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Callable[[], float]
) -> Iterator[Store]:
    """Each store, reading the same frozen clock as the guard."""
    made: Store
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        made = RedisStore(redis.Redis(host="127.0.0.1", port=server.port), clock=clock)
    elif request.param == "sqlite":
        made = SQLiteStore(str(tmp_path / "zt.db"), clock=clock)
    else:
        made = MemoryStore(clock=clock)
    yield made
    made.close()


@pytest.fixture
def guard(
    base_settings: dict[str, Any], store: Store, clock: Callable[[], float]
) -> Callable[..., Guard]:
    """``guard(**settings)``: a guard on the shared store; call twice for two
    workers."""

    def make(**settings: Any) -> Guard:
        return Guard({**base_settings, **settings}, store=store, clock=clock)

    return make


def request(
    token: str | None,
    *,
    path: str = "/api/orders",
    requirement: Requirement | None = None,
    agent: str = "agent-1",
    client: str = "10.0.0.5",
) -> RequestContext:
    headers = {"user-agent": agent}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return RequestContext("GET", path, headers, client=client, requirement=requirement)


def outcome(decision: Decision) -> tuple[int, str]:
    return decision.status, decision.reason


# -- revocation ------------------------------------------------------------------


def test_revoked_token_is_refused_and_its_session_sibling_is_not(
    guard: Callable[..., Guard], mint: Callable[..., str]
) -> None:
    worker = guard()
    revoked = mint(scopes=["orders:read"], session_id="s1", extra={"jti": "t-revoked"})
    sibling = mint(scopes=["orders:read"], session_id="s1")
    assert worker.decide(request(revoked)).allowed

    worker.revoke("jti", "t-revoked")

    assert outcome(worker.decide(request(revoked))) == (401, "token_revoked")
    assert worker.decide(request(sibling)).allowed


def test_revoked_session_refuses_every_token_of_it(
    guard: Callable[..., Guard], mint: Callable[..., str]
) -> None:
    first, second = guard(), guard()
    in_session = [mint(scopes=["orders:read"], session_id="s-gone") for _ in range(2)]
    elsewhere = mint(scopes=["orders:read"], session_id="s-other")

    first.revoke("sid", "s-gone")

    for token in in_session:
        assert outcome(second.decide(request(token))) == (401, "session_revoked")
    assert second.decide(request(elsewhere)).allowed


def test_subject_revocation_refuses_tokens_issued_before_it_only(
    guard: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    worker = guard()
    before = mint(scopes=["orders:read"])
    clock.advance(0.5)
    revocation = worker.revoke("sub", "alice")

    # iat has one-second resolution: the next second's token is newer.
    clock.advance(1)
    after = mint(scopes=["orders:read"])

    assert revocation.expires_at == revocation.revoked_at + 900 + 30
    assert outcome(worker.decide(request(before))) == (401, "subject_revoked")
    assert worker.decide(request(after)).allowed
    assert worker.decide(request(mint("bob", scopes=["orders:read"]))).allowed


def test_service_revocation_refuses_the_service_identity(
    guard: Callable[..., Guard], mint: Callable[..., str]
) -> None:
    worker = guard()
    worker.revoke("svc", "svc:billing")

    decision = worker.decide(request(mint("svc:billing", scopes=["orders:read"])))

    assert outcome(decision) == (401, "service_revoked")
    assert worker.decide(request(mint("svc:shipping", scopes=["orders:read"]))).allowed


def test_async_guard_sees_the_same_revocations(
    guard: Callable[..., Guard], mint: Callable[..., str], store: Store
) -> None:
    worker = guard()
    revoked = mint(scopes=["orders:read"], extra={"jti": "t-async"})
    worker.revoke("jti", "t-async")

    async def decide() -> tuple[Decision, Decision]:
        try:
            return (
                await worker.adecide(request(revoked)),
                await worker.adecide(request(mint(scopes=["orders:read"]))),
            )
        finally:
            if isinstance(store, RedisStore):
                await store.aclose()

    refused, allowed = asyncio.run(decide())

    assert outcome(refused) == (401, "token_revoked")
    assert allowed.allowed


# -- replay ------------------------------------------------------------------------


def test_one_time_route_refuses_the_second_use_in_another_worker(
    guard: Callable[..., Guard], mint: Callable[..., str]
) -> None:
    first, second = guard(), guard()
    token = mint(scopes=["orders:write"])
    ctx = request(token, path="/api/confirm", requirement=ONE_TIME)

    assert first.decide(ctx).allowed
    assert outcome(second.decide(ctx)) == (401, "token_replayed")
    assert outcome(first.decide(ctx)) == (401, "token_replayed")


def test_one_time_claims_setting_marks_a_token_one_time(
    guard: Callable[..., Guard], mint: Callable[..., str]
) -> None:
    first, second = (
        guard(one_time_claims={"token_use": ["step_up"]}) for _ in range(2)
    )
    step_up = mint(scopes=["orders:read"], extra={"token_use": "step_up"})
    ordinary = mint(scopes=["orders:read"], extra={"token_use": "access"})

    assert first.decide(request(step_up)).allowed
    assert outcome(second.decide(request(step_up))) == (401, "token_replayed")
    assert all(second.decide(request(ordinary)).allowed for _ in range(3))


def test_one_time_route_refuses_a_token_without_jti(
    guard: Callable[..., Guard], issuer: Issuer, claims: Callable[..., dict[str, Any]]
) -> None:
    # Without a jti there is nothing to claim: refused, not let through.
    token = issuer.sign(claims(scope="orders:write"))

    decision = guard().decide(request(token, path="/api/confirm", requirement=ONE_TIME))

    assert outcome(decision) == (401, "claim_missing")


def test_ordinary_token_keeps_working_across_many_requests_and_workers(
    guard: Callable[..., Guard], mint: Callable[..., str]
) -> None:
    # Regression: a jti check applied to ordinary tokens made their second
    # request a "replay".
    workers = [guard(), guard()]
    token = mint(scopes=["orders:read"])

    decisions = [workers[n % 2].decide(request(token)) for n in range(40)]

    assert {outcome(d) for d in decisions} == {(200, "allowed")}


# -- session history ---------------------------------------------------------------


def test_session_change_reports_new_device_device_change_and_network_change(
    guard: Callable[..., Guard], mint: Callable[..., str]
) -> None:
    # The risk score of these changes is not the subject here: no challenge.
    worker = guard(risk_challenge_at=1000, risk_deny_at=1000)
    token = mint(scopes=["orders:read"], session_id="s1")

    def change(**ctx: Any) -> tuple[bool, bool, bool, bool]:
        decision = worker.decide(request(token, **ctx))
        assert decision.allowed and decision.change is not None
        c = decision.change
        return (
            c.new_device_for_subject,
            c.new_network_for_subject,
            c.device_changed,
            c.network_changed,
        )

    assert change() == (True, True, False, False)
    assert change() == (False, False, False, False)
    assert change(agent="agent-2") == (True, False, True, False)
    assert change(agent="agent-2", client="192.0.2.7") == (False, True, False, True)
    assert change(agent="agent-1") == (False, False, True, True)

    other_session = mint(scopes=["orders:read"], session_id="s2")
    fresh = worker.decide(request(other_session, agent="agent-2", client="192.0.2.7"))
    assert fresh.change is not None and fresh.change.previous is None
    assert not fresh.change.new_device_for_subject
    assert not fresh.change.new_network_for_subject


# -- store failures ----------------------------------------------------------------


def test_unreachable_redis_refuses_with_503_retry_after_and_an_audit_error(
    base_settings: dict[str, Any],
    mint: Callable[..., str],
    clock: Callable[[], float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = store_from_url(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    worker = Guard(base_settings, store=store, clock=clock)
    token = mint(scopes=["orders:read"])
    caplog.set_level(logging.INFO, logger="zt_middleware")

    async def adecide() -> Decision:
        try:
            return await worker.adecide(request(token))
        finally:
            await store.aclose()  # type: ignore[attr-defined]

    for decision in (worker.decide(request(token)), asyncio.run(adecide())):
        status, headers, body = decision.render("api")
        assert status == 503
        assert ("retry-after", "5") in headers
        assert json.loads(body)["reason"] == "store_unavailable"
    store.close()

    audit = [r for r in caplog.records if r.name == "zt_middleware.audit"]
    assert [r.levelno for r in audit] == [logging.ERROR, logging.ERROR]
    assert all(r.zt_event["reasons"] == ("store_unavailable",) for r in audit)  # type: ignore[attr-defined]
    assert "hunter2" not in caplog.text


def test_sqlite_write_failure_after_a_good_read_is_503_not_an_allow(
    base_settings: dict[str, Any], mint: Callable[..., str], clock: Any, tmp_path: Path
) -> None:
    store = SQLiteStore(str(tmp_path / "zt.db"), clock=clock)
    worker = Guard(base_settings, store=store, clock=clock)
    store.connection().execute("DROP TABLE zt_once")  # the claim will fail

    one_time = request(
        mint(scopes=["orders:write"]), path="/api/confirm", requirement=ONE_TIME
    )
    ordinary = request(mint(scopes=["orders:read"]))

    assert outcome(worker.decide(one_time)) == (503, "store_unavailable")
    assert worker.decide(ordinary).allowed
    store.close()


# -- round trips -------------------------------------------------------------------


class RoundTrips:
    """Counts what redis-py sends: one send per command, one per pipeline."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
        self.sent = 0
        self.phases: dict[str, list[int]] = {"read": [], "write": []}
        sync_send = redis.connection.AbstractConnection.send_packed_command
        async_send = redis.asyncio.connection.AbstractConnection.send_packed_command

        def counted(conn: Any, command: Any, check_health: bool = True) -> None:
            self.sent += 1
            sync_send(conn, command, check_health)

        async def acounted(conn: Any, command: Any, check_health: bool = True) -> None:
            self.sent += 1
            await async_send(conn, command, check_health)

        monkeypatch.setattr(
            redis.connection.AbstractConnection, "send_packed_command", counted
        )
        monkeypatch.setattr(
            redis.asyncio.connection.AbstractConnection, "send_packed_command", acounted
        )
        for phase in ("read", "write"):
            for name in (phase, f"a{phase}"):
                monkeypatch.setattr(
                    store, name, self._watch(phase, getattr(store, name))
                )

    def _watch(self, phase: str, method: Any) -> Any:
        def run(*args: Any) -> Any:
            before = self.sent
            result = method(*args)
            if asyncio.iscoroutine(result):
                return self._awatch(phase, before, result)
            self.phases[phase].append(self.sent - before)
            return result

        return run

    async def _awatch(self, phase: str, before: int, result: Any) -> Any:
        value = await result
        self.phases[phase].append(self.sent - before)
        return value


@pytest.mark.parametrize("route", ["ordinary", "one-time"])
def test_redis_request_is_one_read_and_one_write_round_trip(
    base_settings: dict[str, Any],
    mint: Callable[..., str],
    clock: Callable[[], float],
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    store = RedisStore(
        redis.Redis(host="127.0.0.1", port=redis_server.port), clock=clock
    )
    worker = Guard(base_settings, store=store, clock=clock)
    store.client.ping()  # connected before counting: the handshake is not a request's
    trips = RoundTrips(monkeypatch, store)

    def ctx() -> RequestContext:
        if route == "ordinary":
            return request(mint(scopes=["orders:read"], session_id="s1"))
        return request(mint(scopes=["orders:write"]), path="/x", requirement=ONE_TIME)

    assert worker.decide(ctx()).allowed

    async def adecide() -> Decision:
        try:
            await store.async_client.ping()
            trips.sent = 0
            return await worker.adecide(ctx())
        finally:
            await store.aclose()

    assert asyncio.run(adecide()).allowed
    store.close()

    if route == "ordinary":
        # The second request repeats the first (same device, network and
        # place, within a minute): read, and nothing new to write.
        assert trips.phases == {"read": [1, 1], "write": [1]}
    else:
        assert trips.phases == {"read": [1, 1], "write": [1, 1]}


def test_sqlite_request_is_one_read_statement_and_one_write_transaction(
    base_settings: dict[str, Any],
    mint: Callable[..., str],
    clock: Callable[[], float],
    tmp_path: Path,
) -> None:
    store = SQLiteStore(str(tmp_path / "zt.db"), clock=clock)
    worker = Guard(base_settings, store=store, clock=clock)
    statements: list[str] = []
    store.connection().set_trace_callback(statements.append)
    phases: list[list[str]] = []
    for name in ("read", "write"):
        method = getattr(store, name)

        def traced(*args: Any, _method: Any = method) -> Any:
            statements.clear()
            result = _method(*args)
            phases.append(list(statements))
            return result

        setattr(store, name, traced)

    assert worker.decide(request(mint(scopes=["orders:read"], session_id="s1"))).allowed
    store.close()

    read, write = phases
    assert len(read) == 1 and read[0].lstrip().startswith("SELECT")
    assert write[0] == "BEGIN IMMEDIATE" and write[-1] == "COMMIT"
    assert [s for s in write if s.startswith(("BEGIN", "COMMIT", "ROLLBACK"))] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]


def test_memory_store_needs_no_round_trip_at_all(
    base_settings: dict[str, Any], mint: Callable[..., str], clock: Callable[[], float]
) -> None:
    worker = Guard(base_settings, store=MemoryStore(clock=clock), clock=clock)

    assert worker.decide(request(mint(scopes=["orders:read"]))).allowed


# -- real workers ------------------------------------------------------------------

ISSUER = "https://issuer.example.test"
AUDIENCE = "orders"
KEY = generate_key("ES256", "workers-k1")
MINT = Issuer(KEY, ISSUER)

# One worker: "asgi" (uvicorn, Starlette) or "wsgi" (waitress, Flask).
WORKER = r"""
import logging, sys
kind, settings, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
logging.basicConfig(
    level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
)
from zt_middleware import public, requires

if kind == "asgi":
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from zt_middleware.adapters.asgi import ZeroTrustMiddleware

    @requires("orders:read")
    async def orders(request):
        return JSONResponse({"worker": kind})

    @requires("orders:write", one_time=True)
    async def confirm(request):
        return JSONResponse({"worker": kind})

    @public
    async def healthz(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[
        Route("/api/orders", orders),
        Route("/api/confirm", confirm, methods=["POST"]),
        Route("/healthz", healthz),
    ])
    app.add_middleware(ZeroTrustMiddleware, settings=settings)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
else:
    import waitress
    from flask import Flask, jsonify
    from zt_middleware.adapters.flask import ZeroTrust

    app = Flask("worker")

    @app.get("/api/orders")
    @requires("orders:read")
    def orders():
        return jsonify(worker=kind)

    @app.post("/api/confirm")
    @requires("orders:write", one_time=True)
    def confirm():
        return jsonify(worker=kind)

    @app.get("/healthz")
    @public
    def healthz():
        return jsonify(ok=True)

    ZeroTrust(app, settings)
    waitress.serve(app, host="127.0.0.1", port=port, threads=4, _quiet=True)
"""


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


class Workers:
    """An ASGI and a WSGI worker sharing one store, with an HTTP client."""

    def __init__(self, store_url: str, directory: Path) -> None:
        self.store_url = store_url
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "jwks.json").write_text(json.dumps(KEY.jwks()))
        self.settings = directory / "zt.toml"
        self.settings.write_text(
            "[zero_trust]\n"
            f"issuer = {json.dumps(ISSUER)}\n"
            f"audience = {json.dumps(AUDIENCE)}\n"
            f"jwks_file = {json.dumps(str(directory / 'jwks.json'))}\n"
            f"store = {json.dumps(store_url)}\n"
        )
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}
        self.http = httpx.Client(trust_env=False, timeout=10)

    @property
    def logs(self) -> str:
        return "".join((self.directory / f"{k}.log").read_text() for k in self.urls)

    def start(self) -> Workers:
        for kind in ("asgi", "wsgi"):
            port = free_port()
            with (self.directory / f"{kind}.log").open("wb") as log:
                self.processes[kind] = subprocess.Popen(  # noqa: S603
                    [sys.executable, "-c", WORKER, kind, str(self.settings), str(port)],
                    cwd=ROOT,
                    env=subprocess_env(),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.urls[kind] = f"http://127.0.0.1:{port}"
        for kind in self.urls:
            self._wait_until_up(kind)
        return self

    def stop(self) -> None:
        self.http.close()
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def get(self, token: str) -> list[tuple[int, str]]:
        """GET /api/orders on each worker: (status, reason or worker)."""
        return [
            self._answer(self.http.get(f"{url}/api/orders", headers=_auth(token)))
            for url in self.urls.values()
        ]

    def post(self, kind: str, token: str) -> tuple[int, str]:
        return self._answer(
            self.http.post(f"{self.urls[kind]}/api/confirm", headers=_auth(token))
        )

    @staticmethod
    def _answer(response: httpx.Response) -> tuple[int, str]:
        body = response.json()
        return response.status_code, body.get("reason") or body.get("worker")

    def _wait_until_up(self, kind: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.processes[kind].poll() is not None:
                raise RuntimeError(f"{kind} worker exited:\n{self.logs[-3000:]}")
            try:
                if self.http.get(f"{self.urls[kind]}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{kind} worker did not come up:\n{self.logs[-3000:]}")


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def issue(
    subject: str, *scopes: str, now: float | None = None, **claims: Any
) -> tuple[str, str]:
    """A token for the workers, and its jti."""
    jti = uuid.uuid4().hex
    minted = MINT.issue(
        subject,
        AUDIENCE,
        scopes=scopes or ("orders:read",),
        now=now,
        session_id=claims.pop("sid", None),
        extra={"jti": jti, **claims},
    )
    return minted, jti


def zt_revoke(*args: str) -> list[list[str]]:
    """Run the real command line in its own process; its lines, split."""
    done = subprocess.run(  # noqa: S603 - this interpreter, our arguments
        [sys.executable, "-m", "zt_middleware.cli", "revoke", *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


@pytest.fixture(scope="module", params=["redis", "sqlite"])
def workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    directory = tmp_path_factory.mktemp(f"workers-{request.param}")
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
    else:
        url = f"sqlite://{directory}/zt.db"
    running = Workers(url, directory).start()
    yield running
    running.stop()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def test_jti_revocation_holds_at_the_next_request_in_every_worker(
    workers: Workers,
) -> None:
    revoked, jti = issue(unique("alice"))
    kept, _ = issue(unique("alice"))
    assert workers.get(revoked) == [(200, "asgi"), (200, "wsgi")]

    [line] = zt_revoke("--jti", jti, "--store", workers.store_url)

    assert line[:2] == ["jti", jti]
    assert workers.get(revoked) == [(401, "token_revoked")] * 2
    assert workers.get(kept) == [(200, "asgi"), (200, "wsgi")]


def test_subject_revocation_holds_in_every_worker_for_older_tokens_only(
    workers: Workers,
) -> None:
    subject = unique("bob")
    older, _ = issue(subject)
    assert workers.get(older) == [(200, "asgi"), (200, "wsgi")]

    [line] = zt_revoke("--sub", subject, "--store", workers.store_url)
    revoked_at = datetime.fromisoformat(line[2].replace("Z", "+00:00")).timestamp()
    # iat has one-second resolution: a token of the next second is newer.
    newer, _ = issue(subject, now=revoked_at + 1)

    assert line[:2] == ["sub", subject]
    assert workers.get(older) == [(401, "subject_revoked")] * 2
    assert workers.get(newer) == [(200, "asgi"), (200, "wsgi")]


def test_session_revocation_holds_in_every_worker(workers: Workers) -> None:
    session = unique("sid")
    tokens = [issue(unique("carol"), sid=session)[0] for _ in range(2)]
    other, _ = issue(unique("carol"), sid=unique("sid"))

    zt_revoke("--sid", session, "--store", workers.store_url)

    for revoked in tokens:
        assert workers.get(revoked) == [(401, "session_revoked")] * 2
    assert workers.get(other) == [(200, "asgi"), (200, "wsgi")]


def test_service_revocation_holds_in_every_worker(workers: Workers) -> None:
    service = unique("svc:billing")
    credential, _ = issue(service)

    zt_revoke("--svc", service, "--store", workers.store_url)

    assert workers.get(credential) == [(401, "service_revoked")] * 2


def test_one_time_token_is_refused_on_its_second_use_in_the_other_worker(
    workers: Workers,
) -> None:
    once, _ = issue(unique("dave"), "orders:write")
    again, _ = issue(unique("dave"), "orders:write")

    assert workers.post("asgi", once) == (200, "asgi")
    assert workers.post("wsgi", once) == (401, "token_replayed")
    assert workers.post("wsgi", again) == (200, "wsgi")
    assert workers.post("asgi", again) == (401, "token_replayed")


def test_ordinary_token_works_for_many_requests_on_both_workers(
    workers: Workers,
) -> None:
    credential, _ = issue(unique("erin"))

    answers = [answer for _ in range(10) for answer in workers.get(credential)]

    assert set(answers) == {(200, "asgi"), (200, "wsgi")}


def test_revocation_list_shows_what_the_workers_enforce(workers: Workers) -> None:
    _, jti = issue(unique("frank"))
    zt_revoke("--jti", jti, "--store", workers.store_url)

    listed = zt_revoke("--list", "--store", workers.store_url)

    assert ["jti", jti] in [line[:2] for line in listed]


# -- the store goes away -----------------------------------------------------------


def test_redis_outage_gives_only_503s_until_it_is_back_and_loses_nothing(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis", persistent=True).start()
    running = Workers(server.url, tmp_path / "workers")
    try:
        running.start()
        good, _ = issue(unique("grace"))
        revoked, jti = issue(unique("grace"))
        zt_revoke("--jti", jti, "--store", server.url)
        assert running.get(good) == [(200, "asgi"), (200, "wsgi")]
        assert running.get(revoked) == [(401, "token_revoked")] * 2

        server.stop()
        during = [
            answer
            for _ in range(5)
            for t in (good, revoked)
            for answer in running.get(t)
        ]
        retry_after = running.http.get(
            f"{running.urls['wsgi']}/api/orders", headers=_auth(good)
        ).headers.get("retry-after")

        server.start()  # same port, same append-only file
        after = running.get(good) + running.get(revoked)
        logs = running.logs
    finally:
        running.stop()
        server.stop()

    assert set(during) == {(503, "store_unavailable")}
    assert retry_after == "5"
    assert after == [
        (200, "asgi"),
        (200, "wsgi"),
        (401, "token_revoked"),
        (401, "token_revoked"),
    ]
    assert (
        "ERROR zt_middleware.audit" in logs
        and '"reasons":["store_unavailable"]' in logs
    )
