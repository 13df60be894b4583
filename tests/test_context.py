"""The request context: the client address and the request id."""

from __future__ import annotations

import dataclasses
import re

import pytest

from zt_middleware.context import RequestContext, client_address, request_id

PROXIES = ("10.0.0.0/8", "::1")


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address("198.51.100.9", "127.0.0.1", ()) == "198.51.100.9"


def test_forwarded_for_from_an_untrusted_peer_changes_nothing() -> None:
    """Anyone can send ``X-Forwarded-For: 127.0.0.1``."""
    assert client_address("198.51.100.9", "127.0.0.1", PROXIES) == "198.51.100.9"


def test_forwarded_for_through_a_trusted_proxy_names_the_client() -> None:
    assert client_address("10.0.0.2", "203.0.113.7", PROXIES) == "203.0.113.7"


def test_chain_through_two_trusted_proxies_yields_the_first_untrusted_hop() -> None:
    """The client's own entries (left of the first untrusted hop) are ignored."""
    chain = "127.0.0.1, 6.6.6.6, 203.0.113.7, 10.0.0.5"

    assert client_address("10.0.0.2", chain, PROXIES) == "203.0.113.7"


def test_chain_of_only_trusted_hops_yields_the_leftmost() -> None:
    assert client_address("10.0.0.2", "10.1.1.1, 10.0.0.5", PROXIES) == "10.1.1.1"


def test_ipv6_proxy_is_trusted_by_address() -> None:
    assert client_address("::1", "2001:db8::7", PROXIES) == "2001:db8::7"


@pytest.mark.parametrize("forwarded", [None, "", " , "])
def test_empty_forwarded_for_leaves_the_peer(forwarded: str | None) -> None:
    assert client_address("10.0.0.2", forwarded, PROXIES) == "10.0.0.2"


def test_unknown_peer_stays_unknown() -> None:
    assert client_address(None, "203.0.113.7", PROXIES) is None


def test_peer_that_is_not_an_address_is_not_trusted() -> None:
    assert client_address("unix:/run/app.sock", "203.0.113.7", PROXIES) == (
        "unix:/run/app.sock"
    )


def test_tame_request_id_is_kept() -> None:
    assert request_id({"x-request-id": "req-42.a:b_c"}) == "req-42.a:b_c"


@pytest.mark.parametrize(
    "given",
    ["", "x" * 129, "id with spaces", "id\r\nX-Injected: 1", "<script>", "é"],
    ids=["empty", "too-long", "spaces", "crlf", "markup", "non-ascii"],
)
def test_untame_request_id_is_replaced(given: str) -> None:
    fresh = request_id({"x-request-id": given})

    assert fresh != given
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", fresh)


def test_missing_request_id_is_generated_fresh_each_time() -> None:
    assert request_id({}) != request_id({})


def test_request_context_is_frozen() -> None:
    ctx = RequestContext(method="GET", path="/")

    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.path = "/admin"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("hop", "expected"),
    [
        ("65.0.0.1:443", "65.0.0.1"),
        ("[2a02:d3c0::1]:8443", "2a02:d3c0::1"),
        ("[2a02:d3c0::1]", "2a02:d3c0::1"),
        ('"65.0.0.1"', "65.0.0.1"),
        ("unknown", "unknown"),
        ("065.0.0.1", "unknown"),
    ],
)
def test_hops_from_a_trusted_proxy_are_read_as_addresses_or_marked_unknown(
    hop: str, expected: str
) -> None:
    assert client_address("10.0.0.1", hop, ("10.0.0.0/8",)) == expected
