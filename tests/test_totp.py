"""TOTP: codes with one step of drift, secrets at rest, enrolment, the CLI.

The store-backed checks (replay, lock-out) are driven here directly, on a
memory store that reads the same frozen clock as the check.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from cryptography.fernet import Fernet

from zt_middleware.cli import main
from zt_middleware.effects import drive
from zt_middleware.errors import ConfigurationError
from zt_middleware.settings import Settings
from zt_middleware.stores.memory import MemoryStore
from zt_middleware.stores.sqlite import SQLiteStore
from zt_middleware.totp import (
    Check,
    SecretBox,
    SecretUnreadable,
    Verdict,
    check_code,
    enrol,
    matching_step,
    secret_key,
    used_key,
)

ISSUER = "https://issuer.example.test"
AUDIENCE = "https://orders.example.test"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
# conftest's clock fixture: call it for the time, move it with advance().
FrozenClock = Any
STEP = 30


def code_at(t: float, secret: str = SECRET) -> str:
    return pyotp.TOTP(secret).at(t)


def settings(**extra: object) -> Settings:
    return Settings.from_mapping(
        {"issuer": ISSUER, "audience": AUDIENCE, "jwks": {"keys": []}, **extra}
    )


# -- one code ------------------------------------------------------------------


def test_code_of_the_current_step_matches_and_names_its_step(
    clock: FrozenClock,
) -> None:
    now = clock()

    assert matching_step(SECRET, code_at(now), now) == int(now) // STEP


def test_codes_one_step_either_side_match_and_two_steps_away_do_not(
    clock: FrozenClock,
) -> None:
    now = clock()
    step = int(now) // STEP

    assert matching_step(SECRET, code_at(now - STEP), now) == step - 1
    assert matching_step(SECRET, code_at(now + STEP), now) == step + 1
    assert matching_step(SECRET, code_at(now - 2 * STEP), now) is None
    assert matching_step(SECRET, code_at(now + 2 * STEP), now) is None


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",
        "1234567",
        "abcdef",
        "12 345",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
    ],
)
def test_codes_that_are_not_six_ascii_digits_never_match(
    code: str, clock: FrozenClock
) -> None:
    assert matching_step(SECRET, code, clock()) is None


# -- secrets at rest ------------------------------------------------------------


def test_secret_is_sealed_with_fernet_when_a_key_is_set() -> None:
    box = SecretBox(Fernet.generate_key().decode())

    sealed = box.seal(SECRET)

    assert SECRET.encode() not in sealed
    assert box.open(sealed) == SECRET
    assert repr(box) == "SecretBox(encrypted=True)"


def test_sealed_secret_cannot_be_opened_without_the_key_or_with_another() -> None:
    sealed = SecretBox(Fernet.generate_key().decode()).seal(SECRET)

    with pytest.raises(SecretUnreadable) as without:
        SecretBox(None).open(sealed)
    with pytest.raises(SecretUnreadable) as other:
        SecretBox(Fernet.generate_key().decode()).open(sealed)

    assert without.value.reason == other.value.reason == "totp_secret_unreadable"
    assert SECRET not in str(without.value) + str(other.value)


def test_a_key_that_is_not_fernet_is_refused_naming_the_setting_not_the_value() -> None:
    with pytest.raises(ConfigurationError) as refused:
        SecretBox("not-a-fernet-key-at-all")

    assert "totp_encryption_key" in str(refused.value)
    assert "not-a-fernet-key-at-all" not in str(refused.value)


def test_subjects_cannot_spell_each_others_keys() -> None:
    # Unquoted, "alice}:1" would close alice's hash tag and add a suffix.
    assert secret_key("alice}:x") != secret_key("alice") + ":x}"
    assert "{sub:alice%7D%3Ax}" in secret_key("alice}:x")
    assert used_key("alice", 5) == "totp:used:{sub:alice}:5"


# -- enrolment ------------------------------------------------------------------


def test_enrolment_gives_an_otpauth_uri_and_an_svg_qr_code() -> None:
    store = MemoryStore()

    enrolment = enrol(store, settings(totp_issuer="Orders"), "alice@example.test")

    uri = urlsplit(enrolment.uri)
    query = parse_qs(uri.query)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == "/Orders:alice@example.test"
    assert query["secret"] == [enrolment.secret]
    assert query["issuer"] == ["Orders"]
    assert enrolment.qr_svg.startswith("<svg") and "</svg>" in enrolment.qr_svg
    assert len(enrolment.secret) == 32


def test_enrolment_repr_shows_no_secret() -> None:
    enrolment = enrol(MemoryStore(), settings(), "alice")

    shown = repr(enrolment)

    assert enrolment.secret not in shown
    assert "otpauth" not in shown and "svg" not in shown.replace("qr_svg", "")
    assert shown.startswith("Enrolment(subject='alice', secret=[secure]")


def test_enrolment_stores_the_secret_sealed_when_a_key_is_configured() -> None:
    store = MemoryStore()
    key = Fernet.generate_key().decode()

    enrolment = enrol(store, settings(totp_encryption_key=key), "alice")

    stored = store.get(secret_key("alice"))
    assert stored is not None and enrolment.secret.encode() not in stored
    assert SecretBox(key).open(stored) == enrolment.secret


def test_enrolment_without_a_key_stores_plain_and_warns_naming_the_setting(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()

    with caplog.at_level(logging.WARNING, logger="zt_middleware.totp"):
        enrolment = enrol(store, settings(), "alice")

    assert store.get(secret_key("alice")) == b"plain:" + enrolment.secret.encode()
    assert "totp_encryption_key is not set" in caplog.text
    assert enrolment.secret not in caplog.text


@pytest.mark.parametrize("subject", ["", "a\nb", "x" * 257])
def test_enrolment_refuses_empty_or_control_character_subjects(subject: str) -> None:
    with pytest.raises(ConfigurationError, match="subject"):
        enrol(MemoryStore(), settings(), subject)


# -- replay and lock-out ----------------------------------------------------------


@pytest.fixture
def store(clock: FrozenClock) -> MemoryStore:
    store = MemoryStore(clock=clock)
    store.put(secret_key("alice"), b"plain:" + SECRET.encode())
    return store


def check(
    store: MemoryStore,
    code: str,
    clock: FrozenClock,
    *,
    session: str | None = "s1",
    subject: str = "alice",
    **extra: object,
) -> Check:
    steps = check_code(
        store, SecretBox(None), settings(**extra), subject, session, code, clock()
    )
    return drive(steps)


def test_a_code_is_accepted_once_then_refused_in_its_window_and_the_next(
    store: MemoryStore, clock: FrozenClock
) -> None:
    code = code_at(clock())

    first = check(store, code, clock)
    again = check(store, code, clock)
    clock.advance(STEP)  # still inside the drift window
    assert matching_step(SECRET, code, clock()) is not None
    next_window = check(store, code, clock)

    assert first.verdict is Verdict.ACCEPTED
    assert again.verdict is Verdict.REPLAYED
    assert next_window.verdict is Verdict.REPLAYED


def test_an_older_code_of_the_drift_window_cannot_follow_a_newer_one(
    store: MemoryStore, clock: FrozenClock
) -> None:
    newer = check(store, code_at(clock()), clock)
    older = check(store, code_at(clock() - STEP), clock, session="s2")

    assert newer.verdict is Verdict.ACCEPTED
    # Never claimed itself, but older than the step accepted.
    assert older.verdict is Verdict.REPLAYED


def test_the_next_steps_code_is_accepted_after_the_current_one(
    store: MemoryStore, clock: FrozenClock
) -> None:
    assert check(store, code_at(clock()), clock).verdict is Verdict.ACCEPTED
    clock.advance(STEP)

    assert check(store, code_at(clock()), clock).verdict is Verdict.ACCEPTED


def test_wrong_codes_lock_out_at_the_limit_and_then_a_right_code_is_refused(
    store: MemoryStore, clock: FrozenClock
) -> None:
    wrong = "000000" if code_at(clock()) != "000000" else "111111"

    tries = [check(store, wrong, clock, totp_max_attempts=3) for _ in range(3)]
    locked = check(store, code_at(clock()), clock, totp_max_attempts=3)

    assert [t.verdict for t in tries] == [Verdict.INVALID] * 3
    assert [t.locked for t in tries] == [False, False, True]
    assert tries[-1].retry_after == 900
    assert locked.verdict is Verdict.LOCKED_OUT
    assert locked.retry_after == 900


def test_the_subject_lock_holds_for_its_other_sessions_until_it_expires(
    store: MemoryStore, clock: FrozenClock
) -> None:
    for _ in range(2):
        check(store, "000000", clock, totp_max_attempts=2, totp_lockout=60)
    clock.advance(20)

    other_session = check(store, code_at(clock()), clock, session="s9")
    clock.advance(41)
    after = check(store, code_at(clock()), clock, session="s9")

    assert other_session.verdict is Verdict.LOCKED_OUT
    assert other_session.retry_after == 40
    assert after.verdict is Verdict.ACCEPTED


def test_success_resets_the_failures_of_the_subject_and_the_session(
    store: MemoryStore, clock: FrozenClock
) -> None:
    check(store, "000000", clock, totp_max_attempts=2)
    check(store, code_at(clock()), clock, totp_max_attempts=2)
    clock.advance(STEP)

    after = check(store, "000000", clock, totp_max_attempts=2)

    assert after.verdict is Verdict.INVALID and not after.locked


def test_replayed_codes_count_as_failures(
    store: MemoryStore, clock: FrozenClock
) -> None:
    code = code_at(clock())
    check(store, code, clock, totp_max_attempts=2)

    replays = [check(store, code, clock, totp_max_attempts=2) for _ in range(2)]

    assert [r.verdict for r in replays] == [Verdict.REPLAYED] * 2
    assert replays[-1].locked


def test_a_subject_never_enrolled_is_not_enrolled_and_counts_nothing(
    store: MemoryStore, clock: FrozenClock
) -> None:
    result = check(store, "123456", clock, subject="bob")

    assert result.verdict is Verdict.NOT_ENROLLED
    assert store.get("totp:fail:{sub:bob}") is None


# -- zt totp enrol ----------------------------------------------------------------


def test_cli_enrols_into_sqlite_prints_the_uri_and_writes_a_private_svg(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "zt.db"
    qr = tmp_path / "alice.svg"

    code = main(["totp", "enrol", "--sub", "alice", "--store", f"sqlite:///{db}",
                 "--qr", str(qr)])  # fmt: skip

    out = capsys.readouterr().out
    uri = next(line for line in out.splitlines() if line.startswith("otpauth://"))
    secret = parse_qs(urlsplit(uri).query)["secret"][0]
    stored = SQLiteStore(str(db))
    try:
        assert SecretBox(None).open(stored.get(secret_key("alice")) or b"") == secret
    finally:
        stored.close()
    assert code == 0
    assert str(qr) in out
    assert qr.read_text().lstrip().startswith(("<?xml", "<svg"))
    assert stat.S_IMODE(os.stat(qr).st_mode) == 0o600


def test_cli_writes_a_png_qr_code(tmp_path: Path) -> None:
    qr = tmp_path / "alice.png"

    code = main(["totp", "enrol", "--sub", "alice", "--store",
                 f"sqlite:///{tmp_path / 'zt.db'}", "--qr", str(qr)])  # fmt: skip

    assert code == 0
    assert qr.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_cli_takes_the_store_and_encryption_key_from_a_settings_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Fernet.generate_key().decode()
    db = tmp_path / "zt.db"
    toml = tmp_path / "zt.toml"
    toml.write_text(
        "[zero_trust]\n"
        f'issuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        f'jwks = {{ keys = [] }}\nstore = "sqlite:///{db}"\n'
        f'totp_encryption_key = "{key}"\ntotp_issuer = "Orders"\n'
    )

    code = main(["totp", "enrol", "--sub", "alice", "--settings", str(toml)])

    out = capsys.readouterr().out
    stored = SQLiteStore(str(db))
    try:
        sealed = stored.get(secret_key("alice")) or b""
    finally:
        stored.close()
    assert code == 0
    assert "issuer=Orders" in out
    assert sealed.startswith(b"fernet:")
    assert parse_qs(urlsplit(out.split()[0]).query)["secret"][0] == SecretBox(key).open(
        sealed
    )


def test_cli_refuses_a_memory_store_nobody_else_would_see(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["totp", "enrol", "--sub", "alice", "--store", "memory://"])

    assert code == 2
    assert "memory://" in capsys.readouterr().err


def test_cli_refuses_an_existing_qr_file_before_storing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    qr = tmp_path / "taken.svg"
    qr.write_text("mine")
    db = tmp_path / "zt.db"

    code = main(["totp", "enrol", "--sub", "alice", "--store", f"sqlite:///{db}",
                 "--qr", str(qr)])  # fmt: skip

    stored = SQLiteStore(str(db))
    try:
        assert stored.get(secret_key("alice")) is None
    finally:
        stored.close()
    assert code == 2
    assert qr.read_text() == "mine"
    assert "--qr" in capsys.readouterr().err


def test_cli_refuses_a_qr_file_of_another_kind(tmp_path: Path) -> None:
    code = main(["totp", "enrol", "--sub", "alice", "--store",
                 f"sqlite:///{tmp_path / 'zt.db'}", "--qr", str(tmp_path / "x.jpg")])  # fmt: skip

    assert code == 2
