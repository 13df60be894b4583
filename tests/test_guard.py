"""The guard: the order of its checks, attacks from public bug reports in
peer libraries, path spellings, credentials, key sources, and failing closed.

Every request goes through ``Guard.decide`` (or ``adecide``) with a
``RequestContext`` and the settings' route table, as an adapter would send it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from zt_middleware import reasons
from zt_middleware.context import RequestContext
from zt_middleware.decision import Decision, Outcome
from zt_middleware.guard import Guard
from zt_middleware.issuer import SigningKey
from zt_middleware.keys import JWKSSource
from zt_middleware.routes import Requirement, RouteTable
from zt_middleware.tokens import TokenVerifier

ISSUER = "https://issuer.example.test"
AUDIENCE = "https://orders.example.test"


def request(
    path: str = "/api/orders",
    token: str | None = None,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> RequestContext:
    """The context an adapter would build; ``token`` becomes a Bearer header."""
    lowered = {name.lower(): value for name, value in (headers or {}).items()}
    if token is not None:
        lowered["authorization"] = f"Bearer {token}"
    return RequestContext(method=method, path=path, headers=lowered, **fields)


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture
def guard(make_guard: Callable[..., Guard]) -> Guard:
    return make_guard()


def assert_refused(decision: Decision, status: int, reason: str) -> None:
    assert not decision.allowed
    assert decision.status == status
    assert decision.reason == reason


# -- order of checks ----------------------------------------------------------


def test_public_route_passes_without_a_token(guard: Guard) -> None:
    decision = guard.decide(request("/healthz"))

    assert decision.allowed
    assert decision.reasons == (reasons.PUBLIC_ROUTE,)
    assert decision.principal is None


def test_public_route_is_decided_before_the_credential_is_read(guard: Guard) -> None:
    """A broken or hostile token on a public route is not even parsed."""
    decision = guard.decide(request("/healthz", "not-a-token"))

    assert decision.allowed


def test_protected_route_without_a_token_is_401_without_an_error_code(
    guard: Guard,
) -> None:
    """RFC 6750 3.1: a request with no credentials gets a bare challenge."""
    decision = guard.decide(request("/api/orders"))

    assert_refused(decision, 401, reasons.MISSING_TOKEN)
    assert decision.error is None
    assert "error=" not in decision.www_authenticate("api")


def test_scoped_token_on_its_route_is_allowed(guard: Guard, mint) -> None:
    decision = guard.decide(request("/api/orders", mint(scopes=["orders:read"])))

    assert decision.allowed
    assert decision.reasons == (reasons.ALLOWED,)
    assert decision.principal.subject == "alice"


def test_token_is_verified_before_scopes_are_compared(
    guard: Guard, mint, clock
) -> None:
    """An expired token lacking the scope is a 401, not a 403."""
    token = mint(scopes=["profile"], lifetime=60)
    clock.advance(60 + 30)

    decision = guard.decide(request("/api/orders", token))

    assert_refused(decision, 401, reasons.TOKEN_EXPIRED)
    assert decision.error == "invalid_token"


def test_route_missing_from_the_table_and_unannotated_is_refused_with_a_valid_token(
    guard: Guard, mint
) -> None:
    decision = guard.decide(request("/api/refunds", mint(scopes=["orders:read"])))

    assert_refused(decision, 403, reasons.ROUTE_UNANNOTATED)


def test_unannotated_route_without_a_token_says_both_reasons(guard: Guard) -> None:
    decision = guard.decide(request("/api/refunds"))

    assert decision.status == 401
    assert decision.reasons == (reasons.MISSING_TOKEN, reasons.ROUTE_UNANNOTATED)


def test_view_annotation_applies_where_the_table_says_nothing(
    guard: Guard, mint
) -> None:
    needs_refunds = Requirement(scopes=frozenset({"refunds:write"}))
    token = mint(scopes=["refunds:write"])

    assert guard.decide(
        request("/api/refunds", token, requirement=needs_refunds)
    ).allowed
    assert_refused(
        guard.decide(request("/api/refunds", mint(), requirement=needs_refunds)),
        403,
        reasons.SCOPE_MISSING,
    )


def test_public_table_rule_never_loosens_an_annotated_view(guard: Guard) -> None:
    """Stricter wins: a view marked ``@requires`` under a public rule."""
    needs = Requirement(scopes=frozenset({"ops:read"}))

    decision = guard.decide(request("/healthz", requirement=needs))

    assert_refused(decision, 401, reasons.MISSING_TOKEN)


def test_public_annotation_never_loosens_a_protected_table_rule(guard: Guard) -> None:
    decision = guard.decide(
        request("/api/orders", requirement=Requirement(public=True))
    )

    assert_refused(decision, 401, reasons.MISSING_TOKEN)


def test_view_annotation_cannot_replace_the_tables_acr(make_guard, mint) -> None:
    guard = make_guard(routes=[{"path": "/api/pay", "scopes": ["pay"], "acr": "phr"}])
    view = Requirement(scopes=frozenset({"pay"}), acr="mfa")
    token = mint(scopes=["pay"], extra={"acr": "mfa"})

    assert not guard.decide(request("/api/pay", token, requirement=view)).allowed


def test_stronger_acr_in_acr_levels_meets_both_merged_needs(make_guard, mint) -> None:
    guard = make_guard(
        routes=[{"path": "/api/pay", "scopes": ["pay"], "acr": "phr"}],
        acr_levels=["pwd", "mfa", "phr", "phrh"],
    )
    view = Requirement(scopes=frozenset({"pay"}), acr="mfa")

    weak = guard.decide(
        request(
            "/api/pay", mint(scopes=["pay"], extra={"acr": "mfa"}), requirement=view
        )
    )
    strong = guard.decide(
        request(
            "/api/pay", mint(scopes=["pay"], extra={"acr": "phrh"}), requirement=view
        )
    )

    assert weak.acr_values == "phr"
    assert strong.allowed


def test_scopes_are_compared_before_acr(make_guard, mint) -> None:
    guard = make_guard(routes=[{"path": "/api/pay", "scopes": ["pay"], "acr": "phr"}])

    decision = guard.decide(request("/api/pay", mint(scopes=["profile"])))

    assert_refused(decision, 403, reasons.SCOPE_MISSING)


def test_route_needing_a_higher_acr_challenges_for_it(make_guard, mint) -> None:
    guard = make_guard(routes=[{"path": "/api/pay", "scopes": ["pay"], "acr": "phr"}])

    decision = guard.decide(
        request("/api/pay", mint(scopes=["pay"], extra={"acr": "pwd"}))
    )

    assert decision.outcome is Outcome.CHALLENGE
    assert_refused(decision, 401, reasons.ACR_TOO_LOW)
    assert decision.error == "insufficient_user_authentication"
    assert 'acr_values="phr"' in decision.www_authenticate("api")
    assert guard.decide(
        request("/api/pay", mint(scopes=["pay"], extra={"acr": "phr"}))
    ).allowed


@pytest.mark.parametrize("auth_age", [None, 301])
def test_route_with_max_age_challenges_old_or_unknown_authentication(
    make_guard, mint, clock, auth_age: int | None
) -> None:
    guard = make_guard(routes=[{"path": "/api/pay", "scopes": ["pay"], "max_age": 300}])
    extra = {} if auth_age is None else {"auth_time": int(clock()) - auth_age}

    decision = guard.decide(request("/api/pay", mint(scopes=["pay"], extra=extra)))

    assert_refused(decision, 401, reasons.AUTHENTICATION_TOO_OLD)
    assert 'max_age="300"' in decision.www_authenticate("api")


def test_route_with_max_age_allows_fresh_authentication(
    make_guard, mint, clock
) -> None:
    guard = make_guard(routes=[{"path": "/api/pay", "scopes": ["pay"], "max_age": 300}])
    token = mint(scopes=["pay"], extra={"auth_time": int(clock()) - 300})

    assert guard.decide(request("/api/pay", token)).allowed


# -- 1. algorithm confusion and "none" ----------------------------------------


def public_key_encodings(key: SigningKey) -> dict[str, bytes]:
    public = key.private_key.public_key()
    return {
        "pem": key.public_pem(),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "openssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
        "jwk": json.dumps(key.public_jwk()).encode(),
    }


def hs256_token(secret: bytes, claims: dict[str, Any]) -> str:
    """HS256 by hand: PyJWT refuses to use a public key as an HMAC secret."""
    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}))}.{b64(json.dumps(claims))}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.mark.parametrize("encoding", ["pem", "der", "openssh", "jwk"])
@pytest.mark.parametrize("keys_from", ["jwks", "pem_keys-with-hs256-allowed"])
def test_hs256_keyed_with_our_rsa_public_key_is_refused(
    make_guard, rsa_key: SigningKey, claims, tmp_path, encoding: str, keys_from: str
) -> None:
    """CVE-2015-9235 / CVE-2022-29217: the public key is no HMAC secret."""
    if keys_from == "jwks":
        guard = make_guard()
    else:
        pem_file = tmp_path / "k1.pem"
        pem_file.write_bytes(rsa_key.public_pem())
        guard = make_guard(
            jwks=None, pem_keys={"k1": str(pem_file)}, algorithms=["RS256", "HS256"]
        )
    secret = public_key_encodings(rsa_key)[encoding]

    decision = guard.decide(request("/api/orders", hs256_token(secret, claims())))

    assert_refused(decision, 401, reasons.ALGORITHM_KEY_MISMATCH)
    assert decision.error == "invalid_token"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_token_is_refused(guard: Guard, claims, alg: str) -> None:
    token = f"{b64(json.dumps({'alg': alg, 'kid': 'k1'}))}.{b64(json.dumps(claims()))}."

    decision = guard.decide(request("/api/orders", token))

    assert_refused(decision, 401, reasons.ALGORITHM_NOT_ALLOWED)
    assert decision.error == "invalid_token"


# -- 2. headers that change the rules -----------------------------------------


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (
            {"alg": "RS256", "kid": "k1", "crit": ["x-binding"], "x-binding": "d7"},
            reasons.UNSUPPORTED_CRITICAL_HEADER,
        ),
        (
            {"alg": "RS256", "kid": "k1", "b64": False, "crit": ["b64"]},
            reasons.UNSUPPORTED_CRITICAL_HEADER,
        ),
        ('{"alg":"RS256","kid":"k1","alg":"RS256"}', reasons.MALFORMED_HEADER),
        ('{"alg":"HS256","kid":"k1","alg":"RS256"}', reasons.MALFORMED_HEADER),
    ],
    ids=["crit-x-binding", "b64-false", "alg-twice-same", "alg-twice-different"],
)
def test_correctly_signed_token_with_a_header_we_cannot_honour_is_refused(
    guard: Guard, forge, claims, header: Any, reason: str
) -> None:
    token = forge(header, claims(), alg="RS256")

    assert_refused(guard.decide(request("/api/orders", token)), 401, reason)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://evil.test/jwks.json"),
        ("x5u", "https://evil.test/cert.pem"),
        ("jwk", {"kty": "oct", "k": "AAAA"}),
        ("x5c", ["MIIB"]),
    ],
)
def test_header_carrying_or_pointing_at_a_key_is_refused(
    guard: Guard, forge, claims, name: str, value: Any
) -> None:
    token = forge({"alg": "RS256", "kid": "k1", name: value}, claims())

    decision = guard.decide(request("/api/orders", token))

    assert_refused(decision, 401, reasons.FORBIDDEN_HEADER)
    assert decision.error == "invalid_token"


# -- 3. issuer, audience and scope lookalikes ---------------------------------


@pytest.mark.parametrize(
    ("iss", "reason"),
    [
        ("https://issuer.example.te", reasons.WRONG_ISSUER),
        ([ISSUER], reasons.WRONG_ISSUER),
        (..., reasons.CLAIM_MISSING),
    ],
    ids=["prefix", "list", "missing"],
)
def test_issuer_lookalikes_are_refused(
    guard: Guard, forge, claims, iss: Any, reason: str
) -> None:
    values = {k: v for k, v in claims(iss=iss).items() if v is not ...}

    decision = guard.decide(
        request("/api/orders", forge({"alg": "RS256", "kid": "k1"}, values))
    )

    assert_refused(decision, 401, reason)


def test_audience_list_holding_ours_passes(guard: Guard, mint) -> None:
    token = mint(
        scopes=["orders:read"], audience=["https://billing.example.test", AUDIENCE]
    )

    assert guard.decide(request("/api/orders", token)).allowed


@pytest.mark.parametrize("audience", [[], "https://billing.example.test"])
def test_audience_not_holding_ours_is_refused(
    guard: Guard, mint, audience: Any
) -> None:
    token = mint(scopes=["orders:read"], audience=audience)

    assert_refused(
        guard.decide(request("/api/orders", token)), 401, reasons.WRONG_AUDIENCE
    )


@pytest.mark.parametrize(
    "scope", ["orders:read-all", "xorders:read", "orders:rea", "ORDERS:READ"]
)
def test_scope_lookalike_is_insufficient(guard: Guard, mint, scope: str) -> None:
    decision = guard.decide(request("/api/orders", mint(scopes=[scope])))

    assert_refused(decision, 403, reasons.SCOPE_MISSING)
    assert decision.error == "insufficient_scope"
    assert 'scope="orders:read"' in decision.www_authenticate("api")


def test_scopes_from_an_scp_list_work(guard: Guard, forge, claims) -> None:
    values = {k: v for k, v in claims(scp=["orders:read"]).items() if k != "scope"}
    token = forge({"alg": "RS256", "kid": "k1"}, values)

    assert guard.decide(request("/api/orders", token)).allowed


# -- 4. dates that are not numbers --------------------------------------------


@pytest.mark.parametrize(
    ("claim", "raw"),
    [
        ("exp", "[1]"),
        ("exp", "1e999"),
        ("exp", '"9999999999"'),
        ("nbf", '"0"'),
        ("iat", '"now"'),
        ("exp", "true"),
        ("exp", "1" + "0" * 399),
    ],
    ids=[
        "exp-list",
        "exp-1e999",
        "exp-string",
        "nbf-string",
        "iat-string",
        "exp-true",
        "exp-400-digits",
    ],
)
def test_signed_date_claim_that_is_not_a_number_is_refused(
    guard: Guard, forge, clock, claim: str, raw: str
) -> None:
    """Written as raw JSON text and signed with the real key."""
    now = int(clock())
    members = {
        "iss": json.dumps(ISSUER),
        "aud": json.dumps(AUDIENCE),
        "sub": '"alice"',
        "scope": '"orders:read"',
        "iat": str(now),
        "exp": str(now + 300),
    }
    members[claim] = raw
    payload = (
        "{" + ",".join(f'"{name}":{value}' for name, value in members.items()) + "}"
    )

    decision = guard.decide(
        request("/api/orders", forge({"alg": "RS256", "kid": "k1"}, payload))
    )

    assert_refused(decision, 401, reasons.CLAIM_INVALID)
    assert decision.error == "invalid_token"


# -- 5. shapes meant to make the parser work hard -----------------------------


def oversized_token(mint) -> str:
    token = mint(scopes=["orders:read"], extra={"padding": "x" * 9000})
    assert len(token) > 12 * 1024
    return token


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda mint: "a" + "." * 3000, reasons.MALFORMED_TOKEN),
        (
            lambda mint: ".".join([*mint().split("."), "AAAA", "AAAA"]),
            reasons.MALFORMED_TOKEN,
        ),
        (oversized_token, reasons.TOKEN_TOO_LARGE),
        (
            lambda mint: f"{b64('alg=RS256')}.{mint().split('.', 1)[1]}",
            reasons.MALFORMED_HEADER,
        ),
    ],
    ids=["a-and-3000-dots", "five-segments", "signed-12-kb", "header-not-json"],
)
def test_hostile_token_shape_is_refused_in_under_5_ms(
    guard: Guard, mint, make_token: Callable[..., str], reason: str
) -> None:
    """A guard against quadratic work on attacker-sized input."""
    ctx = request("/api/orders", make_token(mint))
    guard.decide(ctx)  # warm up once: first-call costs are not the question

    started = time.perf_counter()
    decision = guard.decide(ctx)
    elapsed = time.perf_counter() - started

    assert_refused(decision, 401, reason)
    assert elapsed < 0.005


# -- 6. path spellings --------------------------------------------------------


# Each spelling, and the reason a token without ``orders:read`` is refused.
PROTECTED_SPELLINGS = [
    ("//api/orders", reasons.SCOPE_MISSING),
    ("/api//orders", reasons.SCOPE_MISSING),
    ("/./api/orders", reasons.SCOPE_MISSING),
    ("/reports/summary/../../api/orders", reasons.SCOPE_MISSING),
    ("/api/orders/", reasons.SCOPE_MISSING),
    ("/%61pi/orders", reasons.SCOPE_MISSING),
    ("/%2561pi/orders", reasons.SCOPE_MISSING),
    ("/api/orders/.", reasons.SCOPE_MISSING),
    ("/api\\orders", reasons.SCOPE_MISSING),
    ("/api/%2e%2e/api/orders", reasons.SCOPE_MISSING),
    # One ".." climbs one segment: this is /reports/api/orders, which no
    # rule names, so the default denies it.
    ("/reports/summary/../api/orders", reasons.ROUTE_UNANNOTATED),
]


@pytest.mark.parametrize(("path", "_"), PROTECTED_SPELLINGS)
def test_other_spellings_of_a_protected_path_need_a_token(
    guard: Guard, path: str, _: str
) -> None:
    assert_refused(guard.decide(request(path)), 401, reasons.MISSING_TOKEN)


@pytest.mark.parametrize(("path", "reason"), PROTECTED_SPELLINGS)
def test_other_spellings_of_a_protected_path_need_its_scope(
    guard: Guard, mint, path: str, reason: str
) -> None:
    decision = guard.decide(request(path, mint(scopes=["profile"])))

    assert_refused(decision, 403, reason)


def test_upper_case_path_in_a_case_sensitive_app_is_default_denied(
    guard: Guard, mint
) -> None:
    """Not the protected rule, not any rule: refused even with the scope."""
    assert guard.decide(request("/API/ORDERS")).reasons == (
        reasons.MISSING_TOKEN,
        reasons.ROUTE_UNANNOTATED,
    )
    assert_refused(
        guard.decide(request("/API/ORDERS", mint(scopes=["profile"]))),
        403,
        reasons.ROUTE_UNANNOTATED,
    )
    assert_refused(
        guard.decide(request("/API/ORDERS", mint(scopes=["orders:read"]))),
        403,
        reasons.ROUTE_UNANNOTATED,
    )


def test_upper_case_path_in_a_case_insensitive_app_matches_the_protected_rule(
    make_guard, mint
) -> None:
    guard = make_guard(case_insensitive_paths=True)

    assert guard.decide(request("/API/ORDERS")).reasons == (reasons.MISSING_TOKEN,)
    assert_refused(
        guard.decide(request("/API/ORDERS", mint(scopes=["profile"]))),
        403,
        reasons.SCOPE_MISSING,
    )
    assert guard.decide(request("/API/ORDERS", mint(scopes=["orders:read"]))).allowed


@pytest.mark.parametrize(
    "path",
    [
        "/healthzevil",
        "/healthz/../api/orders",
        "/healthz.json",
        "/healthz%00",
        "/x/healthz",
    ],
)
def test_paths_that_only_resemble_the_public_one_are_not_public(
    guard: Guard, path: str
) -> None:
    decision = guard.decide(request(path))

    assert_refused(decision, 401, reasons.MISSING_TOKEN)


def test_dot_segments_never_turn_a_protected_route_public(make_guard, mint) -> None:
    """Both the path as sent and its normal form are judged."""
    # A framework routes the path as sent: /api/files/a/../../../healthz runs
    # the files view with name="a/../../../healthz", while its normal form is
    # the public /healthz.
    guard = make_guard(
        routes=[
            {"path": "/api/files/{name:path}", "scopes": ["files:read"]},
            {"path": "/healthz", "public": True},
        ]
    )
    path = "/api/files/a/../../../healthz"

    assert_refused(guard.decide(request(path)), 401, reasons.MISSING_TOKEN)
    assert_refused(
        guard.decide(request(path, mint(scopes=["profile"]))),
        403,
        reasons.SCOPE_MISSING,
    )
    assert guard.decide(request(path, mint(scopes=["files:read"]))).allowed


@pytest.mark.parametrize("path", ["//healthz", "/healthz/", "/%68ealthz", "/./healthz"])
def test_public_only_when_the_path_as_sent_is_the_public_path(
    guard: Guard, path: str
) -> None:
    """Another spelling of a public path is not public: no rule names it."""
    decision = guard.decide(request(path))

    assert decision.reasons == (reasons.MISSING_TOKEN, reasons.ROUTE_UNANNOTATED)


# -- 7. methods ---------------------------------------------------------------


def test_head_is_judged_as_get(make_guard, mint) -> None:
    guard = make_guard(
        routes=[{"path": "/api/orders", "methods": ["GET"], "scopes": ["orders:read"]}]
    )

    assert guard.decide(request(method="HEAD")).reasons == (reasons.MISSING_TOKEN,)
    assert guard.decide(
        request(token=mint(scopes=["orders:read"]), method="HEAD")
    ).allowed


def test_websocket_handshake_is_judged_as_get(guard: Guard, mint) -> None:
    ctx = request(
        token=mint(scopes=["orders:read"]), method="WEBSOCKET", websocket=True
    )

    assert guard.decide(ctx).allowed


def test_real_cors_preflight_passes_without_a_token(guard: Guard) -> None:
    headers = {
        "Origin": "https://app.example.test",
        "Access-Control-Request-Method": "GET",
    }

    decision = guard.decide(request(method="OPTIONS", headers=headers))

    assert decision.allowed
    assert decision.reasons == (reasons.CORS_PREFLIGHT,)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "https://app.example.test"},
        {"Access-Control-Request-Method": "GET"},
    ],
    ids=["neither", "origin-only", "method-only"],
)
def test_options_without_both_preflight_headers_needs_a_token(
    guard: Guard, headers: dict[str, str]
) -> None:
    decision = guard.decide(request(method="OPTIONS", headers=headers))

    assert not decision.allowed
    assert decision.status == 401


def test_preflight_exemption_can_be_turned_off(make_guard) -> None:
    guard = make_guard(allow_cors_preflight=False)
    headers = {
        "Origin": "https://app.example.test",
        "Access-Control-Request-Method": "GET",
    }

    assert not guard.decide(request(method="OPTIONS", headers=headers)).allowed


def test_method_override_header_changes_nothing(make_guard, mint) -> None:
    guard = make_guard(
        routes=[
            {"path": "/api/orders", "methods": ["GET"], "scopes": ["orders:read"]},
            {"path": "/healthz", "methods": ["GET"], "public": True},
        ]
    )
    override = {"X-HTTP-Method-Override": "GET"}

    post_orders = request(
        token=mint(scopes=["orders:read"]), method="POST", headers=override
    )
    assert_refused(guard.decide(post_orders), 403, reasons.ROUTE_UNANNOTATED)
    post_health = request("/healthz", method="POST", headers=override)
    assert guard.decide(post_health).reasons == (
        reasons.MISSING_TOKEN,
        reasons.ROUTE_UNANNOTATED,
    )


# -- 9. nothing of a refused credential leaks ---------------------------------


def test_refused_credentials_appear_in_no_response_and_no_log(
    guard: Guard,
    forge,
    claims,
    stranger_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    canary = "CANARY-7f3a9c-5e1d2b8a40c6"
    unknown = forge(
        {"alg": "RS256", "kid": "kid-canary-31b7"},
        claims(sub="sub-canary-88d0", jti="jti-canary-c2e4"),
        key=stranger_key,
    )
    secrets = [
        canary,
        "7f3a9c",
        "5e1d2b8a40c6",
        "kid-canary-31b7",
        "sub-canary-88d0",
        "jti-canary-c2e4",
        *unknown.split("."),
    ]
    caplog.set_level(logging.DEBUG)

    rendered = []
    for credential, reason in (
        (canary, reasons.MALFORMED_TOKEN),
        (unknown, reasons.UNKNOWN_KEY),
    ):
        ctx = request("/api/orders", credential, headers={"X-Request-ID": "req-1"})
        decision = guard.decide(ctx)
        assert_refused(decision, 401, reason)
        status, headers, body = decision.render(guard.settings.realm, ctx.request_id)
        rendered.append(f"{status} {headers!r} {body!r} {decision!r}")

    logged = [
        f"{record.getMessage()} {record.msg!r} {record.args!r} {vars(record)!r}"
        for record in caplog.records
    ]
    assert logged, "the refusals were audited"
    for secret in secrets:
        for text in rendered + logged:
            assert secret not in text


# -- credentials --------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        ("Bearer a, Bearer b", reasons.MULTIPLE_CREDENTIALS),
        ("Bearer a,Bearer b", reasons.MULTIPLE_CREDENTIALS),
        ("Bearer", reasons.MALFORMED_AUTHORIZATION),
        ("Bearer ", reasons.MALFORMED_AUTHORIZATION),
        ("Bearer a b", reasons.MALFORMED_AUTHORIZATION),
        ("Bearer\ta", reasons.MALFORMED_AUTHORIZATION),
        ('Bearer a"b', reasons.MALFORMED_AUTHORIZATION),
    ],
)
def test_malformed_or_doubled_bearer_header_is_an_invalid_request(
    guard: Guard, authorization: str, reason: str
) -> None:
    decision = guard.decide(request(headers={"Authorization": authorization}))

    assert_refused(decision, 400, reason)
    assert decision.error == "invalid_request"


@pytest.mark.parametrize(
    "authorization", ["Basic dXNlcjpwYXNz", "Digest x", "Token abc"]
)
def test_other_authentication_schemes_count_as_no_token(
    guard: Guard, authorization: str
) -> None:
    decision = guard.decide(request(headers={"Authorization": authorization}))

    assert_refused(decision, 401, reasons.MISSING_TOKEN)
    assert "error=" not in decision.www_authenticate("api")


def test_bearer_scheme_is_case_insensitive(guard: Guard, mint) -> None:
    """RFC 9110 11.1: auth schemes are case-insensitive."""
    header = {"Authorization": "bEaReR " + mint(scopes=["orders:read"])}

    assert guard.decide(request(headers=header)).allowed


def test_token_in_the_query_string_is_refused(guard: Guard, mint) -> None:
    """RFC 6750 2.3 is not supported: URLs end up in logs."""
    assert_refused(
        guard.decide(request(query_has_token=True)),
        400,
        reasons.MALFORMED_AUTHORIZATION,
    )
    assert_refused(
        guard.decide(request(token=mint(scopes=["orders:read"]), query_has_token=True)),
        400,
        reasons.MULTIPLE_CREDENTIALS,
    )


@pytest.mark.parametrize("extra_chars", [8193 - 1, 9000, 100_000])
def test_token_over_8_kib_is_refused_as_too_large(
    guard: Guard, extra_chars: int
) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9." + "A" * extra_chars + ".AAAA"

    assert_refused(guard.decide(request(token=token)), 401, reasons.TOKEN_TOO_LARGE)


@pytest.mark.parametrize(
    "authorization",
    ["Bearer a, Bearer " + "b" * 9000, "Basic " + "a" * 9000, "Bearer " + "a " * 4500],
    ids=["two-bearers", "basic", "many-spaces"],
)
def test_oversized_authorization_header_is_refused_before_it_is_parsed(
    guard: Guard, authorization: str
) -> None:
    decision = guard.decide(request(headers={"Authorization": authorization}))

    assert_refused(decision, 401, reasons.TOKEN_TOO_LARGE)


def test_token_size_cap_is_configurable(make_guard, mint) -> None:
    guard = make_guard(max_token_size=512)
    token = mint(scopes=["orders:read"])
    assert len(token) > 512

    assert_refused(guard.decide(request(token=token)), 401, reasons.TOKEN_TOO_LARGE)


# -- the verified-token cache through the guard -------------------------------


def test_cached_token_still_meets_each_routes_own_scopes(make_guard, mint) -> None:
    guard = make_guard(
        routes=[
            {"path": "/api/orders", "scopes": ["orders:read"]},
            {"path": "/api/admin", "scopes": ["admin"]},
        ]
    )
    token = mint(scopes=["orders:read"])

    assert guard.decide(request("/api/orders", token)).allowed
    assert guard.decide(request("/api/orders", token)).allowed
    assert_refused(
        guard.decide(request("/api/admin", token)), 403, reasons.SCOPE_MISSING
    )


def test_cached_token_is_refused_once_expired(guard: Guard, mint, clock) -> None:
    token = mint(scopes=["orders:read"], lifetime=60)
    assert guard.decide(request(token=token)).allowed

    clock.advance(60 + 30)

    assert_refused(guard.decide(request(token=token)), 401, reasons.TOKEN_EXPIRED)


# -- a JWKS key source --------------------------------------------------------


class Endpoint:
    """A JWKS opener: serves ``document``, or fails; records calls and threads."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.failing = False
        self.threads: list[int] = []

    @property
    def calls(self) -> int:
        return len(self.threads)

    def __call__(self, url: str, timeout: float, max_bytes: int) -> bytes:
        self.threads.append(threading.get_ident())
        if self.failing:
            raise TimeoutError("timed out")
        return json.dumps(self.document).encode()


@pytest.fixture
def endpoint(rsa_key: SigningKey) -> Endpoint:
    return Endpoint(rsa_key.jwks())


@pytest.fixture
def make_jwks_guard(make_guard, endpoint: Endpoint, clock) -> Callable[..., Guard]:
    def make_jwks_guard(*, stale_for: int = 3600) -> Guard:
        source = JWKSSource(
            "https://issuer.example.test/jwks",
            allowed={"RS256", "PS256"},
            ttl=300,
            cooldown=30,
            stale_for=stale_for,
            clock=clock,
            opener=endpoint,
        )
        return make_guard(key_source=source)

    return make_jwks_guard


@pytest.fixture
def jwks_guard(make_jwks_guard: Callable[..., Guard]) -> Guard:
    return make_jwks_guard()


def test_first_request_fetches_the_jwks(
    jwks_guard: Guard, endpoint: Endpoint, mint
) -> None:
    assert jwks_guard.decide(request(token=mint(scopes=["orders:read"]))).allowed
    assert endpoint.calls == 1


def test_unknown_kid_refetches_at_most_once_per_cooldown(
    jwks_guard: Guard,
    endpoint: Endpoint,
    mint,
    forge,
    claims,
    clock,
    stranger_key: SigningKey,
) -> None:
    jwks_guard.decide(request(token=mint(scopes=["orders:read"])))
    rotated = forge({"alg": "RS256", "kid": "k2"}, claims(), key=stranger_key)

    for _ in range(10):
        assert_refused(
            jwks_guard.decide(request(token=rotated)), 401, reasons.UNKNOWN_KEY
        )
    assert endpoint.calls == 1

    # The issuer publishes k2; the next refetch is allowed 30 s later.
    endpoint.document = {
        "keys": [*endpoint.document["keys"], stranger_key.public_jwk()]
    }
    clock.advance(29)
    assert_refused(jwks_guard.decide(request(token=rotated)), 401, reasons.UNKNOWN_KEY)
    clock.advance(1)
    assert jwks_guard.decide(
        request(token=forge({"alg": "RS256", "kid": "k2"}, claims(), key=stranger_key))
    ).allowed
    assert endpoint.calls == 2


def test_rotation_bumps_the_generation_and_empties_the_verifier_cache(
    jwks_guard: Guard, endpoint: Endpoint, mint, clock, stranger_key: SigningKey
) -> None:
    token = mint(scopes=["orders:read"], lifetime=900)
    assert jwks_guard.decide(request(token=token)).allowed
    assert jwks_guard.key_source.generation == 1

    endpoint.document = stranger_key.jwks()
    clock.advance(301)

    assert_refused(jwks_guard.decide(request(token=token)), 401, reasons.UNKNOWN_KEY)
    assert jwks_guard.key_source.generation == 2


def test_unreachable_jwks_serves_the_last_good_set_then_answers_503(
    jwks_guard: Guard, endpoint: Endpoint, mint, clock
) -> None:
    assert jwks_guard.decide(request(token=mint(scopes=["orders:read"]))).allowed
    endpoint.failing = True

    clock.advance(300 + 3600)
    assert jwks_guard.decide(request(token=mint(scopes=["orders:read"]))).allowed

    clock.advance(1)
    decision = jwks_guard.decide(request(token=mint(scopes=["orders:read"])))

    assert_refused(decision, 503, reasons.KEY_SOURCE_UNAVAILABLE)
    assert decision.error == "temporarily_unavailable"
    status, headers, _ = decision.render("api")
    assert status == 503
    assert ("retry-after", "5") in headers
    assert 'error="temporarily_unavailable"' in dict(headers)["www-authenticate"]


def test_jwks_down_from_the_start_is_503_until_it_answers(
    jwks_guard: Guard, endpoint: Endpoint, mint, clock
) -> None:
    endpoint.failing = True
    assert_refused(
        jwks_guard.decide(request(token=mint(scopes=["orders:read"]))),
        503,
        reasons.KEY_SOURCE_UNAVAILABLE,
    )

    endpoint.failing = False
    clock.advance(30)

    assert jwks_guard.decide(request(token=mint(scopes=["orders:read"]))).allowed
    assert endpoint.calls == 2


def test_cached_token_is_refused_once_the_key_set_is_too_stale(
    make_jwks_guard: Callable[..., Guard], endpoint: Endpoint, mint, clock
) -> None:
    """The cache never outlives the last good key set."""
    jwks_guard = make_jwks_guard(stale_for=60)
    token = mint(scopes=["orders:read"], lifetime=900)
    assert jwks_guard.decide(request(token=token)).allowed
    endpoint.failing = True

    clock.advance(300 + 61)
    decision = jwks_guard.decide(request(token=token))

    assert_refused(decision, 503, reasons.KEY_SOURCE_UNAVAILABLE)


def test_adecide_fetches_keys_off_the_event_loop(
    jwks_guard: Guard, endpoint: Endpoint, mint
) -> None:
    ctx = request(token=mint(scopes=["orders:read"]))

    async def decide_on_the_loop() -> tuple[int, Decision]:
        return threading.get_ident(), await jwks_guard.adecide(ctx)

    loop_thread, decision = asyncio.run(decide_on_the_loop())

    assert decision.allowed
    assert endpoint.calls == 1
    assert endpoint.threads[0] != loop_thread


# -- failing closed -----------------------------------------------------------


class Boom(RuntimeError):
    pass


def explode(exc: type[Exception] = Boom) -> Callable[..., Any]:
    def raiser(*args: Any, **kwargs: Any) -> Any:
        raise exc("injected")

    return raiser


@pytest.mark.parametrize(
    "inject",
    [
        pytest.param(
            lambda g, mp: mp.setattr(g.key_source, "current", explode()),
            id="key-source-current",
        ),
        pytest.param(
            lambda g, mp: mp.setattr(g.key_source, "should_refresh", explode()),
            id="key-source-should-refresh",
        ),
        pytest.param(
            lambda g, mp: mp.setattr(RouteTable, "match", explode()),
            id="route-table-match",
        ),
        pytest.param(
            lambda g, mp: mp.setattr("zt_middleware.guard.normalise_path", explode()),
            id="normalise-path",
        ),
        pytest.param(
            lambda g, mp: mp.setattr(TokenVerifier, "verify", explode(ValueError)),
            id="verifier-verify",
        ),
        pytest.param(
            lambda g, mp: mp.setattr(
                "zt_middleware.tokens.verified_claims", explode(TypeError)
            ),
            id="verify-signature",
        ),
        pytest.param(
            lambda g, mp: mp.setattr(
                "zt_middleware.tokens._principal", explode(KeyError)
            ),
            id="principal",
        ),
        pytest.param(
            lambda g, mp: mp.setattr(g, "_authorise", explode(AttributeError)),
            id="authorise",
        ),
        pytest.param(
            lambda g, mp: mp.setattr(g, "_is_preflight", explode()),
            id="preflight-check",
        ),
    ],
)
def test_exception_while_deciding_is_a_403_never_an_allow(
    guard: Guard,
    mint,
    monkeypatch: pytest.MonkeyPatch,
    inject: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = request(token=mint(scopes=["orders:read"]))
    inject(guard, monkeypatch)

    decision = guard.decide(ctx)

    assert_refused(decision, 403, reasons.DECISION_ERROR)
    assert decision.principal is None
    assert any(
        "refusing" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.ERROR
    )


@pytest.mark.parametrize("method", ["read", "write"])
def test_store_failure_is_a_503_never_an_allow(
    guard: Guard, mint, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setattr(guard.store, method, explode(ConnectionError))

    decision = guard.decide(request(token=mint(scopes=["orders:read"])))

    assert_refused(decision, 503, reasons.STORE_UNAVAILABLE)
    assert decision.retry_after is not None


def test_exception_while_deciding_on_the_event_loop_is_a_refusal(
    guard: Guard, mint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RouteTable, "match", explode())

    decision = asyncio.run(guard.adecide(request(token=mint(scopes=["orders:read"]))))

    assert_refused(decision, 403, reasons.DECISION_ERROR)


def test_log_handler_that_reports_its_own_failure_does_not_change_the_decision(
    guard: Guard, mint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler that fails the stdlib way (``handleError``) is contained."""

    class DiskFull(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                raise OSError("disk full")
            except OSError:
                self.handleError(record)

    monkeypatch.setattr(logging, "raiseExceptions", False)
    audit_logger = logging.getLogger("zt_middleware.audit")
    handler = DiskFull()
    audit_logger.addHandler(handler)
    try:
        allowed = guard.decide(request(token=mint(scopes=["orders:read"])))
        refused = guard.decide(request())
    finally:
        audit_logger.removeHandler(handler)

    assert allowed.allowed
    assert_refused(refused, 401, reasons.MISSING_TOKEN)


class RaisingHandler(logging.Handler):
    """A third-party handler that lets its exception escape ``emit``."""

    def emit(self, record: logging.LogRecord) -> None:
        raise OSError("disk full")


@pytest.mark.parametrize("driver", ["decide", "adecide"])
@pytest.mark.parametrize("failure", ["audit-record-raises", "log-handler-raises"])
def test_failing_audit_is_a_refusal_not_an_exception(
    guard: Guard, mint, monkeypatch: pytest.MonkeyPatch, driver: str, failure: str
) -> None:
    """A decision that cannot be audited is not carried out: 503, never 500."""
    if failure == "audit-record-raises":
        monkeypatch.setattr(guard.audit, "record", explode(ValueError))
    else:
        unregistered = logging.Logger("zt-test-failing-audit")
        unregistered.addHandler(RaisingHandler())
        monkeypatch.setattr(guard.audit, "logger", unregistered)
    ctx = request(token=mint(scopes=["orders:read"]))

    if driver == "decide":
        decision = guard.decide(ctx)
    else:
        decision = asyncio.run(guard.adecide(ctx))

    assert_refused(decision, 503, reasons.AUDIT_UNAVAILABLE)
    assert decision.error == "temporarily_unavailable"
    assert decision.retry_after is not None


def test_a_repeat_within_a_minute_writes_no_history_but_a_change_does(
    make_guard, mint, clock, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    # Risk is not the subject: a device change must not be challenged here.
    guard = make_guard(risk_challenge_at=1000, risk_deny_at=1000)
    writes: list[str | None] = []
    real_write = guard.store.write

    def counting(update):  # type: ignore[no-untyped-def]
        writes.append(update.device)
        return real_write(update)

    monkeypatch.setattr(guard.store, "write", counting)
    token = mint(scopes=["orders:read"], session_id="s1", lifetime=900)

    def visit(agent: str) -> None:
        headers = {"authorization": f"Bearer {token}", "user-agent": agent}
        ctx = RequestContext("GET", "/api/orders", headers, client="198.51.100.7")
        assert guard.decide(ctx).allowed

    visit("laptop")
    visit("laptop")  # the same, seconds later: nothing new
    clock.advance(61)
    visit("laptop")  # a minute on: seen_at is refreshed
    visit("phone")  # another device: written at once

    assert len(writes) == 3
