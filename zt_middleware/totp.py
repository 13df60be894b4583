"""TOTP second factors: enrolment, secrets at rest, and checking one code.

A subject's secret lives in the shared store under ``totp:secret:{sub:...}``,
sealed with Fernet when ``totp_encryption_key`` is set. :func:`check_code`
is a generator of store effects (driven sync or async, like the guard's
checks) that applies, in order: the lock-out, the code with one time step of
drift either way, and replay protection. A code's time step is claimed once
per subject, and a step not newer than the last accepted one is refused, so
an older code of the drift window cannot follow a newer one. Wrong and
replayed codes count against the session and the subject; at
``totp_max_attempts`` both are locked for ``totp_lockout`` seconds.

Nothing here logs a secret or a code, and no repr shows one.
"""

from __future__ import annotations

import binascii
import hmac
import logging
import math
import re
from collections.abc import Generator
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken

from . import reasons
from .effects import StoreCall, drive
from .errors import ConfigurationError, ZeroTrustError
from .stores.base import Store

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "Check",
    "Enrolment",
    "SecretBox",
    "SecretUnreadable",
    "Verdict",
    "check_code",
    "enrol",
    "enrol_steps",
    "matching_step",
]

logger = logging.getLogger("zt_middleware.totp")

# Time steps either side of now that still match: one, as RFC 6238 5.2
# recommends for clock drift and typing time.
DRIFT = 1
# A used step is remembered past the longest it could still match (three
# 30-second steps); so is the last accepted step.
USED_TTL = 120
DIGITS = 6

_CODE = re.compile(rf"[0-9]{{{DIGITS}}}")
_SUBJECT_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN, _FERNET = b"plain:", b"fernet:"


class SecretUnreadable(ZeroTrustError):
    """A stored secret cannot be opened with the configured key."""

    reason = reasons.TOTP_SECRET_UNREADABLE


@dataclass(frozen=True, slots=True, repr=False)
class Enrolment:
    """A new secret, its ``otpauth://`` URI and the URI as an SVG QR code.

    Hand it to the person enrolling, once; the URI and the QR code hold the
    secret as much as ``secret`` does.
    """

    subject: str
    secret: str
    uri: str
    qr_svg: str

    def __repr__(self) -> str:
        return (
            f"Enrolment(subject={self.subject!r}, secret=[secure], uri=[secure], "
            "qr_svg=[secure])"
        )

    def qr(self) -> segno.QRCode:
        """The QR code itself, to save as PNG or print on a terminal."""
        return segno.make(self.uri, error="m")


class SecretBox:
    """Seals secrets with a Fernet key, or stores them plain without one."""

    __slots__ = ("_fernet",)

    def __init__(self, key: str | None) -> None:
        self._fernet: Fernet | None = None
        if key is not None:
            try:
                self._fernet = Fernet(key.encode("ascii"))
            except (ValueError, UnicodeEncodeError, binascii.Error):
                # The message never quotes the key.
                raise ConfigurationError(
                    "totp_encryption_key: expected a Fernet key (32 bytes in "
                    "url-safe base64, from Fernet.generate_key()), got one "
                    "that does not decode"
                ) from None

    def __repr__(self) -> str:
        return f"SecretBox(encrypted={self.encrypted})"

    @property
    def encrypted(self) -> bool:
        return self._fernet is not None

    def seal(self, secret: str) -> bytes:
        if self._fernet is None:
            return _PLAIN + secret.encode("ascii")
        return _FERNET + self._fernet.encrypt(secret.encode("ascii"))

    def open(self, stored: bytes) -> str:
        if stored.startswith(_PLAIN):
            # Enrolled before a key was set: still usable, and still plain.
            return stored[len(_PLAIN) :].decode("ascii")
        if not stored.startswith(_FERNET):
            raise SecretUnreadable("a stored TOTP secret has an unknown format")
        if self._fernet is None:
            raise SecretUnreadable(
                "a TOTP secret is encrypted but totp_encryption_key is not set"
            )
        try:
            return self._fernet.decrypt(stored[len(_FERNET) :]).decode("ascii")
        except (InvalidToken, UnicodeDecodeError):
            raise SecretUnreadable(
                "a TOTP secret does not decrypt with totp_encryption_key"
            ) from None


def warn_if_plain(box: SecretBox) -> None:
    if not box.encrypted:
        logger.warning(
            "totp_encryption_key is not set: TOTP secrets are kept in the store "
            "unencrypted; set it to a Fernet key to seal them"
        )


# -- store keys ----------------------------------------------------------------
# The subject is quoted so that no subject can spell another's keys; the
# {sub:...} hash tag keeps a subject's keys on one Redis Cluster slot.


def _tag(subject: str) -> str:
    return "{sub:" + quote(subject, safe="@._-+~") + "}"


def secret_key(subject: str) -> str:
    return f"totp:secret:{_tag(subject)}"


def used_key(subject: str, step: int) -> str:
    return f"totp:used:{_tag(subject)}:{step}"


def last_key(subject: str) -> str:
    return f"totp:last:{_tag(subject)}"


def _scoped(kind: str, subject: str, session_id: str | None) -> tuple[str, ...]:
    keys = [f"totp:{kind}:{_tag(subject)}"]
    if session_id is not None:
        keys.append(f"totp:{kind}:{_tag(subject)}:sid:{quote(session_id, safe='')}")
    return tuple(keys)


# -- enrolment -----------------------------------------------------------------


def new_enrolment(subject: str, issuer_name: str) -> Enrolment:
    if not subject or len(subject) > 256 or _SUBJECT_CONTROL.search(subject):
        raise ConfigurationError(
            "subject: expected 1 to 256 characters without control characters"
        )

    secret = pyotp.random_base32()  # 160 bits, as RFC 4226 recommends
    uri = pyotp.TOTP(secret).provisioning_uri(name=subject, issuer_name=issuer_name)
    svg = segno.make(uri, error="m").svg_inline(scale=5, title="TOTP enrolment")

    return Enrolment(subject=subject, secret=secret, uri=uri, qr_svg=svg)


def enrol_steps(
    store: Store, box: SecretBox, subject: str, issuer_name: str
) -> Generator[StoreCall, Any, Enrolment]:
    """Store a new secret for ``subject``, replacing any earlier one."""
    enrolment = new_enrolment(subject, issuer_name)

    yield StoreCall(store, "put", secret_key(subject), box.seal(enrolment.secret), None)
    # The last step accepted belongs to the old secret.
    yield StoreCall(store, "delete", last_key(subject))

    return enrolment


def enrol(store: Store, settings: Settings | None, subject: str) -> Enrolment:
    """Enrol ``subject`` without a guard (the ``zt totp enrol`` command).

    ``settings`` gives ``totp_issuer`` and ``totp_encryption_key``; without
    them the defaults apply and the secret is stored plain (with a warning).
    """
    if settings is None:
        from .settings import Settings

        defaults = {f.name: f.default for f in fields(Settings)}
        issuer_name, key = str(defaults["totp_issuer"]), None
    else:
        issuer_name, key = settings.totp_issuer, settings.totp_encryption_key

    box = SecretBox(key)
    warn_if_plain(box)

    return drive(enrol_steps(store, box, subject, issuer_name))


# -- checking a code -------------------------------------------------------------


class Verdict(str, Enum):
    ACCEPTED = "accepted"
    INVALID = reasons.TOTP_INVALID
    REPLAYED = reasons.TOTP_REPLAYED
    LOCKED_OUT = reasons.TOTP_LOCKED_OUT
    NOT_ENROLLED = reasons.TOTP_NOT_ENROLLED


@dataclass(frozen=True, slots=True)
class Check:
    """What :func:`check_code` found; ``locked`` when this attempt locked."""

    verdict: Verdict
    retry_after: int | None = None
    step: int | None = None
    locked: bool = False


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step (counter) whose code is ``code``, one step of drift
    allowed either way, or None.

    Counters are computed here from the epoch time rather than through
    ``TOTP.at``, whose datetime round trip goes through local time. Every
    candidate is compared, in constant time, before answering.
    """
    if not _CODE.fullmatch(code):
        return None

    totp = pyotp.TOTP(secret, digits=DIGITS)
    current = int(now) // totp.interval
    found = None
    for step in range(current - DRIFT, current + DRIFT + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step

    return found


def check_code(
    store: Store,
    box: SecretBox,
    settings: Settings,
    subject: str,
    session_id: str | None,
    code: str,
    now: float,
) -> Generator[StoreCall, Any, Check]:
    """Generator: lock-out, then the code, then replay; returns a Check."""
    for key in _scoped("lock", subject, session_id):
        until = yield StoreCall(store, "get", key)
        if until is not None:
            wait = max(1, math.ceil(float(until) - now))
            return Check(Verdict.LOCKED_OUT, retry_after=wait)

    def failed(verdict: Verdict) -> Generator[StoreCall, Any, Check]:
        return _failed(store, settings, subject, session_id, now, verdict)

    stored = yield StoreCall(store, "get", secret_key(subject))
    if stored is None:
        return Check(Verdict.NOT_ENROLLED)

    step = matching_step(box.open(stored), code, now)
    if step is None:
        return (yield from failed(Verdict.INVALID))

    # A step older than one accepted already is a replay even if this exact
    # step was never claimed: codes only move forward.
    last = yield StoreCall(store, "get", last_key(subject))
    if last is not None and step <= int(last):
        return (yield from failed(Verdict.REPLAYED))
    first = yield StoreCall(store, "claim", used_key(subject, step), USED_TTL)
    if not first:
        return (yield from failed(Verdict.REPLAYED))

    yield StoreCall(store, "put", last_key(subject), str(step).encode(), USED_TTL)
    for key in _scoped("fail", subject, session_id):
        yield StoreCall(store, "delete", key)

    return Check(Verdict.ACCEPTED, step=step)


def _failed(
    store: Store,
    settings: Settings,
    subject: str,
    session_id: str | None,
    now: float,
    verdict: Verdict,
) -> Generator[StoreCall, Any, Check]:
    """Count a failure for the subject and the session; lock either at the
    limit. A counter's window starts at its first failure and is never longer
    than the lock-out, so it has expired by the time the lock does."""
    lockout = settings.totp_lockout
    locked = False
    counters = zip(
        _scoped("fail", subject, session_id),
        _scoped("lock", subject, session_id),
        strict=True,
    )
    for fail_key, lock_key in counters:
        failures = yield StoreCall(store, "count", fail_key, lockout)
        if failures >= settings.totp_max_attempts:
            until = str(now + lockout).encode()
            yield StoreCall(store, "put", lock_key, until, lockout)
            locked = True

    if locked:
        return Check(verdict, retry_after=lockout, locked=True)
    return Check(verdict)
