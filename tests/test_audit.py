"""Audit: one structured event per decision, at a level that fits it."""

from __future__ import annotations

import json
import logging

import pytest

from zt_middleware import reasons
from zt_middleware.audit import AuditLog
from zt_middleware.context import RequestContext
from zt_middleware.decision import Decision, Outcome
from zt_middleware.principal import Principal

ALICE = Principal(
    subject="alice",
    issuer="https://issuer.example.test",
    session_id="s-1",
    token_id="j-1",
)


def ctx(path: str = "/api/orders", **fields: object) -> RequestContext:
    values = {"client": "203.0.113.7", "request_id": "req-1", "route": "/api/orders"}
    values.update(fields)
    return RequestContext(method="GET", path=path, **values)  # type: ignore[arg-type]


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "zt_middleware.audit"]


@pytest.mark.parametrize(
    ("decision", "level"),
    [
        (Decision.allow(ALICE, reasons.ALLOWED), logging.INFO),
        (Decision(Outcome.DENY, 401, (reasons.MISSING_TOKEN,)), logging.WARNING),
        (Decision(Outcome.CHALLENGE, 401, (reasons.ACR_TOO_LOW,)), logging.WARNING),
        (Decision(Outcome.DENY, 403, (reasons.DECISION_ERROR,)), logging.WARNING),
        (Decision(Outcome.DENY, 503, (reasons.STORE_UNAVAILABLE,)), logging.ERROR),
    ],
    ids=["allow", "deny", "challenge", "decision-error", "unavailable"],
)
def test_each_decision_is_one_event_at_its_level(
    caplog: pytest.LogCaptureFixture, decision: Decision, level: int
) -> None:
    caplog.set_level(logging.DEBUG)

    AuditLog().record(ctx(), decision)

    [record] = events(caplog)
    assert record.levelno == level


def test_event_names_the_request_the_principal_and_the_reasons(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    AuditLog().record(ctx(), Decision.allow(ALICE, reasons.ALLOWED))

    [record] = events(caplog)
    event = record.zt_event  # type: ignore[attr-defined]
    assert {k: v for k, v in event.items() if k != "time"} == {
        "request_id": "req-1",
        "outcome": "allow",
        "status": 200,
        "reasons": ("allowed",),
        "method": "GET",
        "path": "/api/orders",
        "route": "/api/orders",
        "client": "203.0.113.7",
        "subject": "alice",
        "session_id": "s-1",
        "token_id": "j-1",
        "score": 0,
        "signals": (),
    }
    message = json.loads(record.getMessage().removeprefix("zt decision "))
    assert message == {**event, "reasons": ["allowed"], "signals": []}


def test_event_carries_each_risk_signal_with_its_weight(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    signals = (("new_device", 20), ("impossible_travel", 70))
    decision = Decision(
        Outcome.CHALLENGE, 401, (reasons.STEP_UP_REQUIRED,), score=90, signals=signals
    )

    AuditLog().record(ctx(), decision)

    [record] = events(caplog)
    assert record.zt_event["score"] == 90  # type: ignore[attr-defined]
    assert record.zt_event["signals"] == signals  # type: ignore[attr-defined]


def test_refusal_without_a_principal_names_no_subject(
    caplog: pytest.LogCaptureFixture,
) -> None:
    AuditLog().record(ctx(), Decision(Outcome.DENY, 401, (reasons.MISSING_TOKEN,)))

    [record] = events(caplog)
    assert record.zt_event["subject"] is None  # type: ignore[attr-defined]


def test_attacker_written_path_cannot_forge_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = '/x\r\nzt decision {"outcome":"allow"}\u2028'

    AuditLog().record(ctx(path), Decision(Outcome.DENY, 401, (reasons.MISSING_TOKEN,)))

    [record] = events(caplog)
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message and "\u2028" not in message
    assert json.loads(message.removeprefix("zt decision "))["path"] == path


def test_nothing_is_built_when_the_level_is_off(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    quiet = logging.getLogger("zt_middleware.audit")
    # Building an event would fail if it were attempted.
    monkeypatch.setattr("zt_middleware.audit.AuditEvent", None)

    quiet.setLevel(logging.ERROR)
    try:
        AuditLog().record(ctx(), Decision(Outcome.DENY, 401, (reasons.MISSING_TOKEN,)))
    finally:
        quiet.setLevel(logging.NOTSET)

    assert events(caplog) == []


def test_audit_can_write_to_another_logger(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    AuditLog(logging.getLogger("myapp.security")).record(
        ctx(), Decision.allow(ALICE, reasons.ALLOWED)
    )

    assert [r.name for r in caplog.records] == ["myapp.security"]


def test_guard_audits_every_decision_it_makes(
    make_guard, mint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    guard = make_guard()
    token = mint(scopes=["orders:read"])

    for path, headers in [
        ("/healthz", {}),
        ("/api/orders", {}),
        ("/api/orders", {"authorization": f"Bearer {token}"}),
    ]:
        guard.decide(RequestContext(method="GET", path=path, headers=headers))

    assert [r.zt_event["reasons"] for r in events(caplog)] == [  # type: ignore[attr-defined]
        ("public_route",),
        ("missing_token",),
        ("allowed",),
    ]
    assert token not in caplog.text
