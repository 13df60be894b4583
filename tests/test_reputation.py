"""Allow and deny lists: validated at load, deny wins, strict addresses."""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from pathlib import Path

import pytest

from zt_middleware.errors import ConfigurationError
from zt_middleware.reputation import IPLists, parse_address

DATA = Path(__file__).parent / "data"
ALLOW_FILE = str(DATA / "ip_allow.txt")
DENY_FILE = str(DATA / "ip_deny.txt")


@pytest.fixture(scope="module")
def lists() -> IPLists:
    return IPLists.from_files(ALLOW_FILE, DENY_FILE)


# -- the sample files ----------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "verdict"),
    [
        ("203.0.113.1", "allow"),
        ("203.0.113.127", "allow"),
        ("203.0.113.128", "deny"),  # both lists match: deny wins
        ("203.0.113.255", "deny"),
        ("198.51.100.7", "allow"),
        ("198.51.100.8", None),
        ("2001:db8:100::1", "allow"),
        ("2001:db8:100:dead::1", "deny"),
        ("2001:db8:101::1", None),
        ("100.64.0.0", "deny"),
        ("100.127.255.255", "deny"),
        ("100.128.0.0", None),
        ("192.0.2.55", "allow"),  # listed as ::ffff:192.0.2.0/120
        ("8.8.8.8", None),
    ],
)
def test_sample_files_give_the_expected_verdicts(
    lists: IPLists, address: str, verdict: str | None
) -> None:
    assert lists.verdict(address) == verdict


def test_ipv4_mapped_ipv6_address_matches_ipv4_entries(lists: IPLists) -> None:
    assert lists.verdict("::ffff:203.0.113.1") == "allow"
    assert lists.verdict("::ffff:100.64.1.1") == "deny"
    assert lists.verdict("::ffff:c000:0201") == "allow"  # 192.0.2.1 in hex


@pytest.mark.parametrize(
    "address",
    [
        "",
        "garbage",
        "100.64.1",  # inet_aton would read 100.64.0.1
        "0x64.64.0.1",
        "100.064.0.1",
        " 100.64.0.1",
        "100.64.0.1\n",
        "100.64.0.0/10",
        "2001:db8:100:dead::1::2",
        "9" * 10_000,
        None,
        42,
        b"100.64.0.1",
    ],
    ids=lambda a: repr(a)[:24],
)
def test_invalid_address_gets_no_verdict(lists: IPLists, address: object) -> None:
    assert lists.verdict(address) is None  # type: ignore[arg-type]


def test_ipv6_zone_id_is_ignored() -> None:
    lists = IPLists(deny=["fe80::/64"])

    assert lists.verdict("fe80::1%eth0") == "deny"


def test_ip_address_objects_are_accepted(lists: IPLists) -> None:
    assert lists.verdict(ipaddress.ip_address("100.64.0.1")) == "deny"
    assert lists.verdict(ipaddress.ip_address("::ffff:100.64.0.1")) == "deny"


def test_ipv4_entry_does_not_match_ipv6_address_with_same_number() -> None:
    # 0.0.0.1 and ::1 are both the integer 1.
    lists = IPLists(deny=["0.0.0.0/8"])

    assert lists.verdict("::1") is None
    assert lists.verdict("0.0.0.1") == "deny"


# -- in-memory lists -----------------------------------------------------------


def test_empty_lists_give_no_verdict() -> None:
    assert IPLists().verdict("8.8.8.8") is None
    assert IPLists.from_files(None, None).verdict("8.8.8.8") is None


def test_single_address_entry_is_a_host_route() -> None:
    lists = IPLists(allow=["192.0.2.1", "2001:db8::1"])

    assert lists.verdict("192.0.2.1") == "allow"
    assert lists.verdict("192.0.2.2") is None
    assert lists.verdict("2001:db8::1") == "allow"
    assert lists.verdict("2001:db8::2") is None


def test_whole_address_space_entries_match_everything_of_their_version() -> None:
    lists = IPLists(deny=["0.0.0.0/0"], allow=["::/0"])

    assert lists.verdict("255.255.255.255") == "deny"
    assert lists.verdict("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == "allow"


def test_deny_wins_even_for_a_narrower_allow() -> None:
    lists = IPLists(allow=["10.1.2.3"], deny=["10.0.0.0/8"])

    assert lists.verdict("10.1.2.3") == "deny"


def test_adjacent_and_overlapping_entries_merge() -> None:
    lists = IPLists(
        deny=["10.0.0.0/25", "10.0.0.128/25", "10.0.0.64/26", "10.0.1.0/24"]
    )

    assert repr(lists) == "IPLists(allow=0 ranges, deny=1 ranges)"
    assert lists.verdict("10.0.0.0") == "deny"
    assert lists.verdict("10.0.1.255") == "deny"
    assert lists.verdict("10.0.2.0") is None
    assert lists.verdict("9.255.255.255") is None


def test_generated_lists_agree_with_ipaddress_membership() -> None:
    """A few hundred random blocks, checked against the plain definition."""
    rng = random.Random(20260101)
    allow = [_random_network(rng) for _ in range(300)]
    deny = [_random_network(rng) for _ in range(300)]
    lists = IPLists(allow=[str(n) for n in allow], deny=[str(n) for n in deny])

    probes = [_random_address(rng) for _ in range(3000)]
    probes += [n.network_address for n in allow + deny]
    probes += [n.broadcast_address for n in allow + deny]
    seen: Counter[tuple[int, str | None]] = Counter()
    for ip in probes:
        if any(ip in n for n in deny if n.version == ip.version):
            expected = "deny"
        elif any(ip in n for n in allow if n.version == ip.version):
            expected = "allow"
        else:
            expected = None
        assert lists.verdict(str(ip)) == expected, str(ip)
        seen[ip.version, expected] += 1

    # Every outcome happens for both versions, often enough to mean something.
    assert len(seen) == 6
    assert min(seen.values()) >= 50, seen


def _random_network(
    rng: random.Random,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if rng.random() < 0.5:
        prefix = rng.randint(8, 32)
        address = ipaddress.IPv4Address(rng.getrandbits(32))
        return ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
    prefix = rng.choice([rng.randint(36, 48), rng.randint(49, 128)])
    # Stay inside 2001:db8::/32 so random probes land in the blocks.
    address = ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(96))
    return ipaddress.IPv6Network(f"{address}/{prefix}", strict=False)


def _random_address(
    rng: random.Random,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if rng.random() < 0.5:
        return ipaddress.IPv4Address(rng.getrandbits(32))
    return ipaddress.IPv6Address((0x20010DB8 << 96) | rng.getrandbits(96))


# -- validation ------------------------------------------------------------


def test_bad_entry_in_a_list_names_its_index() -> None:
    with pytest.raises(ConfigurationError, match=r"deny\[1\]: 'nonsense' is not"):
        IPLists(deny=["10.0.0.0/8", "nonsense"])


def test_entry_with_host_bits_set_is_refused_with_a_suggestion() -> None:
    # Widening "10.1.2.3/8" to 10.0.0.0/8 silently could allow a whole /8.
    with pytest.raises(ConfigurationError, match=r"host bits set; did you mean 10\."):
        IPLists(allow=["10.1.2.3/8"])


def test_non_string_entry_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"allow\[0\]: expected .* got int"):
        IPLists(allow=[167772160])  # type: ignore[list-item]


def test_a_bare_string_instead_of_a_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="got a string"):
        IPLists(allow="10.0.0.0/8")


def test_bad_line_in_a_file_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "deny.txt"
    path.write_text("# comment\n\n10.0.0.0/8\n10.0.0.0/33  # typo\n")

    with pytest.raises(ConfigurationError) as caught:
        IPLists.from_files(deny=str(path))

    message = str(caught.value)
    assert f"deny file {str(path)!r}, line 4" in message
    assert "'10.0.0.0/33' is not an IP address or CIDR" in message


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"allow file .* cannot read"):
        IPLists.from_files(allow=str(tmp_path / "absent.txt"))


def test_file_that_is_not_text_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "binary.txt"
    path.write_bytes(b"\xff\xfe\x00garbage")

    with pytest.raises(ConfigurationError, match=r"cannot read .*UnicodeDecodeError"):
        IPLists.from_files(allow=str(path))


def test_file_with_a_byte_order_mark_and_crlf_lines_loads(tmp_path: Path) -> None:
    path = tmp_path / "allow.txt"
    path.write_bytes(b"\xef\xbb\xbf192.0.2.0/24\r\n# c\r\n2001:db8::/32\r\n")

    lists = IPLists.from_files(allow=str(path))

    assert lists.verdict("192.0.2.9") == "allow"
    assert lists.verdict("2001:db8::9") == "allow"


def test_long_bad_entry_is_shortened_in_the_message() -> None:
    with pytest.raises(ConfigurationError) as caught:
        IPLists(deny=["x" * 5000])

    assert len(str(caught.value)) < 200


# -- parse_address -------------------------------------------------------------


def test_parse_address_unmaps_ipv4_mapped_ipv6() -> None:
    assert parse_address("::ffff:10.1.2.3") == ipaddress.IPv4Address("10.1.2.3")


def test_parse_address_refuses_non_canonical_ipv4() -> None:
    assert parse_address("10.1.515") is None
    assert parse_address("012.1.2.3") is None
