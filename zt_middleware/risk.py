"""Risk: named signals with weights, added up to a score per request.

Each signal is a piece of evidence about the request's context (where it
comes from, from which device, over which network, in what shape the device
is) compared with what the session and the subject did before. The score
picks the outcome against the route's thresholds: allow, challenge (step up
with a stronger factor, RFC 9470) or deny. Signal names are reason codes and
reach the audit event with their weights.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .context import UNKNOWN_CLIENT
from .errors import ConfigurationError
from .geo import Locator, Place, locator_from, travel_speed_kmh
from .keys import KeySet
from .posture import PostureVerifier
from .reputation import IPLists
from .session import SessionChange
from .settings import Settings
from .stores.base import SessionRecord, StateRead

__all__ = ["DEFAULT_WEIGHTS", "Assessment", "RiskEngine", "Signal"]

logger = logging.getLogger("zt_middleware.risk")

# What each piece of evidence weighs by default; settings.risk_weights
# overrides any of them. With the default thresholds (challenge at 50, deny
# at 150): impossible travel or a Tor exit alone asks for a step-up, a new
# device alone does not; sensitive routes set a lower deny_at.
DEFAULT_WEIGHTS: Mapping[str, int] = {
    "new_device": 20,
    "new_network": 10,
    "new_country": 25,
    "session_device_changed": 40,
    "session_network_changed": 15,
    "impossible_travel": 70,
    "anonymous": 30,
    "anonymous_vpn": 40,
    "public_proxy": 40,
    "residential_proxy": 30,
    "hosting_provider": 25,
    "tor_exit": 90,
    "ip_deny_listed": 200,
    "ip_allow_listed": -40,
    "posture_outdated": 40,
    "posture_missing": 60,
    "posture_invalid": 60,
    "posture_unknown_os": 20,
    "address_unknown": 50,
}


@dataclass(frozen=True, slots=True)
class Signal:
    name: str
    weight: int


@dataclass(frozen=True, slots=True)
class Assessment:
    score: int
    signals: tuple[Signal, ...] = ()
    place: Place | None = None

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(signal.name for signal in self.signals)


class RiskEngine:
    """Turns one request's context and its session's history into a score."""

    def __init__(
        self,
        settings: Settings,
        *,
        locator: Locator | None = None,
        lists: IPLists | None = None,
        posture: PostureVerifier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = set(settings.risk_weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ConfigurationError(
                f"risk_weights: unknown signal(s) {sorted(unknown)}; known are "
                f"{', '.join(sorted(DEFAULT_WEIGHTS))}"
            )
        self.weights = {**DEFAULT_WEIGHTS, **settings.risk_weights}
        self.max_travel_kmh = settings.max_travel_kmh
        self.locator = locator or locator_from(
            settings.geoip_city_db, settings.geoip_anonymous_db
        )
        self.lists = lists or IPLists.from_files(
            settings.ip_allow_file, settings.ip_deny_file
        )
        self.posture = posture or _posture_from(settings, clock)
        self._lookup = lru_cache(maxsize=4096)(self._uncached_lookup)

    def __repr__(self) -> str:
        return f"RiskEngine(locator={self.locator!r}, posture={self.posture!r})"

    def place_of(self, address: str | None) -> Place | None:
        return self._lookup(address)[0] if address else None

    def assess(
        self,
        headers: Mapping[str, str],
        address: str | None,
        state: StateRead,
        change: SessionChange,
        now: float,
    ) -> Assessment:
        place, anonymity, verdict = (
            self._lookup(address) if address else (None, (), None)
        )
        found: list[str] = []
        if address == UNKNOWN_CLIENT:
            # A trusted proxy sent no readable address: no place, network or
            # list can be checked.
            found.append("address_unknown")

        # The device and the network, against the subject and the session.
        seen_before = bool(state.subject_devices)
        if change.new_device_for_subject and seen_before:
            found.append("new_device")
        if change.new_network_for_subject and state.subject_networks:
            found.append("new_network")
        if change.device_changed:
            found.append("session_device_changed")
        if change.network_changed:
            found.append("session_network_changed")

        # Where: a country the session was not in, or a trip too fast.
        previous = state.session or state.subject_last
        if place is not None and previous is not None:
            if previous.country and place.country and previous.country != place.country:
                found.append("new_country")
            if self._impossible(previous, place, now):
                found.append("impossible_travel")

        # What the network is: anonymisers and the operator's own lists.
        # "anonymous" is the database's umbrella flag: counted only when no
        # specific kind says more.
        specific = [flag for flag in anonymity if flag != "anonymous"]
        found.extend(specific or anonymity)
        if verdict is not None:
            found.append(f"ip_{verdict}_listed")

        # The device's own, signed word on its patch level.
        if self.posture is not None:
            result = self.posture.verify(headers)
            if result.reason is not None and (
                result.reason != "posture_missing" or self.posture.required
            ):
                found.append(result.reason)

        signals = tuple(
            Signal(name, self.weights[name]) for name in found if name in self.weights
        )
        # An allow-listed network lowers other evidence, never below zero: a
        # route that challenges at 0 still challenges.
        return Assessment(max(0, sum(s.weight for s in signals)), signals, place)

    def _impossible(self, previous: SessionRecord, place: Place, now: float) -> bool:
        if previous.latitude is None or previous.longitude is None:
            return False
        before = Place(
            country=previous.country,
            latitude=previous.latitude,
            longitude=previous.longitude,
            accuracy_km=None,
            city=None,
        )
        speed = travel_speed_kmh(before, previous.seen_at, place, now)
        return speed is not None and speed > self.max_travel_kmh

    def _uncached_lookup(
        self, address: str
    ) -> tuple[Place | None, tuple[str, ...], str | None]:
        return (
            self.locator.locate(address),
            tuple(sorted(self.locator.anonymity(address))),
            self.lists.verdict(address),
        )


def _posture_from(
    settings: Settings, clock: Callable[[], float]
) -> PostureVerifier | None:
    document: Any = settings.posture_jwks
    if settings.posture_jwks_file:
        try:
            with open(settings.posture_jwks_file, "rb") as fh:
                document = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"posture_jwks_file: cannot read {settings.posture_jwks_file!r}"
            ) from exc
    if document is None:
        if settings.posture_required:
            raise ConfigurationError("posture_required: needs posture_jwks(_file)")
        return None
    if not settings.posture_issuer:
        raise ConfigurationError("posture_issuer: required with posture keys")

    return PostureVerifier(
        KeySet.from_jwks(document, settings.algorithms),
        issuer=settings.posture_issuer,
        header=settings.posture_header,
        minimums=settings.posture_minimums,
        required=settings.posture_required,
        clock=clock,
    )
