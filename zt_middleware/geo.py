"""Where an address is, and whether it hides behind an anonymiser.

Two locators answer the same questions (:class:`Locator`):

- :class:`MaxMindLocator` reads MaxMind DB files with MaxMind's own reader
  (``maxminddb``, the C extension where it is built): a City database for
  country, coordinates and city, and an Anonymous-IP database for the
  flags in :data:`ANONYMITY_FLAGS`, which are also risk reason codes.
- :class:`EmbeddedCountryLocator` needs no download: ``geoip2fast`` ships a
  country table (MaxMind GeoLite2-Country data), so a country is known out
  of the box. It has no coordinates and no anonymity flags.

Files are opened once, at construction; a lookup does no I/O beyond the
memory map and never raises on odd input: an address that is not one, or
is private, reserved or unknown, gives None or an empty set.

:func:`distance_km` and :func:`travel_speed_kmh` turn two places into the
evidence for impossible travel.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import maxminddb

from .errors import ConfigurationError
from .reputation import IPAddress, parse_address

__all__ = [
    "ANONYMITY_FLAGS",
    "ANONYMOUS",
    "ANONYMOUS_VPN",
    "EARTH_RADIUS_KM",
    "HOSTING_PROVIDER",
    "PUBLIC_PROXY",
    "RESIDENTIAL_PROXY",
    "TOR_EXIT",
    "EmbeddedCountryLocator",
    "Locator",
    "MaxMindLocator",
    "Place",
    "distance_km",
    "locator_from",
    "travel_speed_kmh",
]

logger = logging.getLogger("zt_middleware.geo")

EARTH_RADIUS_KM = 6371.0

# Anonymity flags: stable reason codes.
ANONYMOUS = "anonymous"
ANONYMOUS_VPN = "anonymous_vpn"
HOSTING_PROVIDER = "hosting_provider"
PUBLIC_PROXY = "public_proxy"
RESIDENTIAL_PROXY = "residential_proxy"
TOR_EXIT = "tor_exit"

# The Anonymous-IP database's field for each flag.
_FLAG_FIELDS = (
    ("is_anonymous", ANONYMOUS),
    ("is_anonymous_vpn", ANONYMOUS_VPN),
    ("is_hosting_provider", HOSTING_PROVIDER),
    ("is_public_proxy", PUBLIC_PROXY),
    ("is_residential_proxy", RESIDENTIAL_PROXY),
    ("is_tor_exit_node", TOR_EXIT),
)
ANONYMITY_FLAGS = frozenset(flag for _, flag in _FLAG_FIELDS)

_COUNTRY_CODE = re.compile(r"[A-Z]{2}")
_NO_FLAGS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Place:
    """Where an address is, as far as the database knows.

    ``country`` is an ISO 3166-1 alpha-2 code; the coordinates are degrees
    and are either both set or both None; ``accuracy_km`` is the radius
    around them the address is likely to be in.
    """

    country: str | None
    latitude: float | None = None
    longitude: float | None = None
    accuracy_km: float | None = None
    city: str | None = None

    @property
    def has_coordinates(self) -> bool:
        return self.latitude is not None and self.longitude is not None


class Locator(Protocol):
    """What the risk signals ask of a location source."""

    def locate(self, address: str | IPAddress) -> Place | None: ...

    def anonymity(self, address: str | IPAddress) -> frozenset[str]: ...

    def close(self) -> None: ...


def _public(address: str | IPAddress) -> IPAddress | None:
    """The parsed address if it is globally routable, else None."""
    ip = parse_address(address)
    if ip is None or not ip.is_global:
        return None
    return ip


# -- MaxMind ---------------------------------------------------------------


class MaxMindLocator:
    """Lookups in a MaxMind City and/or Anonymous-IP database.

    Either path may be None: without a City database :meth:`locate` asks
    ``fallback`` (or answers None), and without an Anonymous-IP database
    :meth:`anonymity` is always empty. A file that cannot be opened, or is
    the wrong kind of database, is a :class:`ConfigurationError` at once.
    """

    def __init__(
        self,
        city_db: str | None = None,
        anonymous_db: str | None = None,
        *,
        fallback: Locator | None = None,
    ) -> None:
        self.city_db = city_db
        self.anonymous_db = anonymous_db
        self._fallback = fallback
        self._city = _open("city_db", city_db, ("City", "Country", "Enterprise"))
        try:
            self._anonymous = _open("anonymous_db", anonymous_db, ("Anonymous",))
        except ConfigurationError:
            if self._city is not None:
                self._city.close()
            raise

    def __repr__(self) -> str:
        return (
            f"MaxMindLocator(city_db={self.city_db!r}, "
            f"anonymous_db={self.anonymous_db!r})"
        )

    def __enter__(self) -> MaxMindLocator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def locate(self, address: str | IPAddress) -> Place | None:
        """Country, coordinates and city from the City database."""
        if self._city is None:
            return self._fallback.locate(address) if self._fallback else None
        ip = _public(address)
        if ip is None:
            return None

        record = _get(self._city, ip, "city_db")
        if not isinstance(record, dict):
            return None

        return _place(record)

    def anonymity(self, address: str | IPAddress) -> frozenset[str]:
        """The anonymity flags the Anonymous-IP database sets for it."""
        if self._anonymous is None:
            return _NO_FLAGS
        ip = _public(address)
        if ip is None:
            return _NO_FLAGS

        record = _get(self._anonymous, ip, "anonymous_db")
        if not isinstance(record, dict):
            return _NO_FLAGS

        return frozenset(
            flag for field, flag in _FLAG_FIELDS if record.get(field) is True
        )

    def close(self) -> None:
        """Close both files; later lookups answer None / empty."""
        for reader in (self._city, self._anonymous):
            if reader is not None:
                reader.close()
        self._city = self._anonymous = None
        if self._fallback is not None:
            self._fallback.close()


def _open(
    setting: str, path: str | None, kinds: tuple[str, ...]
) -> maxminddb.Reader | None:
    """Open a MaxMind DB file and check it is the expected kind."""
    if path is None:
        return None
    try:
        reader = maxminddb.open_database(path)
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
        raise ConfigurationError(
            f"{setting}: cannot open {path!r} as a MaxMind DB ({type(exc).__name__})"
        ) from exc

    # Swapping the City and Anonymous-IP paths is an easy mistake, and
    # would make every lookup come back empty without a word.
    kind = reader.metadata().database_type
    if not any(word in kind for word in kinds) or (
        "Anonymous" in kind and "Anonymous" not in kinds
    ):
        reader.close()
        raise ConfigurationError(
            f"{setting}: {path!r} is a {kind!r} database, expected one of "
            f"{', '.join(kinds)}"
        )

    return reader


def _get(reader: maxminddb.Reader, ip: IPAddress, setting: str) -> Any:
    """The record for ``ip``, or None when absent or the file is unusable."""
    try:
        return reader.get(ip)
    except maxminddb.InvalidDatabaseError:
        # A corrupt data section: say so, answer "unknown".
        logger.error("%s: the database is corrupt; lookup skipped", setting)
    except ValueError:
        # Closed reader, or an IPv6 address against an IPv4-only file.
        pass
    return None


def _place(record: dict[str, Any]) -> Place | None:
    """A place from a City record; None when it holds nothing usable."""
    country = _country_code(_field(record, "country", "iso_code"))

    latitude = _number(_field(record, "location", "latitude"), 90)
    longitude = _number(_field(record, "location", "longitude"), 180)
    if latitude is None or longitude is None:
        latitude = longitude = None
    accuracy = _number(_field(record, "location", "accuracy_radius"), 40_075)
    city = _field(record, "city", "names", "en")

    if country is None and latitude is None:
        return None
    return Place(
        country=country,
        latitude=latitude,
        longitude=longitude,
        accuracy_km=accuracy if latitude is not None else None,
        city=city if isinstance(city, str) else None,
    )


def _field(record: Any, *names: str) -> Any:
    for name in names:
        if not isinstance(record, dict):
            return None
        record = record.get(name)
    return record


def _number(value: Any, limit: float) -> float | None:
    """A finite number within ``±limit``, as float, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    if not math.isfinite(number) or abs(number) > limit:
        return None
    return number


def _country_code(value: Any) -> str | None:
    if isinstance(value, str) and _COUNTRY_CODE.fullmatch(value):
        return value
    return None


# -- embedded country data --------------------------------------------------

# geoip2fast keeps its tables in module globals, so one load per process
# is all there can be; it is shared, loaded on first use, under a lock.
_EMBEDDED: Any = None
_EMBEDDED_LOCK = threading.Lock()
_EMBEDDED_FILE = "geoip2fast-ipv6.dat.gz"  # IPv4 and IPv6 countries


def _embedded_table() -> Any:
    global _EMBEDDED
    with _EMBEDDED_LOCK:
        if _EMBEDDED is None:
            _EMBEDDED = _load_geoip2fast()
    return _EMBEDDED


def _load_geoip2fast() -> Any:
    # Importing geoip2fast sets PYTHONWARNINGS=ignore and PYTHONIOENCODING
    # in os.environ, which every child process would inherit: put them back.
    saved = {
        name: os.environ.get(name) for name in ("PYTHONWARNINGS", "PYTHONIOENCODING")
    }
    try:
        import geoip2fast
    except ImportError as exc:
        raise ConfigurationError(
            "geo: the embedded country data needs the geoip2fast package"
        ) from exc
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    # The data file is a pickle. Given only a name, geoip2fast looks in the
    # current directory first: always pass the absolute path of its own.
    path = os.path.join(os.path.dirname(geoip2fast.__file__), _EMBEDDED_FILE)
    if not os.path.isfile(path):
        raise ConfigurationError(f"geo: geoip2fast has no {_EMBEDDED_FILE}")
    try:
        return geoip2fast.GeoIP2Fast(geoip2fast_data_file=path)
    except Exception as exc:
        raise ConfigurationError(
            f"geo: the embedded country data does not load ({type(exc).__name__})"
        ) from exc


class EmbeddedCountryLocator:
    """Country only, from the data ``geoip2fast`` ships; no download.

    The data is MaxMind GeoLite2-Country as of the installed geoip2fast
    release: good for a country, not for coordinates, and as fresh as that
    release. :meth:`anonymity` is always empty.
    """

    __slots__ = ("_table",)

    def __init__(self) -> None:
        self._table = _embedded_table()

    def __repr__(self) -> str:
        return "EmbeddedCountryLocator()"

    def locate(self, address: str | IPAddress) -> Place | None:
        ip = _public(address)
        if ip is None:
            return None

        # geoip2fast answers "--" for reserved or unknown and "" for errors.
        country = _country_code(self._table.lookup(str(ip)).country_code)

        return Place(country=country) if country else None

    def anonymity(self, address: str | IPAddress) -> frozenset[str]:
        return _NO_FLAGS

    def close(self) -> None:
        return None


def locator_from(
    city_db: str | None = None, anonymous_db: str | None = None
) -> Locator:
    """MaxMind where a path is given; the embedded countries otherwise.

    With only an Anonymous-IP database, countries still come from the
    embedded data.
    """
    if city_db is None and anonymous_db is None:
        return EmbeddedCountryLocator()
    if city_db is None:
        return MaxMindLocator(None, anonymous_db, fallback=EmbeddedCountryLocator())

    return MaxMindLocator(city_db, anonymous_db)


# -- distance and speed ------------------------------------------------------


def distance_km(a: Place, b: Place) -> float | None:
    """Great-circle (haversine) distance; None unless both have coordinates."""
    if a.latitude is None or a.longitude is None:
        return None
    if b.latitude is None or b.longitude is None:
        return None

    lat_a, lat_b = math.radians(a.latitude), math.radians(b.latitude)
    d_lat = lat_b - lat_a
    d_lon = math.radians(b.longitude - a.longitude)
    h = (
        math.sin(d_lat / 2) ** 2
        + math.cos(lat_a) * math.cos(lat_b) * math.sin(d_lon / 2) ** 2
    )

    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


def travel_speed_kmh(a: Place, at_a: float, b: Place, at_b: float) -> float | None:
    """The slowest speed that explains being at ``a`` then at ``b``.

    The distance is shortened by both places' accuracy radii, so imprecise
    locations give the benefit of the doubt. The order of the two sightings
    does not matter: the elapsed time is ``|at_b - at_a|`` seconds.

    - None when either place lacks coordinates, or a time is not finite.
    - ``0.0`` when the places are within each other's accuracy.
    - ``math.inf`` when they are farther apart and no time passed, which
      covers two different countries seen at the same instant.
    """
    distance = distance_km(a, b)
    if distance is None or not (math.isfinite(at_a) and math.isfinite(at_b)):
        return None

    slack = (a.accuracy_km or 0.0) + (b.accuracy_km or 0.0)
    distance = max(0.0, distance - slack)
    if distance == 0.0:
        return 0.0
    elapsed = abs(at_b - at_a)
    if elapsed == 0.0:
        return math.inf

    return distance / (elapsed / 3600.0)
