"""The step-up endpoint: a TOTP code in, a stronger short-lived token out.

Guards here read conftest's frozen clock and so does their memory store, so
lock-outs expire with ``clock.advance``. Every guard challenges every
request (``risk_challenge_at`` 0) unless it carries a fresh step-up token.
The adapter tests at the end run on the real clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pyotp
import pytest
from cryptography.fernet import Fernet

from zt_middleware.context import RequestContext
from zt_middleware.decision import Decision, Outcome
from zt_middleware.errors import ConfigurationError
from zt_middleware.guard import Guard
from zt_middleware.issuer import Issuer, SigningKey, generate_key
from zt_middleware.session import device_fingerprint
from zt_middleware.stepup_web import MAX_BODY, safe_next
from zt_middleware.stores.memory import MemoryStore
from zt_middleware.totp import matching_step, secret_key

ISSUER = "https://issuer.example.test"
AUDIENCE = "https://orders.example.test"
PATH = "/.zt/step-up"
HOST = "orders.example.test"
ORIGIN = f"https://{HOST}"
UA = "Mozilla/5.0 (X11; Linux x86_64) TestBrowser/1.0"
OTHER_UA = "Mozilla/5.0 (Macintosh) OtherBrowser/2.0"
ACR = "urn:zt:acr:mfa"
STEP = 30

Answer = tuple[int, dict[str, str], bytes]


# -- fixtures and helpers ----------------------------------------------------------


@pytest.fixture
def store(clock: Any) -> MemoryStore:
    return MemoryStore(clock=clock)


@pytest.fixture
def guard_for(
    base_settings: dict[str, Any], clock: Any, store: MemoryStore
) -> Callable[..., Guard]:
    """``guard_for(**settings)``: a challenging guard on the shared store."""

    def build(**settings: Any) -> Guard:
        values = {**base_settings, "risk_challenge_at": 0, **settings}
        return Guard(values, store=store, clock=clock)

    return build


@pytest.fixture
def guard(guard_for: Callable[..., Guard]) -> Guard:
    return guard_for()


@pytest.fixture
def secret(guard: Guard) -> str:
    return guard.step_up_flow.enrol("alice").secret


def session(mint: Callable[..., str], sid: str = "s1", **options: Any) -> str:
    return mint(scopes=["orders:read"], session_id=sid, **options)


def code_at(secret: str, t: float) -> str:
    return pyotp.TOTP(secret).at(t)


def wrong_code(secret: str, t: float) -> str:
    valid = {code_at(secret, t + offset) for offset in (-STEP, 0, STEP)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def answer(response: tuple[int, list[tuple[str, str]], bytes]) -> Answer:
    status, headers, body = response
    return status, dict(headers), body


def api_post(
    guard: Guard,
    token: str,
    code: Any,
    *,
    ua: str = UA,
    headers: dict[str, str] | None = None,
) -> Answer:
    sent = {
        "authorization": f"Bearer {token}",
        "content-type": "application/json",
        "user-agent": ua,
        "host": HOST,
        **(headers or {}),
    }
    ctx = RequestContext("POST", PATH, sent, client="198.51.100.7")
    return answer(guard.step_up(ctx, json.dumps({"code": code}).encode()))


def form_post(
    guard: Guard,
    token: str,
    code: str,
    next_path: str = "/api/orders",
    *,
    origin: str | None = ORIGIN,
    referer: str | None = None,
) -> Answer:
    sent = {
        "cookie": f"zt_session={token}",
        "content-type": "application/x-www-form-urlencoded",
        "accept": "text/html,application/xhtml+xml",
        "user-agent": UA,
        "host": HOST,
    }
    if origin is not None:
        sent["origin"] = origin
    if referer is not None:
        sent["referer"] = referer
    body = f"code={code}&next={_form_quote(next_path)}".encode()
    return answer(guard.step_up(RequestContext("POST", PATH, sent), body))


def _form_quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def stepped_up(guard: Guard, token: str, secret: str, clock: Any, **kw: Any) -> str:
    status, _, body = api_post(guard, token, code_at(secret, clock()), **kw)
    assert status == 200, body
    access_token: str = json.loads(body)["access_token"]
    return access_token


def orders(
    guard: Guard,
    token: str,
    *,
    step_up: str | None = None,
    ua: str = UA,
    cookie: str | None = None,
) -> Decision:
    headers = {"user-agent": ua}
    if cookie is not None:
        headers["cookie"] = cookie
    else:
        headers["authorization"] = f"Bearer {token}"
    if step_up is not None:
        headers["zt-step-up"] = step_up
    return guard.decide(RequestContext("GET", "/api/orders", headers))


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def audited(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The audit events logged, as their JSON reads (reasons as lists)."""
    return [
        {**r.zt_event, "reasons": list(r.zt_event["reasons"])}
        for r in caplog.records
        if hasattr(r, "zt_event")
    ]


def reason_of(body: bytes) -> str:
    reason: str = json.loads(body)["reason"]
    return reason


# -- minting ---------------------------------------------------------------------


def test_a_valid_code_mints_a_stronger_token_bound_to_the_session_and_device(
    guard: Guard,
    secret: str,
    mint: Callable[..., str],
    clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = session(mint, extra={"amr": ["pwd"]})

    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        status, headers, body = api_post(guard, token, code_at(secret, clock()))

    minted = json.loads(body)
    claims = claims_of(minted["access_token"])
    parent = claims_of(token)
    now = int(clock())
    assert status == 200
    assert headers["cache-control"] == "no-store"
    assert minted["token_type"] == "Bearer"
    assert (minted["expires_in"], minted["acr"]) == (300, ACR)
    assert claims["iss"] == guard.settings.step_up_token_issuer
    assert (claims["sub"], claims["aud"], claims["sid"]) == ("alice", AUDIENCE, "s1")
    assert (claims["acr"], claims["amr"]) == (ACR, ["pwd", "otp"])
    assert claims["auth_time"] == claims["iat"] == now
    assert claims["exp"] == now + 300
    assert claims["token_use"] == "step_up"
    assert claims["scope"] == "orders:read"
    assert claims["jti"] and claims["jti"] != parent["jti"]
    assert claims["zt_parent"] == parent["jti"]
    assert claims["zt_dev"] == device_fingerprint({"user-agent": UA}, ["user-agent"])
    assert jwt.get_unverified_header(minted["access_token"])["kid"] == "zt-step-up"
    event = audited(caplog)[-1]
    assert event["reasons"] == ["step_up_succeeded"]
    assert event["token_id"] == claims["jti"]


def test_the_token_lives_no_longer_than_max_token_lifetime(
    guard_for: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    guard = guard_for(max_token_lifetime=120)
    secret = guard.step_up_flow.enrol("alice").secret

    status, _, body = api_post(
        guard, session(mint, lifetime=120), code_at(secret, clock())
    )

    claims = claims_of(json.loads(body)["access_token"])
    assert status == 200
    assert json.loads(body)["expires_in"] == 120
    assert claims["exp"] - claims["iat"] == 120


def test_the_token_never_outlives_the_session_token_beside_it(
    guard: Guard, secret: str, mint: Callable[..., str], clock: Any
) -> None:
    status, _, body = api_post(
        guard, session(mint, lifetime=45), code_at(secret, clock())
    )

    assert status == 200
    assert json.loads(body)["expires_in"] == 45


def test_the_step_up_token_answers_the_risk_challenge_until_it_is_too_old(
    guard_for: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    guard = guard_for(step_up_max_age=60)
    secret = guard.step_up_flow.enrol("alice").secret
    token = session(mint)
    stronger = stepped_up(guard, token, secret, clock)

    plain = orders(guard, token)
    beside = orders(guard, token, step_up=stronger)
    alone = orders(guard, stronger)
    clock.advance(61)
    stale = orders(guard, token, step_up=stronger)

    assert (plain.outcome, plain.reason) == (Outcome.CHALLENGE, "step_up_required")
    assert beside.allowed and beside.principal is not None
    assert beside.principal.acr == ACR
    assert alone.allowed
    assert (stale.outcome, stale.reason) == (Outcome.CHALLENGE, "step_up_required")


def test_a_browser_pairs_the_step_up_cookie_with_its_session_cookie(
    guard_for: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    guard = guard_for(cookie_name="zt_session")
    secret = guard.step_up_flow.enrol("alice").secret
    token = session(mint)

    status, headers, _ = form_post(guard, token, code_at(secret, clock()))
    stronger = headers["set-cookie"].split(";")[0].split("=", 1)[1]
    before = orders(guard, token, cookie=f"zt_session={token}")
    after = orders(guard, token, cookie=f"zt_session={token}; zt_step_up={stronger}")

    assert status == 303
    assert before.outcome is Outcome.CHALLENGE
    assert after.allowed


# -- case 1: each code once ---------------------------------------------------------


def test_a_code_accepted_once_is_refused_in_its_window_and_the_next(
    guard: Guard,
    secret: str,
    mint: Callable[..., str],
    clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = session(mint)
    code = code_at(secret, clock())

    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        first = api_post(guard, token, code)
        same_window = api_post(guard, token, code)
        clock.advance(STEP)
        # One step of drift: without replay protection it would still pass.
        assert matching_step(secret, code, clock()) is not None
        next_window = api_post(guard, token, code)

    assert first[0] == 200
    assert (same_window[0], reason_of(same_window[2])) == (401, "totp_replayed")
    assert (next_window[0], reason_of(next_window[2])) == (401, "totp_replayed")
    assert [e["reasons"] for e in audited(caplog)] == [
        ["step_up_succeeded"],
        ["totp_replayed"],
        ["totp_replayed"],
    ]


def test_an_older_code_of_the_drift_window_is_refused_after_a_newer_one(
    guard: Guard, secret: str, mint: Callable[..., str], clock: Any
) -> None:
    newer = api_post(guard, session(mint), code_at(secret, clock()))
    older = api_post(guard, session(mint, "s2"), code_at(secret, clock() - STEP))

    assert newer[0] == 200
    assert (older[0], reason_of(older[2])) == (401, "totp_replayed")


def test_five_workers_sharing_a_memory_store_let_exactly_one_code_through(
    guard_for: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    workers = [guard_for() for _ in range(5)]
    secret = workers[0].step_up_flow.enrol("alice").secret
    token = session(mint)
    code = code_at(secret, clock())
    barrier = threading.Barrier(5)
    statuses: list[int] = []
    lock = threading.Lock()

    def submit(worker: Guard) -> None:
        barrier.wait(timeout=10)
        status = api_post(worker, token, code)[0]
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=submit, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(statuses) == [200, 401, 401, 401, 401]


def _submit_in_process(
    settings: dict[str, Any],
    token: str,
    code: str,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One worker process: its own guard on the shared SQLite file."""
    guard = Guard(settings)
    try:
        ready.release()
        go.wait(30)
        results.put(api_post(guard, token, code)[0])
    finally:
        guard.store.close()


def test_five_processes_sharing_a_sqlite_file_let_exactly_one_code_through(
    base_settings: dict[str, Any], rsa_key: SigningKey, tmp_path: Path
) -> None:
    key_file = tmp_path / "step-up.pem"
    key_file.write_bytes(generate_key("ES256").private_pem())
    settings = {
        **base_settings,
        "store": f"sqlite:///{tmp_path / 'zt.db'}",
        "step_up_key_file": str(key_file),
    }
    enrolling = Guard(settings)
    secret = enrolling.step_up_flow.enrol("alice").secret
    enrolling.store.close()
    token = Issuer(rsa_key, ISSUER).issue(
        "alice", AUDIENCE, scopes=["orders:read"], session_id="s1"
    )
    code = pyotp.TOTP(secret).now()

    # spawn, not fork: the parent has threads (SQLite's, the event loop's).
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    workers = [
        context.Process(
            target=_submit_in_process, args=(settings, token, code, ready, go, results)
        )
        for _ in range(5)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert ready.acquire(timeout=60)
    go.set()
    statuses = sorted(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)

    assert all(worker.exitcode == 0 for worker in workers)
    assert statuses == [200, 401, 401, 401, 401]


# -- lock-out ----------------------------------------------------------------------


def test_wrong_codes_lock_out_the_session_and_subject_and_the_audit_says_so(
    guard_for: Callable[..., Guard],
    mint: Callable[..., str],
    clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = guard_for(totp_max_attempts=3, totp_lockout=600)
    secret = guard.step_up_flow.enrol("alice").secret
    token = session(mint)
    wrong = wrong_code(secret, clock())

    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        tries = [api_post(guard, token, wrong) for _ in range(3)]
        right_code = api_post(guard, token, code_at(secret, clock()))
        other_session = api_post(guard, session(mint, "s2"), code_at(secret, clock()))
    clock.advance(601)
    after = api_post(guard, session(mint), code_at(secret, clock()))

    assert [t[0] for t in tries] == [401, 401, 429]
    assert tries[2][1]["retry-after"] == "600"
    assert (right_code[0], reason_of(right_code[2])) == (429, "totp_locked_out")
    assert other_session[0] == 429
    assert after[0] == 200
    reasons = [e["reasons"] for e in audited(caplog)]
    assert reasons == [
        ["totp_invalid"],
        ["totp_invalid"],
        ["totp_invalid", "totp_locked_out"],
        ["totp_locked_out"],
        ["totp_locked_out"],
    ]


def test_failures_are_also_counted_per_session(
    guard_for: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    guard = guard_for(totp_max_attempts=3)
    secret = guard.step_up_flow.enrol("alice").secret
    attacker, owner = session(mint, "s-attacker"), session(mint, "s-owner")
    wrong = wrong_code(secret, clock())

    api_post(guard, attacker, wrong)
    api_post(guard, attacker, wrong)
    # The owner's success clears the subject's count, not the attacker's.
    assert api_post(guard, owner, code_at(secret, clock()))[0] == 200
    third = api_post(guard, attacker, wrong)

    assert third[0] == 429


# -- case 2: another session, another device --------------------------------------


def test_a_step_up_token_beside_another_sessions_token_is_refused_and_audited(
    guard_for: Callable[..., Guard],
    mint: Callable[..., str],
    clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = guard_for(cookie_name="zt_session")
    secret = guard.step_up_flow.enrol("alice").secret
    stronger = stepped_up(guard, session(mint, "s1"), secret, clock)
    other = session(mint, "s2")

    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        by_header = orders(guard, other, step_up=stronger)
        by_cookie = orders(
            guard, other, cookie=f"zt_session={other}; zt_step_up={stronger}"
        )
        bob = orders(guard, mint("bob", scopes=["orders:read"]), step_up=stronger)

    for refused in (by_header, by_cookie, bob):
        assert (refused.status, refused.reason) == (401, "step_up_session_mismatch")
    events = audited(caplog)
    assert [e["reasons"] for e in events] == [["step_up_session_mismatch"]] * 3
    assert events[0]["session_id"] == "s2"


def test_a_step_up_token_from_another_device_is_refused_and_audited(
    guard: Guard,
    secret: str,
    mint: Callable[..., str],
    clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = session(mint)
    stronger = stepped_up(guard, token, secret, clock, ua=UA)

    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        same_device = orders(guard, token, step_up=stronger, ua=UA)
        beside = orders(guard, token, step_up=stronger, ua=OTHER_UA)
        alone = orders(guard, stronger, ua=OTHER_UA)

    assert same_device.allowed
    for refused in (beside, alone):
        assert (refused.status, refused.reason) == (401, "step_up_device_mismatch")
    reasons = [e["reasons"] for e in audited(caplog)]
    assert reasons[1:] == [["step_up_device_mismatch"]] * 2


# -- one-time step-up tokens ------------------------------------------------------


def test_a_one_time_step_up_token_is_refused_on_its_second_use(
    guard_for: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    guard = guard_for(step_up_one_time=True)
    secret = guard.step_up_flow.enrol("alice").secret
    token = session(mint)
    stronger = stepped_up(guard, token, secret, clock)

    first = orders(guard, token, step_up=stronger)
    second = orders(guard, token, step_up=stronger)

    assert first.allowed
    assert (second.status, second.reason) == (401, "token_replayed")


def test_without_one_time_the_step_up_token_serves_until_it_expires(
    guard: Guard, secret: str, mint: Callable[..., str], clock: Any
) -> None:
    token = session(mint)
    stronger = stepped_up(guard, token, secret, clock)

    assert orders(guard, token, step_up=stronger).allowed
    assert orders(guard, token, step_up=stronger).allowed


# -- who may step up ----------------------------------------------------------------


def test_a_revoked_session_cannot_step_up(
    guard: Guard, secret: str, mint: Callable[..., str], clock: Any
) -> None:
    guard.revoke("sid", "s1")

    status, _, body = api_post(guard, session(mint), code_at(secret, clock()))

    assert (status, reason_of(body)) == (401, "session_revoked")


def test_a_step_up_token_cannot_be_stepped_up_again(
    guard: Guard, secret: str, mint: Callable[..., str], clock: Any
) -> None:
    stronger = stepped_up(guard, session(mint), secret, clock)
    clock.advance(STEP)

    status, _, body = api_post(guard, stronger, code_at(secret, clock()))

    assert (status, reason_of(body)) == (401, "step_up_invalid")


def test_a_session_token_without_sid_cannot_step_up(
    guard: Guard,
    secret: str,
    issuer: Issuer,
    claims: Callable[..., dict[str, Any]],
    clock: Any,
) -> None:
    token = issuer.sign(claims(jti="j1"))

    status, _, body = api_post(guard, token, code_at(secret, clock()))

    assert (status, reason_of(body)) == (401, "claim_missing")


def test_no_session_token_is_401_and_a_bad_one_is_refused_as_a_token(
    guard: Guard, secret: str, mint: Callable[..., str], clock: Any
) -> None:
    ctx = RequestContext(
        "POST", PATH, {"content-type": "application/json", "host": HOST}
    )
    missing = answer(guard.step_up(ctx, b'{"code": "123456"}'))
    forged = api_post(guard, session(mint)[:-4] + "AAAA", code_at(secret, clock()))

    assert (missing[0], reason_of(missing[2])) == (401, "missing_token")
    assert (forged[0], reason_of(forged[2])) == (401, "bad_signature")


def test_a_subject_with_no_enrolment_is_403_and_audited(
    guard: Guard, mint: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        status, _, body = api_post(guard, session(mint), "123456")

    assert (status, reason_of(body)) == (403, "totp_not_enrolled")
    assert audited(caplog)[-1]["reasons"] == ["totp_not_enrolled"]


# -- the browser's form --------------------------------------------------------------


@pytest.fixture
def browser_guard(guard_for: Callable[..., Guard]) -> Guard:
    return guard_for(cookie_name="zt_session")


def test_a_form_post_sets_a_strict_secure_httponly_cookie_and_goes_back(
    browser_guard: Guard, mint: Callable[..., str], clock: Any
) -> None:
    secret = browser_guard.step_up_flow.enrol("alice").secret

    status, headers, body = form_post(
        browser_guard, session(mint), code_at(secret, clock()), "/api/orders?page=2"
    )

    name, _, rest = headers["set-cookie"].partition("=")
    value, *attributes = rest.split("; ")
    assert status == 303 and body == b""
    assert headers["location"] == "/api/orders?page=2"
    assert name == "zt_step_up"
    assert claims_of(value)["token_use"] == "step_up"
    assert attributes == [
        "Path=/",
        "Max-Age=300",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
    ]
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/\t/evil.example",
        "/ok\r\nSet-Cookie: x=1",
        "/\x00",
        "evil.example",
        "",
    ],
)
def test_a_next_that_could_leave_the_site_falls_back_to_the_root(
    browser_guard: Guard, mint: Callable[..., str], clock: Any, next_path: str
) -> None:
    secret = browser_guard.step_up_flow.enrol("alice").secret

    status, headers, _ = form_post(
        browser_guard, session(mint), code_at(secret, clock()), next_path
    )

    assert status == 303
    assert headers["location"] == "/"
    assert safe_next(next_path) == "/"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("/account", "/account"),
        ("/a/b?x=1&y=2#top", "/a/b?x=1&y=2#top"),
        ("/café au lait", "/caf%C3%A9%20au%20lait"),
        ("/.zt/step-up", "/"),
    ],
)
def test_a_same_site_next_is_kept_and_made_ascii(
    browser_guard: Guard, mint: Callable[..., str], clock: Any, sent: str, kept: str
) -> None:
    secret = browser_guard.step_up_flow.enrol("alice").secret

    status, headers, _ = form_post(
        browser_guard, session(mint), code_at(secret, clock()), sent
    )

    assert (status, headers["location"]) == (303, kept)


@pytest.mark.parametrize(
    ("origin", "referer"),
    [
        (None, None),
        ("https://evil.example", None),
        ("null", f"{ORIGIN}/api/orders"),
        (f"{ORIGIN}.evil.example", None),
    ],
)
def test_a_form_post_from_another_site_is_403_and_mints_nothing(
    browser_guard: Guard,
    mint: Callable[..., str],
    clock: Any,
    origin: str | None,
    referer: str | None,
) -> None:
    secret = browser_guard.step_up_flow.enrol("alice").secret
    code = code_at(secret, clock())

    status, headers, body = form_post(
        browser_guard, session(mint), code, origin=origin, referer=referer
    )
    then = form_post(browser_guard, session(mint), code)

    assert status == 403
    assert "set-cookie" not in headers
    assert b"This form must be sent from this site." in body
    assert then[0] == 303  # the code was not spent by the forged post


def test_a_same_site_referer_stands_in_for_a_missing_origin(
    browser_guard: Guard, mint: Callable[..., str], clock: Any
) -> None:
    secret = browser_guard.step_up_flow.enrol("alice").secret

    status, _, _ = form_post(
        browser_guard,
        session(mint),
        code_at(secret, clock()),
        origin=None,
        referer=f"{ORIGIN}/api/orders",
    )

    assert status == 303


def test_a_json_post_riding_on_the_session_cookie_must_be_same_site(
    browser_guard: Guard, mint: Callable[..., str], clock: Any
) -> None:
    secret = browser_guard.step_up_flow.enrol("alice").secret
    headers = {
        "cookie": f"zt_session={session(mint)}",
        "content-type": "application/json",
        "host": HOST,
    }
    body = json.dumps({"code": code_at(secret, clock())}).encode()

    cross = answer(
        browser_guard.step_up(
            RequestContext("POST", PATH, {**headers, "origin": "https://evil.example"}),
            body,
        )
    )
    same = answer(
        browser_guard.step_up(
            RequestContext("POST", PATH, {**headers, "origin": ORIGIN}), body
        )
    )

    assert (cross[0], reason_of(cross[2])) == (403, "step_up_cross_origin")
    assert same[0] == 200


def test_a_wrong_code_from_the_browser_shows_the_page_again_with_a_message(
    browser_guard: Guard, mint: Callable[..., str], clock: Any
) -> None:
    secret = browser_guard.step_up_flow.enrol("alice").secret

    status, headers, body = form_post(
        browser_guard, session(mint), wrong_code(secret, clock()), "/api/orders"
    )

    page = body.decode()
    assert status == 401
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "That code is not right." in page
    assert 'name="next" value="/api/orders"' in page
    assert "set-cookie" not in headers


def test_a_locked_browser_sees_the_page_with_429_and_retry_after(
    guard_for: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    guard = guard_for(cookie_name="zt_session", totp_max_attempts=1, totp_lockout=120)
    secret = guard.step_up_flow.enrol("alice").secret

    status, headers, body = form_post(guard, session(mint), wrong_code(secret, clock()))

    assert status == 429
    assert headers["retry-after"] == "120"
    assert "Too many wrong codes. Try again in 2 minute(s)." in body.decode()


# -- the page ------------------------------------------------------------------------


def _challenged(guard: Guard, token: str, path: str, accept: str) -> Answer:
    ctx = RequestContext(
        "GET", path, {"authorization": f"Bearer {token}", "accept": accept}
    )
    return answer(guard.render(guard.decide(ctx), ctx))


def test_a_challenged_browser_gets_the_step_up_page_and_an_api_gets_json(
    guard: Guard, mint: Callable[..., str]
) -> None:
    token = session(mint)

    status, headers, body = _challenged(guard, token, "/api/orders", "text/html")
    api = _challenged(guard, token, "/api/orders", "application/json")

    page = body.decode()
    assert status == 401
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-length"] == str(len(body))
    assert headers["content-security-policy"].startswith(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    )
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert 'error="insufficient_user_authentication"' in headers["www-authenticate"]
    assert f'<form method="post" action="{PATH}">' in page
    assert 'autocomplete="one-time-code"' in page
    assert 'inputmode="numeric"' in page
    assert '<input type="hidden" name="next" value="/api/orders">' in page
    assert "<script" not in page
    assert api[1]["content-type"] == "application/json"
    assert reason_of(api[2]) == "step_up_required"


def test_the_page_escapes_the_path_it_returns_to_and_its_message(
    guard: Guard,
) -> None:
    flow = guard.step_up_flow

    page = flow.page(
        next_path='/x"><script>alert(1)</script>', message="<b>bold</b>"
    ).decode()

    assert "<script>" not in page and "<b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert 'value="/x%22%3E%3Cscript%3Ealert(1)%3C/script%3E"' in page


def test_get_serves_the_page_and_is_audited(
    guard: Guard, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="zt_middleware.audit"):
        status, headers, body = answer(
            guard.step_up(RequestContext("GET", PATH, {"accept": "text/html"}), b"")
        )

    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert b"Confirm it's you" in body
    assert audited(caplog)[-1]["reasons"] == ["step_up_page"]


@pytest.mark.parametrize(
    ("method", "content_type", "body", "status", "reason"),
    [
        ("PUT", "application/json", b"{}", 405, "step_up_malformed"),
        ("POST", "application/json", b"x" * (MAX_BODY + 1), 413, "body_too_large"),
        ("POST", "text/plain", b'{"code": "123456"}', 415, "step_up_malformed"),
        ("POST", "application/json", b'{"code": 123456}', 400, "step_up_malformed"),
        ("POST", "application/json", b"[1, 2]", 400, "step_up_malformed"),
        ("POST", "application/json", b"\xff\xfe", 400, "step_up_malformed"),
        ("POST", "application/json", b"{}", 400, "step_up_malformed"),
    ],
)
def test_malformed_requests_are_refused_before_any_code_is_checked(
    guard: Guard,
    secret: str,
    mint: Callable[..., str],
    method: str,
    content_type: str,
    body: bytes,
    status: int,
    reason: str,
) -> None:
    headers = {
        "authorization": f"Bearer {session(mint)}",
        "content-type": content_type,
        "host": HOST,
    }

    got = answer(guard.step_up(RequestContext(method, PATH, headers), body))

    assert (got[0], reason_of(got[2])) == (status, reason)
    if status == 405:
        assert got[1]["allow"] == "GET, HEAD, POST"


def test_a_declared_length_over_the_cap_is_413_even_if_less_was_read(
    guard: Guard, mint: Callable[..., str]
) -> None:
    headers = {
        "authorization": f"Bearer {session(mint)}",
        "content-type": "application/json",
        "content-length": str(10 * MAX_BODY),
    }

    got = answer(guard.step_up(RequestContext("POST", PATH, headers), b"{}"))

    assert got[0] == 413


# -- secrets stay secret --------------------------------------------------------------


def test_no_code_secret_or_token_reaches_the_logs_or_a_repr(
    guard: Guard, mint: Callable[..., str], clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    token = session(mint)
    with caplog.at_level(logging.DEBUG):
        enrolment = guard.step_up_flow.enrol("alice")
        wrong = wrong_code(enrolment.secret, clock())
        api_post(guard, token, wrong)
        good = code_at(enrolment.secret, clock())
        stronger = stepped_up(guard, token, enrolment.secret, clock)
        orders(guard, token, step_up=stronger)

    shown = caplog.text + repr(guard) + repr(guard.step_up_flow) + repr(enrolment)
    for secret_value in (enrolment.secret, wrong, good, token, stronger):
        assert secret_value not in shown
    assert "[secure]" in repr(guard.step_up_flow.key)


def test_a_missing_encryption_key_is_warned_about_naming_the_setting(
    guard_for: Callable[..., Guard],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        flow = guard_for().step_up_flow
        sealed = guard_for(totp_encryption_key=Fernet.generate_key().decode())
        sealed.step_up_flow  # noqa: B018 - built for its warnings

    warned = [
        r.getMessage()
        for r in caplog.records
        if "totp_encryption_key" in r.getMessage()
    ]
    assert len(warned) == 1
    assert "secrets='plain'" in repr(flow)


def test_secrets_sealed_with_the_configured_key_verify(
    guard_for: Callable[..., Guard],
    store: MemoryStore,
    mint: Callable[..., str],
    clock: Any,
) -> None:
    guard = guard_for(totp_encryption_key=Fernet.generate_key().decode())
    secret = guard.step_up_flow.enrol("alice").secret

    status, _, _ = api_post(guard, session(mint), code_at(secret, clock()))

    stored = store.get(secret_key("alice")) or b""
    assert status == 200
    assert stored.startswith(b"fernet:") and secret.encode() not in stored


def test_a_secret_that_does_not_decrypt_fails_closed_with_503(
    guard_for: Callable[..., Guard],
    mint: Callable[..., str],
    clock: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    enrolling = guard_for(totp_encryption_key=Fernet.generate_key().decode())
    secret = enrolling.step_up_flow.enrol("alice").secret
    other = guard_for(totp_encryption_key=Fernet.generate_key().decode())

    with caplog.at_level(logging.INFO):
        status, _, body = api_post(other, session(mint), code_at(secret, clock()))

    assert (status, reason_of(body)) == (503, "totp_secret_unreadable")
    assert "totp_encryption_key" in caplog.text


# -- the signing key -----------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "EdDSA"])
def test_a_shared_key_file_lets_another_worker_verify_before_it_mints(
    guard_for: Callable[..., Guard],
    mint: Callable[..., str],
    clock: Any,
    tmp_path: Path,
    algorithm: str,
) -> None:
    key_file = tmp_path / "step-up.pem"
    key_file.write_bytes(generate_key(algorithm).private_pem())
    minting = guard_for(step_up_key_file=str(key_file))
    verifying = guard_for(step_up_key_file=str(key_file))
    alone = guard_for()
    secret = minting.step_up_flow.enrol("alice").secret
    token = session(mint)
    stronger = stepped_up(minting, token, secret, clock)

    shared = orders(verifying, token, step_up=stronger)
    own_key = orders(alone, token, step_up=stronger)

    assert jwt.get_unverified_header(stronger)["alg"] == algorithm
    assert shared.allowed
    # Without the shared file a worker has no step-up key at all.
    assert (own_key.status, own_key.reason) == (401, "unknown_kid")


def test_without_a_key_file_the_generated_key_is_warned_about(
    guard: Guard, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="zt_middleware.stepup"):
        flow = guard.step_up_flow

    assert flow.key.algorithm == "ES256"
    assert "step_up_key_file is not set" in caplog.text


@pytest.mark.parametrize(
    "content", [None, b"not a pem", generate_key("ES256").public_pem()]
)
def test_a_key_file_that_is_missing_or_not_a_private_key_is_refused_at_start(
    guard_for: Callable[..., Guard], tmp_path: Path, content: bytes | None
) -> None:
    key_file = tmp_path / "step-up.pem"
    if content is not None:
        key_file.write_bytes(content)

    with pytest.raises(ConfigurationError, match="step_up_key_file"):
        guard_for(step_up_key_file=str(key_file))


def test_step_up_tokens_carry_the_configured_typ(
    guard_for: Callable[..., Guard],
    rsa_key: SigningKey,
    clock: Any,
) -> None:
    guard = guard_for(token_type="at+jwt")
    secret = guard.step_up_flow.enrol("alice").secret
    token = Issuer(rsa_key, ISSUER).issue(
        "alice",
        AUDIENCE,
        scopes=["orders:read"],
        session_id="s1",
        headers={"typ": "at+jwt"},
        now=clock(),
    )

    stronger = stepped_up(guard, token, secret, clock)

    assert jwt.get_unverified_header(stronger)["typ"] == "at+jwt"
    assert orders(guard, token, step_up=stronger).allowed


def test_the_async_twins_drive_the_same_flow(
    guard: Guard, mint: Callable[..., str], clock: Any
) -> None:
    async def run() -> tuple[int, list[tuple[str, str]], bytes]:
        enrolment = await guard.step_up_flow.aenrol("alice")
        headers = {
            "authorization": f"Bearer {session(mint)}",
            "content-type": "application/json",
            "host": HOST,
        }
        body = json.dumps({"code": code_at(enrolment.secret, clock())}).encode()
        return await guard.astep_up(RequestContext("POST", PATH, headers), body)

    status, _, body = asyncio.run(run())

    assert status == 200
    assert claims_of(json.loads(body)["access_token"])["acr"] == ACR


# -- through the adapters (real clock) ---------------------------------------------------

ADAPTER_KEY = generate_key("ES256", "adapters-k1")
ADAPTER_MINT = Issuer(ADAPTER_KEY, ISSUER)


def adapter_settings(**extra: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "jwks": ADAPTER_KEY.jwks(),
        "risk_challenge_at": 0,
        "routes": [
            {"path": "/api/orders", "methods": ["GET"], "scopes": ["orders:read"]}
        ],
        **extra,
    }


def adapter_session() -> str:
    return ADAPTER_MINT.issue(
        "alice", AUDIENCE, scopes=["orders:read"], session_id="s1"
    )


def test_asgi_serves_the_endpoint_and_the_page_before_the_app() -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from zt_middleware.adapters.asgi import ZeroTrustMiddleware

    seen: list[str] = []

    async def anything(request: Request) -> PlainTextResponse:
        seen.append(request.url.path)
        return PlainTextResponse("the app")

    app = Starlette(routes=[Route("/{path:path}", anything, methods=["GET", "POST"])])
    guard = Guard(adapter_settings())
    app.add_middleware(ZeroTrustMiddleware, guard=guard)
    secret = guard.step_up_flow.enrol("alice").secret
    client = TestClient(app, base_url=f"https://{HOST}")
    token = adapter_session()
    auth = {"authorization": f"Bearer {token}"}

    page = client.get("/api/orders", headers={**auth, "accept": "text/html"})
    minted = client.post(PATH, json={"code": pyotp.TOTP(secret).now()}, headers=auth)
    stronger = minted.json()["access_token"]
    allowed = client.get("/api/orders", headers={**auth, "zt-step-up": stronger})
    shown = client.get(PATH)
    chunks = (b"x" * 1024 for _ in range(64))
    too_large = client.post(
        PATH, content=chunks, headers={**auth, "content-type": "application/json"}
    )

    assert page.status_code == 401
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "one-time-code" in page.text
    assert minted.status_code == 200
    assert allowed.status_code == 200 and allowed.text == "the app"
    assert shown.status_code == 200 and "Confirm it's you" in shown.text
    assert too_large.status_code == 413
    assert seen == ["/api/orders"]


def _wsgi_app(
    environ: dict[str, Any], start_response: Callable[..., Any]
) -> list[bytes]:
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"the app"]


def test_wsgi_serves_the_endpoint_with_form_and_json() -> None:
    from webtest import TestApp

    from zt_middleware.adapters.wsgi import ZeroTrustWSGIMiddleware

    guard = Guard(adapter_settings(cookie_name="zt_session"))
    secret = guard.step_up_flow.enrol("alice").secret
    app = TestApp(ZeroTrustWSGIMiddleware(_wsgi_app, guard=guard))
    token = adapter_session()
    app.set_cookie("zt_session", token)

    page = app.get("/api/orders", headers={"Accept": "text/html"}, status=401)
    form = page.forms[0]
    form["code"] = pyotp.TOTP(secret).now()
    redirected = form.submit(headers={"Origin": "http://localhost:80"}, status=303)
    app.reset()
    api = app.post(
        PATH,
        json.dumps({"code": "000000"}),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        },
        status=401,
    )

    assert redirected.headers["Location"].endswith("/api/orders")
    assert "SameSite=Strict" in redirected.headers["Set-Cookie"]
    assert api.json["reason"] in ("totp_invalid", "totp_replayed")


def test_flask_serves_the_endpoint_before_routing_refuses_it() -> None:
    from flask import Flask
    from webtest import TestApp

    from zt_middleware.adapters.flask import ZeroTrust

    flask_app = Flask(__name__)

    @flask_app.get("/api/orders")
    def flask_orders() -> str:
        return "the app"

    ZeroTrust(flask_app, adapter_settings())
    guard = ZeroTrust.guard(flask_app)
    secret = guard.step_up_flow.enrol("alice").secret
    app = TestApp(flask_app)
    auth = {"Authorization": f"Bearer {adapter_session()}"}

    page = app.get("/api/orders", headers={**auth, "Accept": "text/html"}, status=401)
    minted = app.post(
        PATH,
        json.dumps({"code": pyotp.TOTP(secret).now()}),
        headers={**auth, "Content-Type": "application/json"},
    )
    allowed = app.get(
        "/api/orders", headers={**auth, "ZT-Step-Up": minted.json["access_token"]}
    )
    too_large = app.post(
        PATH,
        b"x" * (MAX_BODY + 10),
        headers={**auth, "Content-Type": "application/json"},
        status=413,
    )

    assert "one-time-code" in page.text
    assert allowed.text == "the app"
    assert too_large.json["reason"] == "body_too_large"


@pytest.fixture
def django_ready() -> None:
    import os

    import django

    os.environ.setdefault(
        "DJANGO_SETTINGS_MODULE", "integrations.registry_django.settings"
    )
    django.setup()


@pytest.mark.usefixtures("django_ready")
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_django_serves_the_endpoint_sync_and_async(mode: str) -> None:
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory, override_settings

    from zt_middleware.adapters.django import ZeroTrustMiddleware

    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("the app")

    async def aview(request: HttpRequest) -> HttpResponse:
        return HttpResponse("the app")

    with override_settings(ZERO_TRUST=adapter_settings(), ALLOWED_HOSTS=["*"]):
        middleware = ZeroTrustMiddleware(aview if mode == "async" else view)
    secret = middleware.guard.step_up_flow.enrol("alice").secret
    auth = {"HTTP_AUTHORIZATION": f"Bearer {adapter_session()}"}
    factory = RequestFactory()

    def call(request: HttpRequest) -> HttpResponse:
        if mode == "async":
            response: HttpResponse = asyncio.run(middleware(request))
        else:
            response = middleware(request)
        return response

    page = call(factory.get("/api/orders", HTTP_ACCEPT="text/html", **auth))
    minted = call(
        factory.post(
            PATH,
            json.dumps({"code": pyotp.TOTP(secret).now()}),
            content_type="application/json",
            **auth,
        )
    )

    assert page.status_code == 401
    assert page["Content-Type"] == "text/html; charset=utf-8"
    assert page["X-Frame-Options"] == "DENY"
    assert minted.status_code == 200
    assert minted["Content-Type"] == "application/json"
    assert claims_of(json.loads(minted.content)["access_token"])["sid"] == "s1"


# -- regressions from the adversarial review ----------------------------------------


def test_revoking_the_parent_token_also_refuses_its_step_up_token(
    guard: Guard, secret: str, mint: Callable[..., str], clock: Any
) -> None:
    parent = session(mint)
    stronger = stepped_up(guard, parent, secret, clock)
    assert orders(guard, stronger).allowed

    guard.revoke("jti", claims_of(parent)["jti"])

    beside = orders(guard, parent, step_up=stronger)
    alone = orders(guard, stronger)
    assert (beside.status, beside.reason) == (401, "token_revoked")
    assert (alone.status, alone.reason) == (401, "token_revoked")


def test_a_one_time_session_token_stays_one_time_beside_a_step_up_token(
    guard_for: Callable[..., Guard], mint: Callable[..., str], clock: Any
) -> None:
    guard = guard_for(one_time_claims={"token_use": ["once"]})
    secret = guard.step_up_flow.enrol("alice").secret
    stronger = stepped_up(guard, session(mint), secret, clock)
    once = session(mint, extra={"token_use": "once"})

    first = orders(guard, once, step_up=stronger)
    second = orders(guard, once, step_up=stronger)

    assert first.allowed
    assert (second.status, second.reason) == (401, "token_replayed")


def test_a_step_up_token_minted_without_a_device_binds_to_no_device(
    guard: Guard, secret: str, mint: Callable[..., str], clock: Any
) -> None:
    stronger = stepped_up(guard, session(mint), secret, clock, ua="")
    assert "zt_dev" not in claims_of(stronger)

    elsewhere = orders(guard, stronger, ua="Mozilla/5.0 Evil")

    assert (elsewhere.status, elsewhere.reason) == (401, "step_up_device_mismatch")
