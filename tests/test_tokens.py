"""Token verification: signature first, then each claim, then the cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from zt_middleware import reasons, tokens
from zt_middleware.errors import InvalidToken, KeySourceUnavailable
from zt_middleware.issuer import SigningKey
from zt_middleware.keys import JWKSSource, KeySet, StaticKeySource
from zt_middleware.settings import InsecureSettingWarning, Settings
from zt_middleware.tokens import TokenVerifier

ISSUER = "https://issuer.example.test"
AUDIENCE = "https://orders.example.test"


@pytest.fixture
def make_verifier(
    base_settings: dict[str, Any], rsa_key: SigningKey, clock
) -> Callable[..., TokenVerifier]:
    def make_verifier(*, key_source: Any = None, **overrides: Any) -> TokenVerifier:
        settings = Settings.from_mapping({**base_settings, **overrides})
        source = key_source or StaticKeySource(
            KeySet.from_jwks(rsa_key.jwks(), settings.algorithms)
        )
        return TokenVerifier(settings, source, clock=clock)

    return make_verifier


@pytest.fixture
def verifier(make_verifier) -> TokenVerifier:
    return make_verifier()


@pytest.fixture
def signed(forge, claims) -> Callable[..., str]:
    """``signed(**claim_overrides)``: the trusted key over a claim set; a
    value of ``...`` removes that claim."""

    def signed(header: dict[str, Any] | None = None, **overrides: Any) -> str:
        values = {k: v for k, v in claims(**overrides).items() if v is not ...}
        return forge(header or {"alg": "RS256", "kid": "k1", "typ": "JWT"}, values)

    return signed


def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as refused:
        verifier.verify_now(token)
    return refused.value.reason


# -- the principal ------------------------------------------------------------


def test_valid_token_yields_its_principal(verifier: TokenVerifier, mint, clock) -> None:
    token = mint(
        "alice",
        scopes=["orders:read", "orders:write"],
        session_id="s-1",
        extra={"acr": "mfa", "amr": ["pwd", "otp"], "auth_time": clock() - 60},
    )

    principal = verifier.verify_now(token)

    assert principal.subject == "alice"
    assert principal.issuer == ISSUER
    assert principal.scopes == {"orders:read", "orders:write"}
    assert principal.session_id == "s-1"
    assert principal.token_id is not None
    assert principal.acr == "mfa"
    assert principal.amr == ("pwd", "otp")
    assert principal.auth_time == clock() - 60
    assert principal.issued_at == clock()
    assert principal.expires_at == clock() + 300
    assert principal.kind == "user"
    with pytest.raises(TypeError):
        principal.claims["sub"] = "mallory"  # type: ignore[index]


def test_principal_keeps_no_trace_of_the_token(verifier: TokenVerifier, mint) -> None:
    token = mint("alice")
    principal = verifier.verify_now(token)

    for part in token.split("."):
        assert part not in repr(principal)
        assert part not in json.dumps(dict(principal.claims))


def test_scopes_come_from_an_scp_list_too(verifier: TokenVerifier, signed) -> None:
    token = signed(scope=..., scp=["orders:read", "orders:write"])

    assert verifier.verify_now(token).scopes == {"orders:read", "orders:write"}


def test_service_identity_is_a_service_principal(verifier: TokenVerifier, mint) -> None:
    assert verifier.verify_now(mint("svc:billing")).kind == "service"


def test_token_without_kid_is_verified_by_the_only_key(
    verifier: TokenVerifier, forge, claims
) -> None:
    assert verifier.verify_now(forge({"alg": "RS256"}, claims())).subject == "alice"


def test_token_signed_by_an_unknown_kid_is_refused(
    verifier: TokenVerifier, forge, claims, stranger_key: SigningKey
) -> None:
    token = forge({"alg": "RS256", "kid": "k2"}, claims(), key=stranger_key)

    assert refusal(verifier, token) == reasons.UNKNOWN_KEY


def test_token_signed_by_another_key_under_our_kid_is_refused(
    verifier: TokenVerifier, forge, claims, stranger_key: SigningKey
) -> None:
    token = forge({"alg": "RS256", "kid": "k1"}, claims(), key=stranger_key)

    assert refusal(verifier, token) == reasons.BAD_SIGNATURE


def test_no_keys_at_all_is_unavailable_not_invalid(make_verifier, mint) -> None:
    class Empty(StaticKeySource):
        def current(self) -> None:  # type: ignore[override]
            return None

    verifier = make_verifier(key_source=Empty(KeySet([])))

    with pytest.raises(KeySourceUnavailable):
        verifier.verify_now(mint())


# -- typ ----------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "AT+JWT"])
def test_required_token_type_accepts_its_spellings(
    make_verifier, signed, typ: str
) -> None:
    """RFC 9068: ``at+jwt``, with or without ``application/``, any case."""
    verifier = make_verifier(token_type="at+jwt")
    token = signed({"alg": "RS256", "kid": "k1", "typ": typ})

    assert verifier.verify_now(token).subject == "alice"


@pytest.mark.parametrize("typ", ["JWT", "application/jwt", "at+jwt+x", "", 1, None])
def test_required_token_type_refuses_anything_else(
    make_verifier, signed, typ: Any
) -> None:
    """An ID token (``JWT``) must not be usable as an access token."""
    verifier = make_verifier(token_type="at+jwt")
    header = {"alg": "RS256", "kid": "k1"}
    if typ is not None:
        header["typ"] = typ

    assert refusal(verifier, signed(header)) == reasons.WRONG_TOKEN_TYPE


def test_without_a_required_type_any_typ_passes(
    verifier: TokenVerifier, signed
) -> None:
    token = signed({"alg": "RS256", "kid": "k1", "typ": "whatever"})

    assert verifier.verify_now(token).subject == "alice"


# -- claims present and well typed --------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub"])
def test_token_missing_a_required_claim_is_refused(
    verifier: TokenVerifier, signed, claim: str
) -> None:
    assert refusal(verifier, signed(**{claim: ...})) == reasons.CLAIM_MISSING


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", [1]),
        ("exp", "9999999999"),
        ("exp", True),
        ("exp", None),
        ("exp", {"$date": 9999999999}),
        ("exp", 10**400),
        ("nbf", "0"),
        ("iat", "now"),
        ("iat", False),
        ("auth_time", "yesterday"),
    ],
    ids=[
        "exp-list",
        "exp-string",
        "exp-true",
        "exp-null",
        "exp-object",
        "exp-400-digits",
        "nbf-string",
        "iat-string",
        "iat-false",
        "auth_time-string",
    ],
)
def test_numeric_date_that_is_not_a_finite_json_number_is_refused(
    verifier: TokenVerifier, signed, claim: str, value: Any
) -> None:
    """Never converted: "9999999999" must not become a date far away."""
    assert refusal(verifier, signed(**{claim: value})) == reasons.CLAIM_INVALID


def test_exp_of_1e999_is_refused_not_read_as_infinity(
    verifier: TokenVerifier, forge, clock
) -> None:
    now = int(clock())
    payload = (
        f'{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice","iat":{now},"exp":1e999}}'
    )

    assert refusal(verifier, forge({"alg": "RS256", "kid": "k1"}, payload)) == (
        reasons.CLAIM_INVALID
    )


def test_exp_too_long_to_parse_is_malformed(
    verifier: TokenVerifier, forge, clock
) -> None:
    """Past Python's 4300-digit limit the JSON itself does not parse."""
    now = int(clock())
    payload = (
        f'{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"alice",'
        f'"iat":{now},"exp":{"9" * 5000}}}'
    )

    assert refusal(verifier, forge({"alg": "RS256", "kid": "k1"}, payload)) == (
        reasons.MALFORMED_CLAIMS
    )


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("foo", id="not-json"),
        pytest.param("[]", id="array"),
        pytest.param('"claims"', id="string"),
        pytest.param('{"sub":"alice","sub":"admin"}', id="duplicate-sub"),
        pytest.param('{"exp":NaN}', id="nan"),
        pytest.param('{"exp":Infinity}', id="infinity"),
        pytest.param(b"\xff\xfe", id="not-utf-8"),
    ],
)
def test_signed_payload_that_is_not_a_clean_json_object_is_refused(
    verifier: TokenVerifier, forge, payload: str | bytes
) -> None:
    token = forge({"alg": "RS256", "kid": "k1"}, payload)

    assert refusal(verifier, token) == reasons.MALFORMED_CLAIMS


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", 7),
        ("sub", ""),
        ("sub", ["alice"]),
        ("scope", ["orders:read"]),
        ("scp", "orders:read"),
        ("amr", "pwd"),
        ("amr", [1]),
        ("sid", 1),
        ("jti", {"id": 1}),
        ("acr", 2),
    ],
    ids=lambda value: repr(value),
)
def test_claim_of_the_wrong_type_is_refused(
    verifier: TokenVerifier, signed, claim: str, value: Any
) -> None:
    overrides = {claim: value, "scope": ...} if claim == "scp" else {claim: value}

    assert refusal(verifier, signed(**overrides)) == reasons.CLAIM_INVALID


# -- issuer and audience ------------------------------------------------------


@pytest.mark.parametrize(
    "iss",
    [
        "https://issuer.example.te",
        "https://issuer.example.test.evil",
        "https://issuer.example.test/",
        "HTTPS://ISSUER.EXAMPLE.TEST",
        [ISSUER],
        "",
    ],
    ids=["prefix", "extended", "trailing-slash", "upper-case", "list", "empty"],
)
def test_token_from_any_other_issuer_is_refused(
    verifier: TokenVerifier, signed, iss: Any
) -> None:
    assert refusal(verifier, signed(iss=iss)) == reasons.WRONG_ISSUER


@pytest.mark.parametrize(
    "aud", [AUDIENCE, [AUDIENCE], ["https://billing.example.test", AUDIENCE]]
)
def test_audience_naming_us_passes(verifier: TokenVerifier, signed, aud: Any) -> None:
    assert verifier.verify_now(signed(aud=aud)).subject == "alice"


@pytest.mark.parametrize(
    "aud",
    [
        [],
        "https://billing.example.test",
        ["https://billing.example.test"],
        "https://orders.example.te",
        f"{AUDIENCE} https://billing.example.test",
        [AUDIENCE, 7],
        {"aud": AUDIENCE},
        None,
    ],
    ids=[
        "empty-list",
        "other",
        "other-list",
        "prefix",
        "space-joined",
        "list-with-number",
        "object",
        "null",
    ],
)
def test_audience_not_naming_us_is_refused(
    verifier: TokenVerifier, signed, aud: Any
) -> None:
    assert refusal(verifier, signed(aud=aud)) == reasons.WRONG_AUDIENCE


# -- time ---------------------------------------------------------------------


def test_token_is_accepted_until_exp_plus_leeway(
    verifier: TokenVerifier, mint, clock
) -> None:
    token = mint(lifetime=300)

    clock.advance(300 + 30 - 1)
    assert verifier.verify_now(token).subject == "alice"
    clock.advance(1)
    assert refusal(verifier, token) == reasons.TOKEN_EXPIRED


def test_leeway_is_configurable(make_verifier, mint, clock) -> None:
    verifier = make_verifier(leeway=0)
    token = mint(lifetime=300)

    clock.advance(300)

    assert refusal(verifier, token) == reasons.TOKEN_EXPIRED


def test_token_not_valid_before_nbf_minus_leeway_is_refused(
    verifier: TokenVerifier, signed, clock
) -> None:
    assert refusal(verifier, signed(nbf=clock() + 31)) == reasons.TOKEN_NOT_YET_VALID
    assert verifier.verify_now(signed(nbf=clock() + 30)).subject == "alice"


def test_token_issued_in_the_future_is_refused(
    verifier: TokenVerifier, signed, clock
) -> None:
    """An ``iat`` ahead of the clock means a wrong clock or a forged claim."""
    later = int(clock()) + 31

    assert refusal(verifier, signed(iat=later, exp=later + 300)) == (
        reasons.ISSUED_IN_FUTURE
    )
    assert verifier.verify_now(signed(iat=later - 1, exp=later + 299)).subject


def test_token_older_than_lifetime_cap_is_refused(
    verifier: TokenVerifier, signed, clock
) -> None:
    """``exp - iat`` over 900 s is refused even with a good signature."""
    now = int(clock())

    assert refusal(verifier, signed(iat=now, exp=now + 901)) == (
        reasons.LIFETIME_EXCEEDED
    )
    assert verifier.verify_now(signed(iat=now, exp=now + 900)).subject == "alice"


def test_lifetime_cap_is_configurable(make_verifier, signed, clock) -> None:
    verifier = make_verifier(max_token_lifetime=60)
    now = int(clock())

    assert refusal(verifier, signed(iat=now, exp=now + 61)) == reasons.LIFETIME_EXCEEDED
    assert verifier.verify_now(signed(iat=now, exp=now + 60)).subject == "alice"


def test_lifetime_cap_turned_off_warns_and_accepts_long_tokens(
    make_verifier, signed, clock
) -> None:
    with pytest.warns(InsecureSettingWarning, match="max_token_lifetime"):
        verifier = make_verifier(max_token_lifetime=None)
    now = int(clock())

    assert verifier.verify_now(signed(iat=now, exp=now + 86400)).subject == "alice"


# -- the verified-token cache -------------------------------------------------


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts calls of the signature check inside the verifier."""
    calls: list[str] = []
    real = tokens.verified_claims

    def counting(jws: Any, key: Any) -> Any:
        calls.append(jws.kid)
        return real(jws, key)

    monkeypatch.setattr(tokens, "verified_claims", counting)
    return calls


def test_repeated_token_is_served_from_the_cache(
    verifier: TokenVerifier, mint, signature_checks: list[str]
) -> None:
    token = mint()

    first = verifier.verify_now(token)
    second = verifier.verify_now(token)

    assert second is first
    assert len(signature_checks) == 1


def test_cached_token_is_still_refused_once_expired(
    verifier: TokenVerifier, mint, clock, signature_checks: list[str]
) -> None:
    token = mint(lifetime=60)
    verifier.verify_now(token)

    clock.advance(60 + 30)

    assert refusal(verifier, token) == reasons.TOKEN_EXPIRED
    assert len(signature_checks) == 1


def test_cache_is_keyed_by_the_exact_token(
    verifier: TokenVerifier, mint, signature_checks: list[str]
) -> None:
    token = mint()
    verifier.verify_now(token)

    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}AA"

    assert refusal(verifier, tampered) == reasons.BAD_SIGNATURE


def test_cache_disabled_verifies_every_time(
    make_verifier, mint, signature_checks: list[str]
) -> None:
    verifier = make_verifier(verified_cache_size=0)
    token = mint()

    verifier.verify_now(token)
    verifier.verify_now(token)

    assert len(signature_checks) == 2


def test_cache_is_bounded_and_forgets_the_oldest_first(
    make_verifier, mint, signature_checks: list[str]
) -> None:
    verifier = make_verifier(verified_cache_size=2)
    first, second, third = mint("a"), mint("b"), mint("c")
    for token in (first, second, third):
        verifier.verify_now(token)

    verifier.verify_now(third)
    assert len(signature_checks) == 3
    verifier.verify_now(first)
    assert len(signature_checks) == 4


class RotatingEndpoint:
    """A JWKS opener whose document the test replaces."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.calls = 0

    def __call__(self, url: str, timeout: float, max_bytes: int) -> bytes:
        self.calls += 1
        return json.dumps(self.document).encode()


def test_key_rotation_empties_the_cache(
    make_verifier, mint, clock, rsa_key: SigningKey, stranger_key: SigningKey
) -> None:
    endpoint = RotatingEndpoint(rsa_key.jwks())
    source = JWKSSource(
        "https://issuer.example.test/jwks",
        allowed={"RS256"},
        ttl=60,
        clock=clock,
        opener=endpoint,
    )
    verifier = make_verifier(key_source=source)
    token = mint(lifetime=600)
    verifier.verify_now(token)

    # The issuer drops k1 (say, compromised): its tokens stop being accepted
    # at the next refresh, cached or not.
    endpoint.document = stranger_key.jwks()
    clock.advance(61)
    source.refresh()

    assert source.generation == 2
    assert refusal(verifier, token) == reasons.UNKNOWN_KEY


def test_new_material_under_the_same_kid_empties_the_cache(
    make_verifier, mint, clock, rsa_key: SigningKey, stranger_key: SigningKey
) -> None:
    endpoint = RotatingEndpoint(rsa_key.jwks())
    source = JWKSSource(
        "https://issuer.example.test/jwks",
        allowed={"RS256"},
        ttl=60,
        clock=clock,
        opener=endpoint,
    )
    verifier = make_verifier(key_source=source)
    token = mint(lifetime=600)
    verifier.verify_now(token)

    endpoint.document = {"keys": [{**stranger_key.public_jwk(), "kid": "k1"}]}
    clock.advance(61)
    source.refresh()

    assert refusal(verifier, token) == reasons.BAD_SIGNATURE


def test_verify_now_fetches_keys_when_the_source_asks(
    make_verifier, mint, clock, rsa_key
) -> None:
    endpoint = RotatingEndpoint(rsa_key.jwks())
    source = JWKSSource(
        "https://issuer.example.test/jwks",
        allowed={"RS256"},
        clock=clock,
        opener=endpoint,
    )
    verifier = make_verifier(key_source=source)

    assert verifier.verify_now(mint()).subject == "alice"
    assert endpoint.calls == 1
