"""Strict parsing and signature checking of compact JWS.

Everything here runs before any claim is read. The compact form is checked
for shape and size before a byte is decoded; base64url must be canonical (no
padding, no stray characters, no non-zero trailing bits); the protected header
must be a JSON object without duplicate names; headers that point at keys
(``jku``, ``x5u``, ``jwk``, ``x5c``) and any ``crit`` extension are refused;
the algorithm must be one the chosen key allows. The signature itself is
checked by PyJWT's algorithm objects over ``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from jwt.algorithms import get_default_algorithms

from . import reasons
from .errors import InvalidToken
from .keys import KeySet, VerificationKey

__all__ = [
    "CompactJWS",
    "b64url_decode",
    "parse_compact",
    "verified_claims",
    "verify_signature",
]

_ALGORITHMS = get_default_algorithms()
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")

# Header parameters that name a key by reference or carry one inline. Using
# them to find a key lets the sender pick the key that verifies its token.
_FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c"})


@dataclass(frozen=True, slots=True, repr=False)
class CompactJWS:
    header: dict[str, Any]
    signing_input: bytes
    payload: bytes
    signature: bytes

    def __repr__(self) -> str:
        return f"CompactJWS(alg={self.header.get('alg')!r}, kid={self.kid!r})"

    @property
    def alg(self) -> str:
        alg: str = self.header["alg"]
        return alg

    @property
    def kid(self) -> str | None:
        return self.header.get("kid")


def b64url_decode(segment: str) -> bytes:
    """Decode canonical unpadded base64url, refusing every other spelling."""
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise ValueError("not canonical base64url")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error:
        raise ValueError("not canonical base64url") from None

    # Two spellings must not decode to the same bytes: a last character
    # with non-zero unused bits is a second spelling.
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("not canonical base64url")

    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError("duplicate member name")
        result[name] = value
    return result


def parse_json_object(data: bytes) -> dict[str, Any]:
    """UTF-8 JSON object, no duplicate names, no NaN or Infinity."""
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        # A few KB of "[[[[" in an unsigned header would otherwise escape as
        # an unexpected error instead of a malformed token.
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_compact(token: str, max_size: int) -> CompactJWS:
    """Split and decode a compact JWS; nothing is trusted yet."""
    if len(token) > max_size:
        raise InvalidToken("the token is too large", reason=reasons.TOKEN_TOO_LARGE)
    if token.count(".") != 2 or not _TOKEN_SHAPE.fullmatch(token):
        raise InvalidToken(
            "the token is not a compact JWS", reason=reasons.MALFORMED_TOKEN
        )

    header_b64, payload_b64, signature_b64 = token.split(".")
    try:
        header = parse_json_object(b64url_decode(header_b64))
        payload = b64url_decode(payload_b64)
        signature = b64url_decode(signature_b64)
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken(
            "the token's header or encoding is malformed",
            reason=reasons.MALFORMED_HEADER,
        ) from None

    _check_header(header)

    return CompactJWS(
        header=header,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        payload=payload,
        signature=signature,
    )


def _check_header(header: dict[str, Any]) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        raise InvalidToken(
            "the token names no usable algorithm",
            reason=reasons.ALGORITHM_NOT_ALLOWED,
        )

    if _FORBIDDEN_HEADERS & header.keys():
        raise InvalidToken(
            "keys are never taken from the token's header",
            reason=reasons.FORBIDDEN_HEADER,
        )

    # RFC 7515 section 4.1.11: a recipient that does not understand every
    # name in "crit" must refuse. We understand none (b64=false included).
    if "crit" in header or "b64" in header:
        raise InvalidToken(
            "the token uses a critical header extension that is not supported",
            reason=reasons.UNSUPPORTED_CRITICAL_HEADER,
        )

    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken(
            "the token's kid is not a string", reason=reasons.MALFORMED_HEADER
        )


def select_key(jws: CompactJWS, keys: KeySet) -> VerificationKey | None:
    """The key the token's ``kid`` names, or None when the set has none."""
    return keys.find(jws.kid)


def verify_signature(jws: CompactJWS, key: VerificationKey) -> None:
    """Check the signature with ``key``, whose type fixes the algorithm."""
    # The algorithm must be one this key allows: a header that says HS256
    # over an RSA key is refused here, never tried as an HMAC.
    if jws.alg not in key.algorithms:
        raise InvalidToken(
            "the token's algorithm is not allowed for its key",
            reason=reasons.ALGORITHM_KEY_MISMATCH,
        )

    algorithm = _ALGORITHMS[jws.alg]
    try:
        valid = algorithm.verify(jws.signing_input, key.material, jws.signature)
    except Exception:
        valid = False
    if not valid:
        raise InvalidToken(
            "the token's signature does not verify", reason=reasons.BAD_SIGNATURE
        )


def verified_claims(jws: CompactJWS, key: VerificationKey) -> dict[str, Any]:
    """Check the signature with ``key``, then read the payload as claims."""
    verify_signature(jws, key)

    try:
        return parse_json_object(jws.payload)
    except (ValueError, UnicodeDecodeError):
        raise InvalidToken(
            "the token's claims are not a JSON object",
            reason=reasons.MALFORMED_CLAIMS,
        ) from None
