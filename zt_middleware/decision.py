"""A decision, and how it looks on the wire (RFC 6750, RFC 9470)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum

from .principal import Principal
from .session import SessionChange

__all__ = ["Decision", "Outcome", "auth_param"]


class Outcome(str, Enum):
    ALLOW = "allow"
    CHALLENGE = "challenge"
    DENY = "deny"


_DESCRIPTIONS = {
    None: "This resource needs a bearer token in the Authorization header.",
    "invalid_request": "Send exactly one bearer token, in the Authorization header.",
    "invalid_token": "The token was refused; obtain a new one and retry.",
    "insufficient_scope": "The token lacks a scope this resource needs.",
    "insufficient_user_authentication": "Authenticate again as asked and retry.",
    "temporarily_unavailable": "Access cannot be decided right now; retry later.",
    "access_denied": "Access was refused.",
}


def auth_param(name: str, value: str) -> str:
    """One ``name="value"`` auth-param (RFC 9110 quoted-string)."""
    cleaned = "".join(ch for ch in value if ch == "\t" or 0x20 <= ord(ch) < 0x7F)
    escaped = cleaned.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome, status, RFC error code, reasons and the verified principal."""

    outcome: Outcome
    status: int
    reasons: tuple[str, ...]
    error: str | None = None
    description: str | None = None
    principal: Principal | None = None
    scope: frozenset[str] = frozenset()
    acr_values: str | None = None
    max_age: int | None = None
    retry_after: int | None = None
    score: int = 0
    # What changed in the session since its last request (allowed requests).
    change: SessionChange | None = None
    # Each risk signal with its weight; they add up to ``score``.
    signals: tuple[tuple[str, int], ...] = ()
    # The guard answers this request itself (a CORS preflight) even though
    # nothing is refused: the app never sees it.
    answer: bool = False

    @property
    def passes(self) -> bool:
        """The request goes on to the app."""
        return self.outcome is Outcome.ALLOW and not self.answer

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    @property
    def reason(self) -> str:
        return self.reasons[0] if self.reasons else ""

    @classmethod
    def allow(cls, principal: Principal | None, *reasons: str) -> Decision:
        return cls(Outcome.ALLOW, 200, reasons, principal=principal)

    def www_authenticate(self, realm: str) -> str:
        params = [auth_param("realm", realm)]
        if self.error is not None:
            params.append(auth_param("error", self.error))
            params.append(auth_param("error_description", self._description()))
        if self.scope:
            params.append(auth_param("scope", " ".join(sorted(self.scope))))
        if self.acr_values:
            params.append(auth_param("acr_values", self.acr_values))
        if self.max_age is not None:
            params.append(auth_param("max_age", str(self.max_age)))

        return "Bearer " + ", ".join(params)

    def _description(self) -> str:
        return self.description or _DESCRIPTIONS.get(self.error, "Access was refused.")

    def render(
        self, realm: str, request_id: str = ""
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and JSON body for a refusal (or a preflight)."""
        if self.answer:
            return self.status, [("vary", "Origin"), ("content-length", "0")], b""

        body = {
            "error": self.error or "unauthorized",
            "error_description": self._description(),
            "reason": self.reason,
        }
        if self.scope:
            body["scope"] = " ".join(sorted(self.scope))
        if request_id:
            body["request_id"] = request_id
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")

        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("cache-control", "no-store"),
            ("www-authenticate", self.www_authenticate(realm)),
        ]
        if self.retry_after is not None:
            headers.append(("retry-after", str(self.retry_after)))

        return self.status, headers, payload
