"""Allow and deny lists of networks, checked on every request.

:class:`IPLists` holds two lists of CIDR blocks (IPv4 and IPv6), validated
when they are loaded: a bad line is a :class:`ConfigurationError` naming the
file and the line, never a silently skipped entry. Each list is kept as
sorted, merged integer ranges per IP version, so a lookup is one strict
parse of the address and one ``bisect`` per list, whatever the list's size.

:func:`parse_address` is the one strict address parser the risk evidence
sources share: only canonical spellings (no ``0x51.2.69.142``, no
``81.2.17806``, no whitespace), and an IPv4-mapped IPv6 address is treated
as the IPv4 address it carries, so ``::ffff:10.1.2.3`` cannot slip past an
entry for ``10.0.0.0/8``.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .errors import ConfigurationError

__all__ = ["ALLOW", "DENY", "IPAddress", "IPLists", "Verdict", "parse_address"]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Verdict: TypeAlias = Literal["allow", "deny"]

ALLOW: Verdict = "allow"
DENY: Verdict = "deny"

# Longest textual address worth parsing: a full IPv6 address with an
# embedded IPv4 tail and a short zone id. Anything longer is not one.
_MAX_ADDRESS_CHARS = 64

# ::ffff:0:0/96, where IPv4-mapped IPv6 addresses live.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_BASE = int(_MAPPED.network_address)


def parse_address(address: object) -> IPAddress | None:
    """The address as an ``ipaddress`` object, or None if it is not one.

    IPv4-mapped IPv6 addresses come back as IPv4 and a zone id is dropped;
    anything that is not a canonical address (including non-strings) comes
    back as None.
    """
    ip: IPAddress
    if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        ip = address
    elif isinstance(address, str) and len(address) <= _MAX_ADDRESS_CHARS:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
    else:
        return None

    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id:
            # "fe80::1%eth0": the zone names a local interface, not a place.
            return ipaddress.IPv6Address(ip.packed)

    return ip


@dataclass(frozen=True, slots=True)
class _Ranges:
    """Disjoint, sorted inclusive integer ranges of one IP version."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    @classmethod
    def merge(cls, ranges: Iterable[tuple[int, int]]) -> _Ranges:
        starts: list[int] = []
        ends: list[int] = []
        for start, end in sorted(ranges):
            if ends and start <= ends[-1] + 1:
                ends[-1] = max(ends[-1], end)
            else:
                starts.append(start)
                ends.append(end)

        return cls(tuple(starts), tuple(ends))

    def __contains__(self, number: int) -> bool:
        index = bisect_right(self.starts, number) - 1
        return index >= 0 and number <= self.ends[index]

    def __len__(self) -> int:
        return len(self.starts)


@dataclass(frozen=True, slots=True)
class _NetworkList:
    """One list (allow or deny), split by IP version."""

    v4: _Ranges
    v6: _Ranges

    @classmethod
    def parse(cls, entries: Iterable[tuple[str, str]]) -> _NetworkList:
        """Build from ``(where, text)`` pairs; ``where`` names a bad entry."""
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for where, text in entries:
            version, start, end = _entry_range(where, text)
            (v4 if version == 4 else v6).append((start, end))

        return cls(_Ranges.merge(v4), _Ranges.merge(v6))

    def __contains__(self, ip: IPAddress) -> bool:
        ranges = self.v4 if ip.version == 4 else self.v6
        return int(ip) in ranges

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)


def _entry_range(where: str, text: object) -> tuple[int, int, int]:
    """One entry as (IP version, first, last), or ConfigurationError."""
    if not isinstance(text, str):
        raise ConfigurationError(
            f"{where}: expected an IP address or CIDR string, got {type(text).__name__}"
        )
    shown = text if len(text) <= 60 else text[:57] + "..."
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        # A block with host bits set ("10.1.2.3/8") is a typo more often
        # than not; widening it silently could allow a whole /8.
        try:
            meant = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"{where}: {shown!r} is not an IP address or CIDR"
            ) from None
        raise ConfigurationError(
            f"{where}: {shown!r} has host bits set; did you mean {meant}?"
        ) from None

    start = int(network.network_address)
    end = int(network.broadcast_address)
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED):
        # Addresses are looked up unmapped, so a mapped block is IPv4.
        return 4, start - _MAPPED_BASE, end - _MAPPED_BASE

    return network.version, start, end


class IPLists:
    """Allow and deny network lists; deny wins when both match.

    ``IPLists(allow=[...], deny=[...])`` takes CIDR blocks or single
    addresses; :meth:`from_files` reads them one per line, with ``#``
    comments and blank lines. An IPv4 client matches IPv4 entries (and
    entries written as IPv4-mapped IPv6); an IPv6 client matches IPv6
    entries.
    """

    __slots__ = ("_allow", "_deny")

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        if isinstance(allow, str) or isinstance(deny, str):
            raise ConfigurationError("ip lists: expected lists of CIDRs, got a string")

        self._allow = _NetworkList.parse(
            (f"allow[{index}]", entry) for index, entry in enumerate(allow)
        )
        self._deny = _NetworkList.parse(
            (f"deny[{index}]", entry) for index, entry in enumerate(deny)
        )

    def __repr__(self) -> str:
        allow, deny = len(self._allow), len(self._deny)
        return f"IPLists(allow={allow} ranges, deny={deny} ranges)"

    @classmethod
    def from_files(cls, allow: str | None = None, deny: str | None = None) -> IPLists:
        """Load either list from a file (or leave it empty when None)."""
        lists = cls()
        if allow is not None:
            lists._allow = _NetworkList.parse(_file_entries("allow", allow))
        if deny is not None:
            lists._deny = _NetworkList.parse(_file_entries("deny", deny))

        return lists

    def verdict(self, address: str | IPAddress) -> Verdict | None:
        """``"deny"``, ``"allow"`` or None (no match, or not an address)."""
        ip = parse_address(address)
        if ip is None:
            return None

        if ip in self._deny:
            return DENY
        if ip in self._allow:
            return ALLOW

        return None


def _file_entries(label: str, path: str) -> Iterator[tuple[str, str]]:
    """``(where, text)`` for each entry of a list file."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            f"{label} file {path!r}: cannot read ({type(exc).__name__})"
        ) from exc

    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            yield f"{label} file {path!r}, line {number}", text
