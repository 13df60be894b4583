"""Compact JWS: shape, canonical base64url, the header, and the signature."""

from __future__ import annotations

import base64
import json

import pytest

from zt_middleware import reasons
from zt_middleware.errors import InvalidToken
from zt_middleware.jws import (
    b64url_decode,
    parse_compact,
    parse_json_object,
    verify_signature,
)
from zt_middleware.keys import KeySet, key_from_jwk

LIMIT = 1 << 20
RS256_ONLY = frozenset({"RS256"})


def b64(data: str | bytes) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def compact(header: str | bytes, payload: str = "{}", signature: str = "AAAA") -> str:
    return f"{b64(header)}.{b64(payload)}.{signature}"


def reason_of(token: str, max_size: int = LIMIT) -> str:
    with pytest.raises(InvalidToken) as refused:
        parse_compact(token, max_size)
    return refused.value.reason


# -- base64url ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "data"),
    [("", b""), ("Zg", b"f"), ("Zm8", b"fo"), ("Zm9v", b"foo"), ("-_8", b"\xfb\xff")],
)
def test_canonical_base64url_decodes(segment: str, data: bytes) -> None:
    assert b64url_decode(segment) == data


@pytest.mark.parametrize(
    "segment",
    [
        pytest.param("Zg==", id="padding"),
        pytest.param("Zm8=", id="one-pad"),
        pytest.param("Z", id="length-1-mod-4"),
        pytest.param("Zh", id="non-zero-unused-bits"),
        pytest.param("Zm9w+A", id="plus-from-standard-alphabet"),
        pytest.param("Zm9/", id="slash-from-standard-alphabet"),
        pytest.param("Zm 9v", id="space"),
        pytest.param("Zm9v\n", id="newline"),
        pytest.param("Zm9v?", id="question-mark"),
    ],
)
def test_non_canonical_base64url_is_refused(segment: str) -> None:
    """Every byte string has one spelling; any other spelling is refused."""
    with pytest.raises(ValueError):
        b64url_decode(segment)


# -- shape and size -----------------------------------------------------------


def test_token_over_the_size_cap_is_refused_before_decoding() -> None:
    token = compact('{"alg":"RS256"}', "x" * 400)

    assert reason_of(token, max_size=len(token) - 1) == reasons.TOKEN_TOO_LARGE
    parse_compact(token, max_size=len(token))


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("abc", id="one-segment"),
        pytest.param("abc.def", id="two-segments"),
        pytest.param("a.b.c.d.e", id="five-segments-jwe-shape"),
        pytest.param("a" + "." * 3000, id="a-then-3000-dots"),
        pytest.param(".e30.AAAA", id="empty-header"),
        pytest.param("eyJ9 .e30.AAAA", id="space-in-header"),
        pytest.param("eyJ9.e30.AAAA=", id="padded-signature"),
    ],
)
def test_token_that_is_not_three_base64url_segments_is_malformed(token: str) -> None:
    assert reason_of(token) == reasons.MALFORMED_TOKEN


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'["alg","RS256"]', id="array"),
        pytest.param(b'"RS256"', id="string"),
        pytest.param(b"\xff\xfe{}", id="not-utf-8"),
        pytest.param(b'{"alg":"RS256","alg":"HS256"}', id="duplicate-alg"),
        pytest.param(b'{"alg":"RS256","x":{"a":1,"a":2}}', id="nested-duplicate"),
        pytest.param(b'{"alg":"RS256","x":NaN}', id="nan"),
        pytest.param(b'{"alg":"RS256","x":-Infinity}', id="infinity"),
        pytest.param(b'{"alg":"RS256","kid":7}', id="kid-not-string"),
    ],
)
def test_header_that_is_not_a_clean_json_object_is_malformed(header: bytes) -> None:
    assert reason_of(compact(header)) == reasons.MALFORMED_HEADER


def test_deeply_nested_header_is_malformed_not_a_crash() -> None:
    """A 3 KB header of nested arrays must not raise RecursionError."""
    header = b'{"alg":"RS256","x":' + b"[" * 1200 + b"]" * 1200 + b"}"

    assert reason_of(compact(header)) == reasons.MALFORMED_HEADER


def test_parse_json_object_refuses_duplicates_at_any_depth() -> None:
    with pytest.raises(ValueError):
        parse_json_object(b'{"a":[{"b":1,"b":1}]}')
    assert parse_json_object(b'{"a":[{"b":1},{"b":1}]}') == {"a": [{"b": 1}, {"b": 1}]}


# -- header rules -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"typ": "JWT"},
        {"alg": None},
        {"alg": 256},
        {"alg": "none"},
        {"alg": "None"},
        {"alg": "NONE"},
        {"alg": "nOnE"},
    ],
    ids=repr,
)
def test_header_without_a_usable_alg_is_refused(header: dict[str, object]) -> None:
    assert reason_of(compact(json.dumps(header), signature="")) == (
        reasons.ALGORITHM_NOT_ALLOWED
    )


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
def test_header_that_points_at_a_key_is_refused(name: str) -> None:
    """The sender must never choose the key that verifies its own token."""
    header = json.dumps({"alg": "RS256", "kid": "k1", name: "https://evil.test/k"})

    assert reason_of(compact(header)) == reasons.FORBIDDEN_HEADER


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "RS256", "crit": ["x-binding"], "x-binding": "d7"},
        {"alg": "RS256", "b64": False, "crit": ["b64"]},
        {"alg": "RS256", "b64": False},
        {"alg": "RS256", "crit": []},
    ],
    ids=["crit-extension", "b64-false-crit", "b64-without-crit", "empty-crit"],
)
def test_critical_header_extensions_are_refused(header: dict[str, object]) -> None:
    """RFC 7515 4.1.11: a recipient that understands no extension refuses."""
    assert reason_of(compact(json.dumps(header))) == (
        reasons.UNSUPPORTED_CRITICAL_HEADER
    )


def test_well_formed_token_parses_into_its_parts() -> None:
    token = compact('{"alg":"RS256","kid":"k1"}', '{"sub":"alice"}', b64(b"sig"))

    parsed = parse_compact(token, LIMIT)

    assert parsed.alg == "RS256"
    assert parsed.kid == "k1"
    assert parsed.payload == b'{"sub":"alice"}'
    assert parsed.signature == b"sig"
    assert parsed.signing_input == token.rsplit(".", 1)[0].encode()


def test_parsed_token_repr_shows_no_payload_or_signature() -> None:
    parsed = parse_compact(compact('{"alg":"RS256"}', '{"sub":"s3cr3t"}'), LIMIT)

    assert "s3cr3t" not in repr(parsed)
    assert "AAAA" not in repr(parsed)


# -- signature ----------------------------------------------------------------


def test_signature_by_the_key_verifies(rsa_key, forge) -> None:
    key = KeySet.from_jwks(rsa_key.jwks(), RS256_ONLY).find("k1")
    parsed = parse_compact(forge({"alg": "RS256", "kid": "k1"}, {"a": 1}), LIMIT)

    verify_signature(parsed, key)


def test_signature_by_another_key_is_refused(rsa_key, stranger_key, forge) -> None:
    key = KeySet.from_jwks(rsa_key.jwks(), RS256_ONLY).find("k1")
    token = forge({"alg": "RS256", "kid": "k1"}, {"a": 1}, key=stranger_key)

    with pytest.raises(InvalidToken) as refused:
        verify_signature(parse_compact(token, LIMIT), key)

    assert refused.value.reason == reasons.BAD_SIGNATURE


def test_tampered_payload_is_refused(rsa_key, forge) -> None:
    key = KeySet.from_jwks(rsa_key.jwks(), RS256_ONLY).find("k1")
    header, _, signature = forge({"alg": "RS256"}, {"admin": False}).split(".")
    token = ".".join([header, b64('{"admin":true}'), signature])

    with pytest.raises(InvalidToken) as refused:
        verify_signature(parse_compact(token, LIMIT), key)

    assert refused.value.reason == reasons.BAD_SIGNATURE


def test_algorithm_outside_the_keys_own_algorithms_is_refused(rsa_key, forge) -> None:
    """The key's type and JWK ``alg`` fix the algorithm, never the header."""
    jwk = rsa_key.public_jwk()  # declares alg RS256
    key = key_from_jwk(jwk, frozenset({"RS256", "PS256"}))
    token = forge({"alg": "PS256", "kid": "k1"}, {"a": 1})

    with pytest.raises(InvalidToken) as refused:
        verify_signature(parse_compact(token, LIMIT), key)

    assert refused.value.reason == reasons.ALGORITHM_KEY_MISMATCH


def test_jwk_without_alg_verifies_every_allowed_algorithm_of_its_type(
    rsa_key, forge
) -> None:
    jwk = {k: v for k, v in rsa_key.public_jwk().items() if k != "alg"}
    key = key_from_jwk(jwk, frozenset({"RS256", "PS256"}))

    for alg in ("RS256", "PS256"):
        verify_signature(parse_compact(forge({"alg": alg}, {"a": 1}), LIMIT), key)


def test_signature_that_the_verifier_cannot_even_read_is_a_bad_signature(
    rsa_key,
) -> None:
    key = KeySet.from_jwks(rsa_key.jwks(), RS256_ONLY).find("k1")
    parsed = parse_compact(compact('{"alg":"RS256"}', "{}", b64(b"\x00")), LIMIT)

    with pytest.raises(InvalidToken) as refused:
        verify_signature(parsed, key)

    assert refused.value.reason == reasons.BAD_SIGNATURE
