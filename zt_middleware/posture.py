"""Device posture: a signed claim from device management, checked per request.

The organisation's device management (MDM) signs a short JWT about the
device and the client sends it in a header (``x-device-posture`` unless
configured). :class:`PostureVerifier` checks it with the library's strict
pipeline (:func:`~zt_middleware.jws.parse_compact`, a key from the MDM's
own :class:`~zt_middleware.keys.KeySet`, never the identity provider's,
and :func:`~zt_middleware.jws.verify_signature`), then compares the
device's version with the configured minimum for its operating system.

The claims, after the signature:

- ``iss``: must equal the configured issuer;
- ``iat`` and ``exp``: JSON numbers; ``exp`` in the future, ``iat`` not in
  the future and no more than ``max_age`` seconds ago (each with
  ``leeway``); ``nbf``, if present, a number not in the future;
- the device, either as an object ``"device": {"os": ..., "os_version":
  ..., "patch_level": ...}`` or as the same names at the top level (the
  object wins when both are present): ``os`` (e.g. ``"macOS"``, compared
  case-insensitively), ``os_version`` (e.g. ``"14.4.1 (23E224)"``) and,
  optionally, ``patch_level`` (``"YYYY-MM"`` or ``"YYYY-MM-DD"``); each
  a string of at most 64 characters.

A minimum is either a dotted version (``"14.4.1"``), compared with
``os_version`` component by component as numbers, missing components
counting as zero and any suffix after the numbers ignored; or a patch level
date (``"2026-10"``), compared with ``patch_level`` (Android's security
patch level is the meaningful figure there, not its version).

The result is a :class:`PostureResult`; its ``reason`` (``posture_*``) is a
risk reason code, None only when the posture is ``ok``. A missing header is
``missing``, whatever ``required`` says: ``required`` tells the caller
whether that should count. The token is never logged nor put in a result
or a message; verified tokens are held in memory as the cache's keys.

A posture token is a bearer assertion: nothing here binds it to the
device that presents it or to the user's session.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import reasons
from .cache import put_bounded
from .errors import ConfigurationError, InvalidToken
from .jws import parse_compact, verified_claims
from .keys import KeySet

__all__ = [
    "INVALID",
    "MISSING",
    "OK",
    "OUTDATED",
    "POSTURE_ERROR",
    "POSTURE_INVALID",
    "POSTURE_MISSING",
    "POSTURE_OUTDATED",
    "POSTURE_TOO_OLD",
    "POSTURE_UNKNOWN_OS",
    "UNKNOWN_OS",
    "VERSION_UNPARSEABLE",
    "PostureResult",
    "PostureVerifier",
    "parse_patch_level",
    "parse_version",
]

logger = logging.getLogger("zt_middleware.posture")

# Statuses.
OK = "ok"
OUTDATED = "outdated"
MISSING = "missing"
INVALID = "invalid"
UNKNOWN_OS = "unknown_os"

# Risk reason codes.
POSTURE_OUTDATED = "posture_outdated"
POSTURE_MISSING = "posture_missing"
POSTURE_INVALID = "posture_invalid"
POSTURE_UNKNOWN_OS = "posture_unknown_os"

# Details of an invalid posture, beside the token reasons in reasons.py.
POSTURE_TOO_OLD = "posture_too_old"
VERSION_UNPARSEABLE = "version_unparseable"
POSTURE_ERROR = "posture_error"

_MAX_CLAIM_CHARS = 64
# Numbers, then nothing or anything that is not another digit or dot:
# "14.4.1 (23E224)" is 14.4.1, "14..4" and "14.4." are not versions.
_VERSION = re.compile(r"v?(\d{1,9}(?:\.\d{1,9}){0,7})(?![\d.])")
_PLAIN_VERSION = re.compile(r"\d{1,9}(?:\.\d{1,9}){0,7}")
_PATCH_LEVEL = re.compile(r"(\d{4})-(\d{2})(?:-(\d{2}))?")


@dataclass(frozen=True, slots=True)
class PostureResult:
    """What the posture claim says, as far as it can be believed.

    ``status`` is one of ``ok``, ``outdated``, ``missing``, ``invalid`` or
    ``unknown_os``; ``reason`` the matching ``posture_*`` code (None when
    ok); ``os`` (lower-cased) and ``version`` (the value compared with the
    minimum) are set once the claim verified; ``detail`` says why a token
    was invalid (``bad_signature``, ``token_expired``, ...).
    """

    status: str
    os: str | None = None
    version: str | None = None
    reason: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


_MISSING_RESULT = PostureResult(MISSING, reason=POSTURE_MISSING)


def _invalid(detail: str) -> PostureResult:
    return PostureResult(INVALID, reason=POSTURE_INVALID, detail=detail)


def parse_version(text: object) -> tuple[int, ...] | None:
    """``"14.4.1 (23E224)"`` → ``(14, 4, 1)``; None if it is not a version.

    The leading dotted numbers count; a suffix after them is ignored.
    """
    if not isinstance(text, str) or len(text) > _MAX_CLAIM_CHARS:
        return None

    version = _VERSION.match(text.strip())
    if version is None:
        return None

    return tuple(int(part) for part in version.group(1).split("."))


def parse_patch_level(text: object) -> tuple[int, ...] | None:
    """``"2026-10-05"`` → ``(2026, 10, 5)``; ``"2026-10"`` → ``(2026, 10)``.

    None when the text is not a ``YYYY-MM`` or ``YYYY-MM-DD`` date.
    """
    if not isinstance(text, str) or len(text) > _MAX_CLAIM_CHARS:
        return None

    date = _PATCH_LEVEL.fullmatch(text.strip())
    if date is None:
        return None
    year, month, day = (int(part) if part else 0 for part in date.groups())
    if not 1 <= month <= 12 or day > 31 or (date.group(3) and day < 1):
        return None

    return (year, month, day) if date.group(3) else (year, month)


def _at_least(version: tuple[int, ...], minimum: tuple[int, ...]) -> bool:
    """Compare as numbers, missing components counting as zero."""
    width = max(len(version), len(minimum))
    padded = version + (0,) * (width - len(version))

    return padded >= minimum + (0,) * (width - len(minimum))


@dataclass(frozen=True, slots=True)
class _Minimum:
    value: tuple[int, ...]
    claim: str  # "os_version" or "patch_level"


@dataclass(frozen=True, slots=True)
class _Attestation:
    """What a verified posture token states; its times are checked per use."""

    os: str
    os_version: str | None
    patch_level: str | None
    issued_at: float
    expires_at: float
    not_before: float | None


class PostureVerifier:
    """Verifies the device posture claim and compares it with the minimums.

    A verified token is kept (keyed by the exact token, at most
    ``cache_size`` of them, oldest dropped first) so that a device sending
    the same claim on every request pays for the signature once; its times
    are still checked on every use.
    """

    def __init__(
        self,
        keys: KeySet,
        *,
        issuer: str,
        header: str = "x-device-posture",
        minimums: Mapping[str, str],
        required: bool = False,
        max_age: int = 86400,
        leeway: int = 30,
        max_size: int = 8192,
        cache_size: int = 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(keys, KeySet) or not len(keys):
            raise ConfigurationError("posture keys: expected a non-empty KeySet")
        if not isinstance(issuer, str) or not issuer:
            raise ConfigurationError("posture issuer: expected a non-empty string")
        if not isinstance(header, str) or not header.strip():
            raise ConfigurationError("posture header: expected a header name")
        for name, value, low in (
            ("max_age", max_age, 1),
            ("max_size", max_size, 1),
            ("leeway", leeway, 0),
            ("cache_size", cache_size, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigurationError(
                    f"posture {name}: expected an integer >= {low}, got {value!r}"
                )

        self.keys = keys
        self.issuer = issuer
        self.header = header.strip().lower()
        self.required = required
        self.max_age = max_age
        self.leeway = leeway
        self.max_size = max_size
        self.clock = clock
        self._minimums = _minimums(minimums)
        self._cache: dict[str, _Attestation] = {}
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return (
            f"PostureVerifier(issuer={self.issuer!r}, header={self.header!r}, "
            f"minimums={sorted(self._minimums)!r}, required={self.required!r})"
        )

    def verify(self, headers: Mapping[str, str]) -> PostureResult:
        """The posture carried by the request's (lower-cased) headers."""
        return self.verify_token(headers.get(self.header))

    def verify_token(self, token: object) -> PostureResult:
        """The posture a header value states; never raises."""
        if token is None or (isinstance(token, str) and not token.strip()):
            return _MISSING_RESULT
        if not isinstance(token, str):
            return _invalid(reasons.CLAIM_INVALID)
        token = token.strip()

        try:
            attestation = self._cache.get(token) or self._verify_new(token)
            self._check_times(attestation)
        except InvalidToken as exc:
            self._cache.pop(token, None)
            return _invalid(exc.reason)
        except Exception as exc:
            # Odd input must not escape as an exception. Log the type only:
            # the message could quote the token.
            logger.error("posture check failed unexpectedly (%s)", type(exc).__name__)
            return _invalid(POSTURE_ERROR)

        return self._judge(attestation)

    def _verify_new(self, token: str) -> _Attestation:
        """Signature, then claims; times are left to :meth:`_check_times`."""
        jws = parse_compact(token, self.max_size)

        key = self.keys.find(jws.kid)
        if key is None:
            raise InvalidToken(
                "the posture claim was signed by an unknown key",
                reason=reasons.UNKNOWN_KEY,
            )
        claims = verified_claims(jws, key)
        attestation = self._attestation(claims)
        self._remember(token, attestation)

        return attestation

    def _attestation(self, claims: dict[str, Any]) -> _Attestation:
        for name in ("iss", "iat", "exp"):
            if name not in claims:
                raise InvalidToken(
                    f"the posture claim has no {name}", reason=reasons.CLAIM_MISSING
                )

        if claims["iss"] != self.issuer:
            raise InvalidToken(
                "the posture claim was issued by someone else",
                reason=reasons.WRONG_ISSUER,
            )

        device_os, facts = _device(claims)

        return _Attestation(
            os=device_os,
            os_version=facts.get("os_version"),
            patch_level=facts.get("patch_level"),
            issued_at=_number(claims, "iat"),
            expires_at=_number(claims, "exp"),
            not_before=_number(claims, "nbf") if "nbf" in claims else None,
        )

    def _remember(self, token: str, attestation: _Attestation) -> None:
        put_bounded(self._cache, self._cache_size, token, attestation)

    def _check_times(self, attestation: _Attestation) -> None:
        now, leeway = self.clock(), self.leeway
        if now >= attestation.expires_at + leeway:
            raise InvalidToken(
                "the posture claim has expired", reason=reasons.TOKEN_EXPIRED
            )

        if attestation.issued_at > now + leeway:
            raise InvalidToken(
                "the posture claim is issued in the future",
                reason=reasons.ISSUED_IN_FUTURE,
            )
        # However long the MDM lets its claims live, a device's state is
        # believed for max_age at most after it was last assessed.
        if now - attestation.issued_at > self.max_age + leeway:
            raise InvalidToken(
                "the posture claim is older than max_age", reason=POSTURE_TOO_OLD
            )

        not_before = attestation.not_before
        if not_before is not None and not_before > now + leeway:
            raise InvalidToken(
                "the posture claim is not valid yet",
                reason=reasons.TOKEN_NOT_YET_VALID,
            )

    def _judge(self, attestation: _Attestation) -> PostureResult:
        device_os = attestation.os
        minimum = self._minimums.get(device_os)
        if minimum is None:
            return PostureResult(
                UNKNOWN_OS,
                os=device_os,
                version=attestation.os_version,
                reason=POSTURE_UNKNOWN_OS,
            )

        if minimum.claim == "patch_level":
            shown, version = attestation.patch_level, parse_patch_level
        else:
            shown, version = attestation.os_version, parse_version
        value = version(shown)
        if value is None:
            detail = reasons.CLAIM_MISSING if shown is None else VERSION_UNPARSEABLE
            return PostureResult(
                INVALID, os=device_os, reason=POSTURE_INVALID, detail=detail
            )
        if not _at_least(value, minimum.value):
            return PostureResult(
                OUTDATED, os=device_os, version=shown, reason=POSTURE_OUTDATED
            )

        return PostureResult(OK, os=device_os, version=shown)


def _minimums(minimums: Mapping[str, str]) -> dict[str, _Minimum]:
    """Validate the configured minimums: OS name (any case) to version."""
    if not isinstance(minimums, Mapping):
        raise ConfigurationError("posture minimums: expected {os: minimum version}")

    result: dict[str, _Minimum] = {}
    for name, text in minimums.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError("posture minimums: expected OS names as keys")
        plain = isinstance(text, str) and _PLAIN_VERSION.fullmatch(text.strip())
        date = parse_patch_level(text)
        value = date or (parse_version(text) if plain else None)
        if value is None:
            raise ConfigurationError(
                f"posture minimums[{name!r}]: expected a dotted version such as "
                f"'14.4.1' or a patch level such as '2026-10', got {text!r}"
            )
        key = name.strip().lower()
        if key in result:
            raise ConfigurationError(f"posture minimums: {key!r} is given twice")
        result[key] = _Minimum(value, "patch_level" if date else "os_version")

    return result


def _device(claims: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The OS name (lower-cased) and the version facts the claims state."""
    source = claims.get("device", claims)
    if not isinstance(source, Mapping):
        raise InvalidToken(
            "the posture device claim is not an object", reason=reasons.CLAIM_INVALID
        )

    device_os = source.get("os")
    if device_os is None:
        raise InvalidToken(
            "the posture claim names no os", reason=reasons.CLAIM_MISSING
        )
    if not _short_string(device_os) or not device_os.strip():
        raise InvalidToken("the posture os is not a name", reason=reasons.CLAIM_INVALID)

    facts: dict[str, str] = {}
    for name in ("os_version", "patch_level"):
        value = source.get(name)
        if value is None:
            continue
        if not _short_string(value):
            raise InvalidToken(
                f"the posture {name} is not a short string",
                reason=reasons.CLAIM_INVALID,
            )
        facts[name] = value.strip()

    return device_os.strip().lower(), facts


def _short_string(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= _MAX_CLAIM_CHARS


def _number(claims: Mapping[str, Any], name: str) -> float:
    """A NumericDate: a finite JSON number; no strings, no booleans."""
    value = claims[name]
    try:
        if type(value) in (int, float) and math.isfinite(value):
            return float(value)
    except OverflowError:  # an integer too large for a float
        pass
    raise InvalidToken(
        f"the posture {name} claim is not a number", reason=reasons.CLAIM_INVALID
    )
