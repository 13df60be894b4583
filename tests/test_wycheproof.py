"""Project Wycheproof JWS and JWK vectors through the key and signature layer.

Every case of ``json_web_signature_test.json`` goes through exactly what the
verifier does before it reads a claim: the group's JWK becomes a key set
(``KeySet.from_jwks``), the token is parsed strictly (``parse_compact``), the
key is found by ``kid`` and the signature checked (``verify_signature``). The
payloads are not JWT claims (``Zm9v`` is "foo"), so claims are never read.

The allowed algorithms are the library's default set plus HS256, because the
vectors carry HMAC keys of 32 bytes and more. A ``valid`` case signed with an
algorithm outside that set (RS384, PS512, ES512, ...) must be refused too; it
is counted apart.

Where we disagree with the file, the case is listed below with the reason.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from jwt.api_jws import PyJWS

from zt_middleware import reasons
from zt_middleware.errors import ConfigurationError, InvalidToken
from zt_middleware.jws import parse_compact, verify_signature
from zt_middleware.keys import KeySet

VECTORS = Path(__file__).parent / "vectors" / "wycheproof"
ALLOWED = frozenset({"RS256", "PS256", "ES256", "EdDSA", "HS256"})
KEY_SET_REFUSED = "key_set_refused"

# Labelled valid, but a "?" sits inside a base64url segment. RFC 7515 allows
# no character outside the base64url alphabet; a decoder that skips it reads
# a second spelling of the same token. Refusing is the stricter, right answer.
STRICTER_THAN_FILE = {372, 373}

# Labelled invalid ("invalidBase64Padding", "invalidBase64PaddingInPayload")
# but byte-identical to the valid tcId 357: the "=" they were meant to carry
# was lost upstream. No verifier can refuse them and accept 357, so they are
# held to 357's answer; the padded tokens they meant are rebuilt below.
CONTRADICTED_BY_FILE = {367: 357, 370: 357}

# JWK cases we knowingly fail: ROCA-weak RSA moduli are not detected.
KNOWN_GAPS = {7: "ROCA fingerprint detection (CVE-2017-15361) is not implemented"}


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / name).read_text())
    return document


SIGNATURES = load("json_web_signature_test.json")
KEYS = load("json_web_key_test.json")


def cases(document: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(group, case) pairs in file order."""
    return [
        (group, case) for group in document["testGroups"] for case in group["tests"]
    ]


def key_document(group: dict[str, Any]) -> dict[str, Any]:
    """The verifier's side: the public JWK, or for HMAC the shared secret."""
    jwk = group.get("public") or group["private"]
    return jwk if "keys" in jwk else {"keys": [jwk]}


def header_alg(token: str) -> str | None:
    """The ``alg`` a case claims, read leniently (only to sort the cases)."""
    segment = re.sub(r"[^A-Za-z0-9_-]", "", token.split(".")[0])
    try:
        header = json.loads(
            base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        )
    except (ValueError, binascii.Error):
        return None
    return header.get("alg") if isinstance(header, dict) else None


def refusal(document: dict[str, Any], token: str) -> str | None:
    """None when the token verifies, else the reason it was refused."""
    try:
        keys = KeySet.from_jwks(document, ALLOWED)
    except ConfigurationError:
        return KEY_SET_REFUSED

    try:
        parsed = parse_compact(token, 1 << 20)
        key = keys.find(parsed.kid)
        if key is None:
            return reasons.UNKNOWN_KEY
        verify_signature(parsed, key)
    except InvalidToken as exc:
        return exc.reason

    return None


def case_id(case: dict[str, Any]) -> str:
    return f"tc{case['tcId']}-{case['comment']}"


# -- json_web_signature_test.json ---------------------------------------------


@pytest.mark.parametrize(
    ("group", "case"),
    [
        pytest.param(group, case, id=case_id(case))
        for group, case in cases(SIGNATURES)
        if case["result"] == "invalid" and case["tcId"] not in CONTRADICTED_BY_FILE
    ],
)
def test_invalid_signature_vector_is_refused(
    group: dict[str, Any], case: dict[str, Any]
) -> None:
    assert refusal(key_document(group), case["jws"]) is not None


@pytest.mark.parametrize(
    ("group", "case"),
    [
        pytest.param(group, case, id=case_id(case))
        for group, case in cases(SIGNATURES)
        if case["result"] == "valid"
        and header_alg(case["jws"]) in ALLOWED
        and case["tcId"] not in STRICTER_THAN_FILE
    ],
)
def test_valid_signature_vector_with_an_allowed_algorithm_is_accepted(
    group: dict[str, Any], case: dict[str, Any]
) -> None:
    assert refusal(key_document(group), case["jws"]) is None


@pytest.mark.parametrize(
    ("group", "case"),
    [
        pytest.param(group, case, id=f"{case_id(case)}-{header_alg(case['jws'])}")
        for group, case in cases(SIGNATURES)
        if case["result"] == "valid" and header_alg(case["jws"]) not in ALLOWED
    ],
)
def test_valid_signature_vector_with_an_algorithm_not_allowed_is_refused(
    group: dict[str, Any], case: dict[str, Any]
) -> None:
    """Correct signatures, but this service does not accept the algorithm."""
    assert refusal(key_document(group), case["jws"]) in (
        reasons.UNKNOWN_KEY,  # the key allows none of our algorithms
        reasons.ALGORITHM_KEY_MISMATCH,  # the key allows others, not this one
    )


@pytest.mark.parametrize("tc_id", sorted(STRICTER_THAN_FILE))
def test_valid_vector_with_a_character_outside_base64url_is_refused(tc_id: int) -> None:
    """Stricter than the file, on purpose (see STRICTER_THAN_FILE)."""
    group, case = next((g, c) for g, c in cases(SIGNATURES) if c["tcId"] == tc_id)

    assert case["result"] == "valid"
    assert "?" in case["jws"]
    assert refusal(key_document(group), case["jws"]) == reasons.MALFORMED_TOKEN


@pytest.mark.parametrize(("tc_id", "twin"), sorted(CONTRADICTED_BY_FILE.items()))
def test_padding_vectors_are_byte_identical_to_a_valid_vector(
    tc_id: int, twin: int
) -> None:
    """tcId 367 and 370 cannot be refused: they are tcId 357 verbatim."""
    by_id = {case["tcId"]: (group, case) for group, case in cases(SIGNATURES)}
    group, case = by_id[tc_id]
    _, valid = by_id[twin]

    assert case["result"] == "invalid" and valid["result"] == "valid"
    assert case["jws"] == valid["jws"]
    assert refusal(key_document(group), case["jws"]) is None


def hs256(secret: bytes, signing_input: str) -> str:
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def padded_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """The padded tokens tcId 367 and 370 were meant to be, correctly MACed."""
    group, case = next(
        (g, c) for g, c in cases(SIGNATURES) if c["tcId"] == CONTRADICTED_BY_FILE[367]
    )
    secret = base64.urlsafe_b64decode(group["private"]["k"] + "=")
    header, payload, signature = case["jws"].split(".")
    padded_payload = payload + "=" * (-len(payload) % 4)  # "VGVzdA=="

    return {
        "padded-signature": (f"{header}.{payload}.{signature}=", group),
        "padded-payload": (
            f"{header}.{padded_payload}." + hs256(secret, f"{header}.{padded_payload}"),
            group,
        ),
    }


@pytest.mark.parametrize("name", ["padded-signature", "padded-payload"])
def test_padded_base64url_that_pyjwt_accepts_is_refused(name: str) -> None:
    """PyJWT decodes padded base64url; RFC 7515 forbids padding, and so do we."""
    # A second accepted spelling of a token defeats anything keyed on the
    # token string (the verified-token cache, replay and revocation lists):
    # the strict decoder is what keeps one token one string.
    token, group = padded_variants()[name]
    secret = base64.urlsafe_b64decode(group["private"]["k"] + "=")

    accepted = PyJWS().decode_complete(token, secret, algorithms=["HS256"])

    assert accepted["payload"] == b"Test"
    assert refusal(key_document(group), token) == reasons.MALFORMED_TOKEN


@pytest.mark.parametrize("tc_id", sorted(CONTRADICTED_BY_FILE))
def test_pyjwt_accepts_the_padding_vectors_as_shipped(tc_id: int) -> None:
    """As shipped they are the valid tcId 357, so PyJWT accepts them, as do we."""
    group, case = next((g, c) for g, c in cases(SIGNATURES) if c["tcId"] == tc_id)
    secret = base64.urlsafe_b64decode(group["private"]["k"] + "=")

    accepted = PyJWS().decode_complete(case["jws"], secret, algorithms=["HS256"])

    assert accepted["payload"] == b"Test"


# -- json_web_key_test.json ---------------------------------------------------


@pytest.mark.parametrize(
    ("group", "case"),
    [
        pytest.param(
            group,
            case,
            id=case_id(case),
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[case["tcId"]])]
            if case["tcId"] in KNOWN_GAPS
            else [],
        )
        for group, case in cases(KEYS)
        if case["result"] == "invalid"
    ],
)
def test_invalid_key_vector_is_refused(
    group: dict[str, Any], case: dict[str, Any]
) -> None:
    assert refusal(key_document(group), case["jws"]) is not None


@pytest.mark.parametrize(
    ("group", "case"),
    [
        pytest.param(group, case, id=case_id(case))
        for group, case in cases(KEYS)
        if case["result"] == "valid"
    ],
)
def test_valid_key_vector_is_accepted_when_its_algorithm_is_allowed(
    group: dict[str, Any], case: dict[str, Any]
) -> None:
    outcome = refusal(key_document(group), case["jws"])

    if header_alg(case["jws"]) in ALLOWED:
        assert outcome is None
    else:
        assert outcome == reasons.UNKNOWN_KEY  # HS384/HS512 keys: no usable alg


@pytest.mark.parametrize(
    ("tc_id", "reason"),
    [
        (1, KEY_SET_REFUSED),  # HMAC secret and EC public key in one set
        (4, KEY_SET_REFUSED),  # two keys under one kid
        (6, reasons.UNKNOWN_KEY),  # use: enc
        (8, reasons.UNKNOWN_KEY),  # 1024-bit RSA
        (9, reasons.UNKNOWN_KEY),  # public exponent 1
        (10, reasons.UNKNOWN_KEY),  # HS256 secret under 32 bytes
        (16, reasons.UNKNOWN_KEY),  # empty HMAC secret
        (19, reasons.UNKNOWN_KEY),  # alg ES521 on a P-256 key
        (25, reasons.UNKNOWN_KEY),  # alg A256GCM: an encryption key
    ],
)
def test_unusable_key_vector_is_refused_before_any_signature_is_checked(
    tc_id: int, reason: str
) -> None:
    group, case = next((g, c) for g, c in cases(KEYS) if c["tcId"] == tc_id)

    assert refusal(key_document(group), case["jws"]) == reason


# -- the tally ----------------------------------------------------------------


def tally(document: dict[str, Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for group, case in cases(document):
        refused = refusal(key_document(group), case["jws"]) is not None
        tc_id, alg = case["tcId"], header_alg(case["jws"])
        if case["result"] == "invalid":
            counts["invalid refused" if refused else "invalid accepted"] += 1
        elif alg not in ALLOWED:
            counts["valid, algorithm not allowed, refused" if refused else "?"] += 1
        elif tc_id in STRICTER_THAN_FILE:
            counts["valid, refused as stricter than the file" if refused else "?"] += 1
        else:
            counts["valid accepted" if not refused else "valid refused"] += 1
    return counts


def test_signature_vector_tally_matches_the_file() -> None:
    all_cases = [case for _, case in cases(SIGNATURES)]
    valid = [c for c in all_cases if c["result"] == "valid"]
    invalid = [c for c in all_cases if c["result"] == "invalid"]
    # Same token under the same key, opposite verdicts.
    valid_pairs = {
        (json.dumps(key_document(g), sort_keys=True), c["jws"])
        for g, c in cases(SIGNATURES)
        if c["result"] == "valid"
    }
    contradicted = [
        c
        for g, c in cases(SIGNATURES)
        if c["result"] == "invalid"
        and (json.dumps(key_document(g), sort_keys=True), c["jws"]) in valid_pairs
    ]
    not_allowed = [c for c in valid if header_alg(c["jws"]) not in ALLOWED]
    off_alphabet = [
        c
        for c in valid
        if header_alg(c["jws"]) in ALLOWED
        and not re.fullmatch(r"[A-Za-z0-9_.-]*", c["jws"])
    ]

    # The exceptions listed above are exactly what the file holds.
    assert {c["tcId"] for c in off_alphabet} == STRICTER_THAN_FILE
    assert {c["tcId"] for c in contradicted} == set(CONTRADICTED_BY_FILE)
    assert len(all_cases) == SIGNATURES["numberOfTests"]

    assert tally(SIGNATURES) == {
        "valid accepted": len(valid) - len(not_allowed) - len(off_alphabet),
        "invalid refused": len(invalid) - len(contradicted),
        "valid, algorithm not allowed, refused": len(not_allowed),
        "valid, refused as stricter than the file": len(off_alphabet),
        "invalid accepted": len(contradicted),
    }


def test_key_vector_tally_matches_the_file() -> None:
    all_cases = [case for _, case in cases(KEYS)]
    valid = [c for c in all_cases if c["result"] == "valid"]
    invalid = [c for c in all_cases if c["result"] == "invalid"]
    not_allowed = [c for c in valid if header_alg(c["jws"]) not in ALLOWED]

    assert len(all_cases) == KEYS["numberOfTests"]
    assert tally(KEYS) == {
        "valid accepted": len(valid) - len(not_allowed),
        "invalid refused": len(invalid) - len(KNOWN_GAPS),
        "valid, algorithm not allowed, refused": len(not_allowed),
        "invalid accepted": len(KNOWN_GAPS),
    }
