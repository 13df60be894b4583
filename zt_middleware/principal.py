"""The verified identity behind a request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Principal"]

SERVICE_PREFIX = "svc:"


@dataclass(frozen=True, slots=True)
class Principal:
    """A user or a service, as its verified token describes it.

    ``claims`` holds the whole verified payload, read-only. The token itself
    is never kept here.
    """

    subject: str
    issuer: str
    scopes: frozenset[str] = frozenset()
    session_id: str | None = None
    token_id: str | None = None
    acr: str | None = None
    amr: tuple[str, ...] = ()
    auth_time: float | None = None
    issued_at: float = 0.0
    expires_at: float = 0.0
    claims: Mapping[str, Any] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )

    @property
    def kind(self) -> str:
        """``service`` for workload identities (``svc:...``), else ``user``."""
        return "service" if self.subject.startswith(SERVICE_PREFIX) else "user"

    def has_scopes(self, required: frozenset[str]) -> bool:
        return required <= self.scopes
