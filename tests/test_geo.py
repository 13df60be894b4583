"""Location evidence: MaxMind's test databases and the embedded countries.

The addresses come from MaxMind's own test databases (``vectors/maxmind``,
their ``.json`` files list what each holds): 81.2.69.142 is London (GB,
51.5142, -0.0931, accuracy 10 km), 216.160.83.56 is Milton, WA (US,
47.2513, -122.3149, accuracy 22 km). In the Anonymous-IP database 1.2.0.0/16
is an anonymous VPN, 65.0.0.0/13 a Tor exit, 71.160.223.0/24 a hosting
provider, 186.30.236.0/24 a public proxy, 6.1.0.4 a residential proxy and
81.2.69.0/24 everything at once.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zt_middleware.errors import ConfigurationError
from zt_middleware.geo import (
    ANONYMITY_FLAGS,
    EmbeddedCountryLocator,
    MaxMindLocator,
    Place,
    distance_km,
    locator_from,
    travel_speed_kmh,
)

ROOT = Path(__file__).parent.parent
VECTORS = Path(__file__).parent / "vectors" / "maxmind"
CITY_DB = str(VECTORS / "GeoIP2-City-Test.mmdb")
ANONYMOUS_DB = str(VECTORS / "GeoIP2-Anonymous-IP-Test.mmdb")

LONDON_IP = "81.2.69.142"
MILTON_IP = "216.160.83.56"

# "Place for odd input" cases: not an address, or not a public one.
NOT_LOCATABLE = [
    "",
    "garbage",
    "1.2.3",
    "81.2.17806",  # inet_aton would read 81.2.69.142
    "0x51.2.69.142",  # likewise, in hex
    "081.2.69.142",
    " 81.2.69.142",
    "81.2.69.142/32",
    "10.0.0.1",
    "192.168.1.20",
    "127.0.0.1",
    "100.64.0.1",
    "::1",
    "fe80::1%eth0",
    "2001:db8::1",
    "x" * 10_000,
]


@pytest.fixture(scope="module")
def maxmind() -> Iterator[MaxMindLocator]:
    locator = MaxMindLocator(CITY_DB, ANONYMOUS_DB)
    yield locator
    locator.close()


@pytest.fixture(scope="module")
def embedded() -> EmbeddedCountryLocator:
    return EmbeddedCountryLocator()


def _anonymous_vectors() -> list[tuple[str, frozenset[str]]]:
    """(first address, expected flags) for each network in the listing."""
    listing = json.loads((VECTORS / "GeoIP2-Anonymous-IP-Test.json").read_text())
    cases = []
    for entry in listing:
        for cidr, fields in entry.items():
            network = ipaddress.ip_network(cidr)
            address = network.network_address
            if cidr.startswith("::") and network.prefixlen >= 96:
                # IPv4 networks are written in the IPv4 subtree, ::/96.
                address = ipaddress.IPv4Address(int(address))
            flags = {
                name.removeprefix("is_").removesuffix("_node")
                for name, value in fields.items()
                if value is True
            }
            cases.append((str(address), frozenset(flags)))
    return cases


# -- MaxMind City ----------------------------------------------------------


def test_british_address_is_located_in_london(maxmind: MaxMindLocator) -> None:
    place = maxmind.locate(LONDON_IP)

    assert place == Place(
        country="GB",
        latitude=51.5142,
        longitude=-0.0931,
        accuracy_km=10.0,
        city="London",
    )


def test_us_address_is_located_in_milton(maxmind: MaxMindLocator) -> None:
    place = maxmind.locate(MILTON_IP)

    assert place is not None
    assert place.country == "US"
    assert place.city == "Milton"
    assert (place.latitude, place.longitude) == (47.2513, -122.3149)
    assert place.accuracy_km == 22.0


def test_ipv6_address_is_located(maxmind: MaxMindLocator) -> None:
    place = maxmind.locate("2001:218::1")

    assert place is not None
    assert place.country == "JP"
    assert place.has_coordinates


def test_ipv4_mapped_ipv6_address_is_located_as_ipv4(maxmind: MaxMindLocator) -> None:
    assert maxmind.locate("::ffff:" + LONDON_IP) == maxmind.locate(LONDON_IP)


def test_place_without_country_or_coordinates_is_none(maxmind: MaxMindLocator) -> None:
    # 2.3.3.0/24 holds only a continent, 214.1.1.0/24 only traits.
    assert maxmind.locate("2.3.3.1") is None
    assert maxmind.locate("214.1.1.1") is None


def test_public_address_missing_from_database_is_none(maxmind: MaxMindLocator) -> None:
    assert maxmind.locate("8.8.8.8") is None


@pytest.mark.parametrize("address", NOT_LOCATABLE, ids=lambda a: repr(a)[:24])
def test_odd_or_private_address_is_not_located(
    maxmind: MaxMindLocator, address: str
) -> None:
    assert maxmind.locate(address) is None
    assert maxmind.anonymity(address) == frozenset()


@pytest.mark.parametrize("value", [None, 42, b"81.2.69.142", ["81.2.69.142"]])
def test_non_string_address_is_not_located(
    maxmind: MaxMindLocator, value: object
) -> None:
    assert maxmind.locate(value) is None  # type: ignore[arg-type]
    assert maxmind.anonymity(value) == frozenset()  # type: ignore[arg-type]


def test_ip_address_objects_are_accepted(maxmind: MaxMindLocator) -> None:
    place = maxmind.locate(ipaddress.ip_address(LONDON_IP))

    assert place is not None and place.country == "GB"


# -- MaxMind Anonymous-IP --------------------------------------------------


@pytest.mark.parametrize(
    ("address", "flags"),
    [
        ("1.2.0.1", {"anonymous", "anonymous_vpn"}),
        ("1.124.213.1", {"anonymous", "anonymous_vpn", "tor_exit"}),
        ("65.0.0.1", {"anonymous", "tor_exit"}),
        ("71.160.223.1", {"anonymous", "hosting_provider"}),
        ("186.30.236.1", {"anonymous", "public_proxy"}),
        ("6.1.0.4", {"anonymous", "residential_proxy"}),
        ("2001:480:3a::1", {"anonymous", "public_proxy"}),
        ("81.2.69.1", ANONYMITY_FLAGS),
    ],
)
def test_anonymity_flags_name_what_the_database_says(
    maxmind: MaxMindLocator, address: str, flags: set[str]
) -> None:
    assert maxmind.anonymity(address) == frozenset(flags)


@pytest.mark.parametrize(("address", "flags"), _anonymous_vectors())
def test_every_network_in_the_anonymous_listing_gives_its_flags(
    maxmind: MaxMindLocator, address: str, flags: frozenset[str]
) -> None:
    assert maxmind.anonymity(address) == flags


def test_address_just_outside_a_tor_network_has_no_flags(
    maxmind: MaxMindLocator,
) -> None:
    assert maxmind.anonymity("65.7.255.255") == {"anonymous", "tor_exit"}
    assert maxmind.anonymity("65.8.0.0") == frozenset()


def test_anonymity_flags_are_all_known_reason_codes() -> None:
    assert {
        "anonymous",
        "anonymous_vpn",
        "hosting_provider",
        "public_proxy",
        "residential_proxy",
        "tor_exit",
    } == ANONYMITY_FLAGS


# -- construction and closing ------------------------------------------------


def test_city_only_locator_has_no_anonymity_flags() -> None:
    with MaxMindLocator(CITY_DB) as locator:
        assert locator.locate(LONDON_IP) is not None
        assert locator.anonymity("81.2.69.1") == frozenset()


def test_anonymous_only_locator_locates_nothing_without_fallback() -> None:
    with MaxMindLocator(anonymous_db=ANONYMOUS_DB) as locator:
        assert locator.locate(LONDON_IP) is None
        assert locator.anonymity("1.2.0.1") == {"anonymous", "anonymous_vpn"}


def test_closed_locator_answers_nothing() -> None:
    locator = MaxMindLocator(CITY_DB, ANONYMOUS_DB)
    locator.close()

    assert locator.locate(LONDON_IP) is None
    assert locator.anonymity("81.2.69.1") == frozenset()
    locator.close()  # twice is harmless


def test_missing_database_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="city_db: cannot open"):
        MaxMindLocator(str(tmp_path / "nowhere.mmdb"))


def test_file_that_is_not_a_database_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="anonymous_db: cannot open"):
        MaxMindLocator(anonymous_db=str(VECTORS / "LICENSE-MIT"))


def test_swapped_database_paths_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"city_db: .* 'GeoIP2-Anonymous-IP'"):
        MaxMindLocator(ANONYMOUS_DB)
    with pytest.raises(ConfigurationError, match=r"anonymous_db: .* 'GeoIP2-City'"):
        MaxMindLocator(anonymous_db=CITY_DB)


def test_locator_from_paths_is_maxmind() -> None:
    locator = locator_from(CITY_DB, ANONYMOUS_DB)
    try:
        assert isinstance(locator, MaxMindLocator)
        place = locator.locate(LONDON_IP)
        assert place is not None and place.city == "London"
    finally:
        locator.close()


def test_locator_from_nothing_is_the_embedded_countries() -> None:
    locator = locator_from(None, None)

    assert isinstance(locator, EmbeddedCountryLocator)


def test_locator_from_anonymous_db_only_still_gives_countries() -> None:
    locator = locator_from(None, ANONYMOUS_DB)
    try:
        place = locator.locate("8.8.8.8")
        assert place is not None and place.country == "US"
        assert locator.anonymity("1.2.0.1") == {"anonymous", "anonymous_vpn"}
    finally:
        locator.close()


# -- embedded countries --------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "country"),
    [
        ("8.8.8.8", "US"),
        ("1.1.1.1", "AU"),
        (LONDON_IP, "GB"),
        ("2001:4860:4860::8888", "US"),
        ("::ffff:8.8.8.8", "US"),
    ],
)
def test_embedded_locator_gives_the_country_of_public_addresses(
    embedded: EmbeddedCountryLocator, address: str, country: str
) -> None:
    assert embedded.locate(address) == Place(country=country)


@pytest.mark.parametrize("address", NOT_LOCATABLE, ids=lambda a: repr(a)[:24])
def test_embedded_locator_gives_nothing_for_odd_or_private_addresses(
    embedded: EmbeddedCountryLocator, address: str
) -> None:
    assert embedded.locate(address) is None


def test_embedded_locator_has_no_coordinates_and_no_flags(
    embedded: EmbeddedCountryLocator,
) -> None:
    place = embedded.locate("8.8.8.8")

    assert place is not None and not place.has_coordinates
    assert embedded.anonymity("81.2.69.1") == frozenset()


def test_loading_embedded_data_leaves_the_environment_alone() -> None:
    """geoip2fast sets PYTHONWARNINGS=ignore on import; children inherit it."""
    code = (
        "import os; from zt_middleware.geo import EmbeddedCountryLocator as E; "
        "E(); print(os.environ.get('PYTHONWARNINGS'), "
        "os.environ.get('PYTHONIOENCODING'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )

    assert result.stdout.split() == ["None", "None"]


def test_embedded_data_is_never_read_from_the_working_directory(
    tmp_path: Path,
) -> None:
    """geoip2fast unpickles a same-named file from the current directory."""
    (tmp_path / "geoip2fast.dat.gz").write_bytes(b"not a pickle")
    (tmp_path / "geoip2fast-ipv6.dat.gz").write_bytes(b"not a pickle")
    code = (
        "from zt_middleware.geo import EmbeddedCountryLocator as E; "
        "print(E().locate('8.8.8.8').country)"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter, fixed code
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        timeout=60,
    )

    assert result.stdout.strip() == "US"


# -- distance and speed ------------------------------------------------------


def test_distance_london_to_milton_is_about_7700_km(maxmind: MaxMindLocator) -> None:
    london, milton = maxmind.locate(LONDON_IP), maxmind.locate(MILTON_IP)
    assert london is not None and milton is not None

    distance = distance_km(london, milton)

    assert distance is not None
    assert 7_600 < distance < 7_850
    assert distance == pytest.approx(distance_km(milton, london))


def test_distance_of_a_known_pair_matches_the_haversine_formula() -> None:
    # A quarter of the equator: pi / 2 * 6371 km.
    a, b = Place("XX", 0.0, 0.0), Place("YY", 0.0, 90.0)

    assert distance_km(a, b) == pytest.approx(math.pi / 2 * 6371)
    assert distance_km(a, a) == 0.0


def test_distance_antipodes_does_not_fail() -> None:
    a, b = Place(None, 90.0, 0.0), Place(None, -90.0, 0.0)

    assert distance_km(a, b) == pytest.approx(math.pi * 6371)


def test_distance_needs_coordinates_on_both_sides() -> None:
    assert distance_km(Place("GB"), Place("US", 47.0, -122.0)) is None
    assert distance_km(Place("US", 47.0, -122.0), Place("GB")) is None


def test_london_to_milton_in_ten_minutes_is_impossible_travel(
    maxmind: MaxMindLocator,
) -> None:
    london, milton = maxmind.locate(LONDON_IP), maxmind.locate(MILTON_IP)
    assert london is not None and milton is not None

    speed = travel_speed_kmh(london, 1_000.0, milton, 1_600.0)

    assert speed is not None
    # (7,732 km less 32 km of accuracy) in 1/6 h: about 46,000 km/h.
    assert 40_000 < speed < 50_000


def test_speed_ignores_the_order_of_the_sightings() -> None:
    a, b = Place("GB", 51.5, -0.1), Place("FR", 48.9, 2.35)

    assert travel_speed_kmh(a, 0, b, 3600) == travel_speed_kmh(b, 3600, a, 0)
    assert travel_speed_kmh(a, 3600, b, 0) == travel_speed_kmh(a, 0, b, 3600)


def test_speed_gives_imprecise_places_the_benefit_of_the_doubt() -> None:
    a = Place("US", 47.2513, -122.3149, accuracy_km=1000.0)
    b = Place("US", 47.7511, -120.7401, accuracy_km=1000.0)

    assert travel_speed_kmh(a, 0, b, 60) == 0.0


def test_different_places_at_the_same_instant_is_infinite_speed() -> None:
    london = Place("GB", 51.5142, -0.0931, accuracy_km=10.0)
    milton = Place("US", 47.2513, -122.3149, accuracy_km=22.0)

    assert travel_speed_kmh(london, 5.0, milton, 5.0) == math.inf


def test_same_place_at_the_same_instant_is_zero_speed() -> None:
    london = Place("GB", 51.5142, -0.0931, accuracy_km=10.0)

    assert travel_speed_kmh(london, 5.0, london, 5.0) == 0.0


def test_speed_without_coordinates_is_none_even_across_countries() -> None:
    assert travel_speed_kmh(Place("GB"), 0, Place("US"), 0) is None
    assert travel_speed_kmh(Place("GB"), 0, Place("US", 47.0, -122.0), 60) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_speed_with_a_time_that_is_not_finite_is_none(bad: float) -> None:
    a, b = Place("GB", 51.5, -0.1), Place("US", 47.0, -122.0)

    assert travel_speed_kmh(a, bad, b, 0.0) is None
    assert travel_speed_kmh(a, 0.0, b, bad) is None
