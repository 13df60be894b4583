"""A session's context, and what changed since its last request.

The device is a fingerprint of configured request headers (hashed, so the
store never holds the raw values); the network is the client address cut to
its /24 (IPv4) or /48 (IPv6). :func:`compare` says what is new, for the
revocation step and the risk signals.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from .stores.base import SessionRecord, StateRead

__all__ = ["SessionChange", "compare", "device_fingerprint", "network_of"]


@dataclass(frozen=True, slots=True)
class SessionChange:
    device: str | None
    network: str | None
    previous: SessionRecord | None
    new_device_for_subject: bool
    new_network_for_subject: bool
    device_changed: bool
    network_changed: bool


def device_fingerprint(headers: Mapping[str, str], names: Iterable[str]) -> str | None:
    values = [headers.get(name, "") for name in names]
    if not any(values):
        return None
    digest = hashlib.sha256("\x1f".join(values).encode("utf-8", "replace"))
    return digest.hexdigest()[:32]


def network_of(address: str | None) -> str | None:
    if not address:
        return None
    return _network(address)


@lru_cache(maxsize=4096)
def _network(address: str) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def compare(state: StateRead, device: str | None, network: str | None) -> SessionChange:
    previous = state.session
    return SessionChange(
        device=device,
        network=network,
        previous=previous,
        new_device_for_subject=device is not None
        and device not in state.subject_devices,
        new_network_for_subject=network is not None
        and network not in state.subject_networks,
        device_changed=previous is not None and previous.device != device,
        network_changed=previous is not None and previous.network != network,
    )
