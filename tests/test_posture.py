"""Device posture: a JWT signed by device management, compared with minimums."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from zt_middleware.errors import ConfigurationError
from zt_middleware.issuer import Issuer, SigningKey, generate_key
from zt_middleware.keys import KeySet
from zt_middleware.posture import (
    PostureResult,
    PostureVerifier,
    parse_patch_level,
    parse_version,
)

MDM = "https://mdm.example.test"
HEADER = "x-device-posture"
MINIMUMS = {
    "macOS": "14.4.1",
    "Windows": "10.0.22631",
    "iOS": "17.5",
    "Android": "2026-10",
}
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")

Mint = Callable[..., str]


@pytest.fixture(scope="module")
def mdm_key() -> SigningKey:
    """Device management's signing key: not the identity provider's."""
    return generate_key("ES256", kid="mdm-1")


@pytest.fixture
def verifier(mdm_key: SigningKey, clock: Callable[[], float]) -> PostureVerifier:
    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)
    return PostureVerifier(keys, issuer=MDM, minimums=MINIMUMS, clock=clock)


@pytest.fixture
def mint(mdm_key: SigningKey, clock: Callable[[], float]) -> Mint:
    """``mint(os=..., os_version=..., key=..., **claims)``: a posture JWT.

    The device goes into a ``device`` object unless ``flat=True``; other
    keyword arguments set or (with None) remove top-level claims.
    """

    def mint(
        os: str | None = "macOS",
        os_version: str | None = "14.4.1 (23E224)",
        *,
        key: SigningKey | None = None,
        flat: bool = False,
        **claims: Any,
    ) -> str:
        now = int(clock())
        device = {"os": os, "os_version": os_version}
        device = {name: value for name, value in device.items() if value is not None}
        values: dict[str, Any] = {"iss": MDM, "sub": "device-42", "iat": now}
        values["exp"] = now + 3600
        values.update(device if flat else {"device": device})
        values.update(claims)
        values = {name: value for name, value in values.items() if value is not None}

        return Issuer(key or mdm_key, MDM).sign(values)

    return mint


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def _with_payload(token: str, payload: dict[str, Any]) -> str:
    """The same header and signature over a different payload."""
    header, _, signature = token.split(".")
    return f"{header}.{_b64url(json.dumps(payload))}.{signature}"


# -- good and outdated devices -------------------------------------------------


def test_up_to_date_device_is_ok(verifier: PostureVerifier, mint: Mint) -> None:
    result = verifier.verify({HEADER: mint("macOS", "14.4.1 (23E224)")})

    assert result == PostureResult("ok", os="macos", version="14.4.1 (23E224)")
    assert result.ok and result.reason is None


def test_flat_device_claims_are_read_too(verifier: PostureVerifier, mint: Mint) -> None:
    result = verifier.verify({HEADER: mint("Windows", "10.0.22631.3447", flat=True)})

    assert result.status == "ok"
    assert result.os == "windows"


def test_device_below_the_minimum_is_outdated(
    verifier: PostureVerifier, mint: Mint
) -> None:
    result = verifier.verify({HEADER: mint("Windows", "10.0.19045")})

    assert result == PostureResult(
        "outdated", os="windows", version="10.0.19045", reason="posture_outdated"
    )


@pytest.mark.parametrize(
    ("version", "status"),
    [
        ("14.4.1", "ok"),
        ("14.4.2", "ok"),
        ("14.10", "ok"),  # numbers, not text: 10 > 4
        ("15", "ok"),
        ("v15.0", "ok"),
        ("14.4.1.0", "ok"),
        ("14.4.1-beta.2", "ok"),
        ("14.4.0", "outdated"),
        ("14.4", "outdated"),
        ("14.3.99", "outdated"),
        ("9.99.99", "outdated"),
    ],
)
def test_versions_compare_component_by_component(
    verifier: PostureVerifier, mint: Mint, version: str, status: str
) -> None:
    assert verifier.verify({HEADER: mint("macOS", version)}).status == status


def test_missing_version_components_count_as_zero(
    mdm_key: SigningKey, mint: Mint, clock: Callable[[], float]
) -> None:
    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)
    verifier = PostureVerifier(
        keys, issuer=MDM, minimums={"ubuntu": "22.04.0"}, clock=clock
    )

    assert verifier.verify({HEADER: mint("Ubuntu", "22.04")}).status == "ok"
    assert verifier.verify({HEADER: mint("Ubuntu", "20.04.6 LTS")}).status == "outdated"


def test_os_names_compare_without_case(verifier: PostureVerifier, mint: Mint) -> None:
    assert verifier.verify({HEADER: mint("MACOS", "14.5")}).status == "ok"
    assert verifier.verify({HEADER: mint(" macos ", "14.5")}).status == "ok"


@pytest.mark.parametrize(
    ("patch_level", "status"),
    [
        ("2026-10-05", "ok"),
        ("2026-10", "ok"),
        ("2027-01-01", "ok"),
        ("2026-09-30", "outdated"),
        ("2025-12-01", "outdated"),
    ],
)
def test_patch_level_minimum_compares_the_patch_level_claim(
    verifier: PostureVerifier, mint: Mint, patch_level: str, status: str
) -> None:
    token = mint("Android", "16", flat=True, patch_level=patch_level)

    result = verifier.verify({HEADER: token})

    assert result.status == status
    assert result.version == patch_level


def test_patch_level_minimum_without_patch_level_claim_is_invalid(
    verifier: PostureVerifier, mint: Mint
) -> None:
    result = verifier.verify({HEADER: mint("Android", "16")})

    assert (result.status, result.reason) == ("invalid", "posture_invalid")
    assert result.detail == "claim_missing"


@pytest.mark.parametrize("patch_level", ["2026-13-01", "2026-10-00", "16", "Oct 2026"])
def test_patch_level_that_is_not_a_date_is_invalid(
    verifier: PostureVerifier, mint: Mint, patch_level: str
) -> None:
    token = mint("Android", "16", flat=True, patch_level=patch_level)

    result = verifier.verify({HEADER: token})

    assert (result.status, result.detail) == ("invalid", "version_unparseable")


@pytest.mark.parametrize("version", ["", "abc", "14..4", "14.4.", "(23E224)", ".14"])
def test_unparseable_version_is_invalid(
    verifier: PostureVerifier, mint: Mint, version: str
) -> None:
    result = verifier.verify({HEADER: mint("macOS", version)})

    assert (result.status, result.reason) == ("invalid", "posture_invalid")
    assert result.detail == "version_unparseable"


def test_os_without_a_minimum_is_unknown_os(
    verifier: PostureVerifier, mint: Mint
) -> None:
    result = verifier.verify({HEADER: mint("Plan9", "4")})

    assert result == PostureResult(
        "unknown_os", os="plan9", version="4", reason="posture_unknown_os"
    )


# -- absent ------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {HEADER: ""}, {HEADER: "   "}])
def test_absent_header_is_missing(
    verifier: PostureVerifier, headers: dict[str, str]
) -> None:
    result = verifier.verify(headers)

    assert result == PostureResult("missing", reason="posture_missing")


def test_absent_header_is_missing_whether_required_or_not(
    mdm_key: SigningKey,
) -> None:
    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)
    strict = PostureVerifier(keys, issuer=MDM, minimums=MINIMUMS, required=True)

    assert strict.required is True
    assert strict.verify({}).status == "missing"


def test_configured_header_name_is_matched_lower_cased(
    mdm_key: SigningKey, mint: Mint, clock: Callable[[], float]
) -> None:
    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)
    verifier = PostureVerifier(
        keys, issuer=MDM, header="X-Device-Attestation", minimums=MINIMUMS, clock=clock
    )

    assert verifier.verify({"x-device-attestation": mint()}).status == "ok"
    assert verifier.verify({HEADER: mint()}).status == "missing"


# -- tokens that must not be believed --------------------------------------------


def test_posture_signed_by_an_unknown_key_is_invalid(
    verifier: PostureVerifier, mint: Mint
) -> None:
    stranger = generate_key("ES256", kid="mdm-2")

    result = verifier.verify({HEADER: mint(key=stranger)})

    assert (result.status, result.detail) == ("invalid", "unknown_kid")
    assert result.os is None


def test_posture_signed_by_another_key_under_the_right_kid_is_invalid(
    verifier: PostureVerifier, mint: Mint
) -> None:
    impostor = generate_key("ES256", kid="mdm-1")

    result = verifier.verify({HEADER: mint(key=impostor)})

    assert (result.status, result.detail) == ("invalid", "bad_signature")


def test_posture_signed_by_the_identity_provider_key_is_invalid(
    verifier: PostureVerifier, mint: Mint, rsa_key: SigningKey
) -> None:
    """Access-token keys do not vouch for devices: a separate key set."""
    result = verifier.verify({HEADER: mint(key=rsa_key)})

    assert result.status == "invalid"
    assert result.detail == "unknown_kid"


def test_tampered_posture_is_invalid(verifier: PostureVerifier, mint: Mint) -> None:
    token = mint("Windows", "10.0.19045")
    payload = {
        "iss": MDM,
        "iat": 1_767_225_600,
        "exp": 1_767_229_200,
        "device": {"os": "Windows", "os_version": "10.0.26100"},
    }

    result = verifier.verify({HEADER: _with_payload(token, payload)})

    assert (result.status, result.detail) == ("invalid", "bad_signature")


def test_expired_posture_is_invalid(
    verifier: PostureVerifier, mint: Mint, clock: Any
) -> None:
    token = mint()
    clock.advance(3600 + 30)

    result = verifier.verify({HEADER: token})

    assert (result.status, result.detail) == ("invalid", "token_expired")


def test_posture_just_inside_the_leeway_is_still_ok(
    verifier: PostureVerifier, mint: Mint, clock: Any
) -> None:
    token = mint()
    clock.advance(3600 + 29)

    assert verifier.verify({HEADER: token}).status == "ok"


def test_posture_older_than_max_age_is_invalid_even_before_exp(
    verifier: PostureVerifier, mint: Mint, clock: Any
) -> None:
    token = mint(exp=int(clock()) + 7 * 86400)
    clock.advance(86400 + 31)

    result = verifier.verify({HEADER: token})

    assert (result.status, result.detail) == ("invalid", "posture_too_old")


def test_posture_issued_in_the_future_is_invalid(
    verifier: PostureVerifier, mint: Mint, clock: Any
) -> None:
    result = verifier.verify({HEADER: mint(iat=int(clock()) + 3600)})

    assert (result.status, result.detail) == ("invalid", "issued_in_future")


def test_posture_not_yet_valid_is_invalid(
    verifier: PostureVerifier, mint: Mint, clock: Any
) -> None:
    result = verifier.verify({HEADER: mint(nbf=int(clock()) + 600)})

    assert (result.status, result.detail) == ("invalid", "token_not_yet_valid")


def test_posture_from_another_issuer_is_invalid(
    verifier: PostureVerifier, mint: Mint
) -> None:
    result = verifier.verify({HEADER: mint(iss="https://other-mdm.example.test")})

    assert (result.status, result.detail) == ("invalid", "wrong_issuer")


@pytest.mark.parametrize("claim", ["iss", "iat", "exp"])
def test_posture_without_a_required_claim_is_invalid(
    verifier: PostureVerifier, mint: Mint, claim: str
) -> None:
    result = verifier.verify({HEADER: mint(**{claim: None})})

    assert (result.status, result.detail) == ("invalid", "claim_missing")


@pytest.mark.parametrize("exp", ['"1767229200"', "true", "null", "[1]", "1e400"])
def test_posture_exp_that_is_not_a_number_is_invalid(
    verifier: PostureVerifier, forge: Any, mdm_key: SigningKey, exp: str
) -> None:
    payload = (
        f'{{"iss": "{MDM}", "iat": 1767225600, "exp": {exp}, '
        '"device": {"os": "macOS", "os_version": "14.5"}}'
    )
    token = forge({"alg": "ES256", "kid": "mdm-1"}, payload, key=mdm_key)

    result = verifier.verify({HEADER: token})

    assert (result.status, result.detail) == ("invalid", "claim_invalid")


@pytest.mark.parametrize(
    ("device", "detail"),
    [
        ("macOS 14.4.1", "claim_invalid"),
        (["macOS", "14.4.1"], "claim_invalid"),
        ({"os_version": "14.4.1"}, "claim_missing"),
        ({"os": 14, "os_version": "14.4.1"}, "claim_invalid"),
        ({"os": "", "os_version": "14.4.1"}, "claim_invalid"),
        ({"os": "macOS", "os_version": 14.4}, "claim_invalid"),
        ({"os": "macOS", "os_version": "1" * 65}, "claim_invalid"),
        ({"os": "macOS"}, "claim_missing"),
    ],
)
def test_malformed_device_claim_is_invalid(
    verifier: PostureVerifier, mint: Mint, device: Any, detail: str
) -> None:
    result = verifier.verify({HEADER: mint(None, None, device=device)})

    assert (result.status, result.detail) == ("invalid", detail)


def test_unsigned_posture_is_invalid(verifier: PostureVerifier, mint: Mint) -> None:
    _, payload, _ = mint().split(".")
    token = f"{_b64url(json.dumps({'alg': 'none'}))}.{payload}."

    result = verifier.verify({HEADER: token})

    assert (result.status, result.detail) == ("invalid", "algorithm_not_allowed")


def test_huge_header_is_invalid_without_being_parsed(
    verifier: PostureVerifier,
) -> None:
    result = verifier.verify({HEADER: "eyJ" + "A" * 1_000_000})

    assert (result.status, result.detail) == ("invalid", "token_too_large")


@pytest.mark.parametrize(
    "value", ["garbage", "a.b", "a.b.c.d", "\x00\x00", "é.é.é", "[[[[[[.a.b"]
)
def test_garbage_header_is_invalid(verifier: PostureVerifier, value: str) -> None:
    result = verifier.verify({HEADER: value})

    assert result.status == "invalid"
    assert result.reason == "posture_invalid"


def test_repeated_header_is_invalid(verifier: PostureVerifier, mint: Mint) -> None:
    # Frameworks join a repeated header with ", ".
    token = mint()

    assert verifier.verify({HEADER: f"{token}, {token}"}).status == "invalid"


def test_non_string_header_value_is_invalid(verifier: PostureVerifier) -> None:
    assert verifier.verify_token(b"eyJ.e30.sig").status == "invalid"


# -- repeat verification ---------------------------------------------------------


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the signature checks the posture module makes."""
    import zt_middleware.posture as posture

    checks: list[str] = []
    real = posture.verified_claims

    def counting(jws: Any, key: Any) -> Any:
        checks.append(key.kid)
        return real(jws, key)

    monkeypatch.setattr(posture, "verified_claims", counting)
    return checks


def test_same_token_is_verified_once_then_served_from_cache(
    verifier: PostureVerifier, mint: Mint, signature_checks: list[str]
) -> None:
    headers = {HEADER: mint()}

    results = [verifier.verify(headers) for _ in range(5)]

    assert {result.status for result in results} == {"ok"}
    assert signature_checks == ["mdm-1"]


def test_cached_token_still_expires(
    verifier: PostureVerifier, mint: Mint, clock: Any, signature_checks: list[str]
) -> None:
    headers = {HEADER: mint()}
    assert verifier.verify(headers).status == "ok"
    clock.advance(3600 + 30)

    result = verifier.verify(headers)

    assert (result.status, result.detail) == ("invalid", "token_expired")
    assert len(signature_checks) == 1


def test_cache_holds_at_most_cache_size_tokens(
    mdm_key: SigningKey, mint: Mint, clock: Any, signature_checks: list[str]
) -> None:
    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)
    verifier = PostureVerifier(
        keys, issuer=MDM, minimums=MINIMUMS, cache_size=2, clock=clock
    )
    first, second, third = (mint(jti=str(n)) for n in range(3))

    for token in (first, second, third, third, first):
        assert verifier.verify({HEADER: token}).status == "ok"

    # "first" was dropped to make room for "third", so it is checked again.
    assert len(signature_checks) == 4


def test_cache_size_zero_verifies_every_time(
    mdm_key: SigningKey, mint: Mint, clock: Any, signature_checks: list[str]
) -> None:
    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)
    verifier = PostureVerifier(
        keys, issuer=MDM, minimums=MINIMUMS, cache_size=0, clock=clock
    )
    headers = {HEADER: mint()}

    for _ in range(3):
        assert verifier.verify(headers).status == "ok"

    assert len(signature_checks) == 3


def test_invalid_tokens_are_not_cached(
    verifier: PostureVerifier, mint: Mint, signature_checks: list[str]
) -> None:
    headers = {HEADER: mint(iss="https://other-mdm.example.test")}

    for _ in range(3):
        assert verifier.verify(headers).status == "invalid"

    assert len(signature_checks) == 3


# -- secrets and failures ------------------------------------------------------------


def test_token_appears_in_no_log_and_no_result(
    verifier: PostureVerifier,
    mint: Mint,
    mdm_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [mint(), mint(key=generate_key("ES256", kid="x")), mint(iss="evil")]

    results = [verifier.verify({HEADER: token}) for token in tokens]

    for token, result in zip(tokens, results, strict=True):
        assert token.split(".")[1] not in repr(result)
        assert token.split(".")[1] not in caplog.text
    assert repr(verifier) == (
        f"PostureVerifier(issuer={MDM!r}, header='x-device-posture', "
        "minimums=['android', 'ios', 'macos', 'windows'], required=False)"
    )


def test_unexpected_error_becomes_invalid_and_logs_no_token(
    mdm_key: SigningKey, mint: Mint, caplog: pytest.LogCaptureFixture
) -> None:
    token = mint()

    def broken_clock() -> float:
        raise RuntimeError(f"clock broke while reading {token}")

    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)
    verifier = PostureVerifier(keys, issuer=MDM, minimums=MINIMUMS, clock=broken_clock)

    with caplog.at_level(logging.ERROR, logger="zt_middleware.posture"):
        result = verifier.verify({HEADER: token})

    assert (result.status, result.detail) == ("invalid", "posture_error")
    assert "RuntimeError" in caplog.text
    assert token not in caplog.text


# -- configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minimums", "message"),
    [
        ({"macOS": "14.x"}, r"minimums\['macOS'\]: expected a dotted version"),
        ({"macOS": "14.4.1 (23E224)"}, r"minimums\['macOS'\]"),
        ({"android": "2026-13"}, r"minimums\['android'\]"),
        ({"macOS": 14}, r"minimums\['macOS'\]"),
        ({"": "1.0"}, "OS names as keys"),
        ({"macOS": "14", "MACOS": "15"}, "'macos' is given twice"),
    ],
)
def test_bad_minimums_are_refused_at_start(
    mdm_key: SigningKey, minimums: dict[str, Any], message: str
) -> None:
    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)

    with pytest.raises(ConfigurationError, match=message):
        PostureVerifier(keys, issuer=MDM, minimums=minimums)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"issuer": ""}, "posture issuer"),
        ({"header": " "}, "posture header"),
        ({"max_age": 0}, "posture max_age"),
        ({"max_age": True}, "posture max_age"),
        ({"leeway": -1}, "posture leeway"),
        ({"cache_size": -1}, "posture cache_size"),
    ],
)
def test_bad_settings_are_refused_at_start(
    mdm_key: SigningKey, options: dict[str, Any], message: str
) -> None:
    keys = KeySet.from_jwks(mdm_key.jwks(), ALGORITHMS)
    arguments: dict[str, Any] = {"issuer": MDM, "minimums": MINIMUMS, **options}

    with pytest.raises(ConfigurationError, match=message):
        PostureVerifier(keys, **arguments)


def test_empty_key_set_is_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="posture keys"):
        PostureVerifier(KeySet([]), issuer=MDM, minimums=MINIMUMS)


# -- version parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10.0.19045", (10, 0, 19045)),
        ("14.4.1 (23E224)", (14, 4, 1)),
        ("v15", (15,)),
        ("22.04.3 LTS", (22, 4, 3)),
        ("1.2.3.4.5.6.7.8", (1, 2, 3, 4, 5, 6, 7, 8)),
        ("1.2.3.4.5.6.7.8.9", None),
        ("1234567890", None),
        ("14..4", None),
        ("", None),
        (None, None),
        ("9" * 100, None),
    ],
)
def test_parse_version(text: Any, parsed: tuple[int, ...] | None) -> None:
    assert parse_version(text) == parsed


def test_windows_builds_order_numerically() -> None:
    older, newer = parse_version("10.0.19045"), parse_version("10.0.22631")

    assert older is not None and newer is not None and older < newer


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("2026-10", (2026, 10)),
        ("2026-10-05", (2026, 10, 5)),
        ("2026-00", None),
        ("2026-10-32", None),
        ("26-10", None),
        ("2026.10", None),
    ],
)
def test_parse_patch_level(text: str, parsed: tuple[int, ...] | None) -> None:
    assert parse_patch_level(text) == parsed


def test_device_object_wins_over_flat_claims(
    verifier: PostureVerifier, mdm_key: SigningKey, clock: Callable[[], float]
) -> None:
    now = int(clock())
    claims = {"iss": MDM, "iat": now, "exp": now + 60, "os": "Plan9"}
    claims["device"] = {"os": "macOS", "os_version": "14.5"}

    result = verifier.verify({HEADER: Issuer(mdm_key, MDM).sign(claims)})

    assert (result.status, result.os) == ("ok", "macos")
