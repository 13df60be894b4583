"""Decisions on the wire: RFC 6750 / RFC 9470 challenges and a JSON body."""

from __future__ import annotations

import dataclasses
import json

import pytest

from zt_middleware import reasons
from zt_middleware.decision import Decision, Outcome, auth_param
from zt_middleware.principal import Principal


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("api", 'realm="api"'),
        ('say "hi"', 'realm="say \\"hi\\""'),
        ("back\\slash", 'realm="back\\\\slash"'),
        ('\\"', 'realm="\\\\\\""'),
        ("tab\tkept", 'realm="tab\tkept"'),
    ],
)
def test_auth_param_is_an_rfc_9110_quoted_string(value: str, quoted: str) -> None:
    assert auth_param("realm", value) == quoted


@pytest.mark.parametrize(
    "value", ["a\r\nSet-Cookie: x=1", "a\x00b", "caf\u00e9", "a\x7fb"]
)
def test_auth_param_drops_what_a_header_cannot_carry(value: str) -> None:
    """No CR, LF, NUL, DEL or non-ASCII: no header splitting, no mojibake."""
    param = auth_param("error_description", value)

    assert all(0x20 <= ord(ch) < 0x7F for ch in param)
    assert "\r" not in param and "\n" not in param


def missing_scope() -> Decision:
    return Decision(
        Outcome.DENY,
        403,
        (reasons.SCOPE_MISSING,),
        error="insufficient_scope",
        scope=frozenset({"orders:write", "orders:read"}),
        principal=Principal(subject="alice", issuer="https://issuer.example.test"),
    )


def test_bare_challenge_names_only_the_realm() -> None:
    decision = Decision(Outcome.DENY, 401, (reasons.MISSING_TOKEN,))

    assert decision.www_authenticate("api") == 'Bearer realm="api"'


def test_challenge_carries_error_description_and_sorted_scope() -> None:
    challenge = missing_scope().www_authenticate("orders")

    assert challenge == (
        'Bearer realm="orders", error="insufficient_scope", '
        'error_description="The token lacks a scope this resource needs.", '
        'scope="orders:read orders:write"'
    )


def test_step_up_challenge_carries_acr_values_and_max_age() -> None:
    """RFC 9470 section 3."""
    decision = Decision(
        Outcome.CHALLENGE,
        401,
        (reasons.ACR_TOO_LOW,),
        error="insufficient_user_authentication",
        acr_values="phr",
        max_age=300,
    )

    challenge = decision.www_authenticate("api")

    assert 'error="insufficient_user_authentication"' in challenge
    assert 'acr_values="phr"' in challenge
    assert 'max_age="300"' in challenge


def test_realm_with_quotes_is_escaped_in_the_rendered_header() -> None:
    _, headers, _ = missing_scope().render('my "api"')

    assert dict(headers)["www-authenticate"].startswith('Bearer realm="my \\"api\\"", ')


def test_refusal_renders_status_headers_and_a_json_body() -> None:
    status, headers, body = missing_scope().render("api", request_id="req-7")

    assert status == 403
    header_map = dict(headers)
    assert header_map["content-type"] == "application/json"
    assert header_map["content-length"] == str(len(body))
    assert header_map["cache-control"] == "no-store"
    assert "retry-after" not in header_map
    assert json.loads(body) == {
        "error": "insufficient_scope",
        "error_description": "The token lacks a scope this resource needs.",
        "reason": "scope_missing",
        "scope": "orders:read orders:write",
        "request_id": "req-7",
    }


def test_rendered_body_tells_nothing_about_the_principal() -> None:
    _, headers, body = missing_scope().render("api")

    assert b"alice" not in body
    assert "alice" not in repr(headers)


def test_refusal_without_an_error_code_is_unauthorized_in_the_body() -> None:
    decision = Decision(
        Outcome.DENY, 401, (reasons.MISSING_TOKEN, reasons.ROUTE_UNANNOTATED)
    )

    _, _, body = decision.render("api")

    assert json.loads(body) == {
        "error": "unauthorized",
        "error_description": (
            "This resource needs a bearer token in the Authorization header."
        ),
        "reason": "missing_token",
    }


def test_unavailable_renders_retry_after() -> None:
    decision = Decision(
        Outcome.DENY,
        503,
        (reasons.KEY_SOURCE_UNAVAILABLE,),
        error="temporarily_unavailable",
        retry_after=5,
    )

    status, headers, body = decision.render("api")

    assert status == 503
    assert ("retry-after", "5") in headers
    assert json.loads(body)["error"] == "temporarily_unavailable"


def test_own_description_replaces_the_default() -> None:
    decision = Decision(
        Outcome.DENY,
        403,
        (reasons.ROUTE_UNANNOTATED,),
        error="insufficient_scope",
        description='No policy opens this "route".',
    )

    _, headers, body = decision.render("api")

    assert json.loads(body)["error_description"] == 'No policy opens this "route".'
    assert (
        'error_description="No policy opens this \\"route\\"."'
        in dict(headers)["www-authenticate"]
    )


def test_allow_is_a_200_with_its_reasons() -> None:
    decision = Decision.allow(None, reasons.PUBLIC_ROUTE)

    assert decision.allowed
    assert decision.status == 200
    assert decision.reason == reasons.PUBLIC_ROUTE


def test_decision_without_reasons_has_an_empty_reason() -> None:
    assert Decision(Outcome.DENY, 403, ()).reason == ""


def test_decision_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        missing_scope().status = 200  # type: ignore[misc]
