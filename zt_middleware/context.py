"""The framework-neutral request an adapter builds for the guard."""

from __future__ import annotations

import ipaddress
import itertools
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from .routes import Requirement

__all__ = [
    "RequestContext",
    "client_address",
    "cookie_value",
    "request_id",
    "wants_html",
]

# The client address when a trusted proxy's X-Forwarded-For hop is garbage.
UNKNOWN_CLIENT = "unknown"

_PROCESS = uuid.uuid4().hex[:12] + "-"
_COUNTER = itertools.count(1)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the guard may look at: nothing here is trusted yet.

    ``headers`` are lower-cased; repeated headers are joined with ``", "``
    (as WSGI and Django do), which makes a repeated ``Authorization``
    header fail the credential syntax. ``requirement`` is what the framework
    resolved from the view's annotation, if it could.
    """

    method: str
    path: str
    # Out of the repr: the Authorization header and cookies are credentials.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    client: str | None = None
    requirement: Requirement | None = None
    route: str | None = None
    websocket: bool = False
    query_has_token: bool = False
    request_id: str = ""


def request_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Request-ID when it is tame, else a fresh one."""
    given = headers.get("x-request-id", "")
    if given and _REQUEST_ID.fullmatch(given):
        return given
    # Unique per process start and request; cheaper than a uuid4 per call.
    return f"{_PROCESS}{next(_COUNTER):x}"


@lru_cache(maxsize=64)
def _networks(
    proxies: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _is_trusted(
    address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: tuple[str, ...]
) -> str | None:
    """The client's address, believing X-Forwarded-For only via trusted proxies.

    Walk the chain from the right: every hop added by a trusted proxy is
    peeled off; the first untrusted address is the client. Anyone can write
    the left part of the header, so nothing beyond that point is believed.
    """
    if not peer or not forwarded_for or not trusted:
        return peer
    networks = _networks(trusted)
    if not _is_trusted(peer, networks):
        return peer

    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    client = peer
    for hop in reversed(hops):
        address = _hop_address(hop)
        if address is None:
            # A trusted proxy wrote something that is no address: nothing
            # about the client can be known, and the risk engine says so.
            return UNKNOWN_CLIENT
        client = address
        if not _is_trusted(address, networks):
            break

    return client


def _hop_address(hop: str) -> str | None:
    """The address in one hop: ``a.b.c.d``, ``a.b.c.d:port``, ``[v6]:port``."""
    hop = hop.strip().strip('"')
    if hop.startswith("["):
        host = hop[1 : hop.find("]")] if "]" in hop else ""
    elif hop.count(":") == 1:
        host = hop.partition(":")[0]
    else:
        host = hop
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def cookie_value(headers: Mapping[str, str], name: str | None) -> str | None:
    """The value of cookie ``name`` in the Cookie header, or None.

    Two cookies of that name (one planted for a parent domain, say) are
    joined with a comma, which no token contains: the credential is then
    refused rather than one of them picked.
    """
    if not name:
        return None
    header = headers.get("cookie")
    if not header or name not in header:
        return None

    found = []
    for part in header.replace(",", ";").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            found.append(value.strip().strip('"'))
    if not found:
        return None
    return ",".join(found)


def wants_html(headers: Mapping[str, str]) -> bool:
    """A browser navigation: it accepts text/html (APIs ask for JSON)."""
    return "text/html" in headers.get("accept", "")
