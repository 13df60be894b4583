"""Exceptions raised while configuring or deciding.

The tree is shallow on purpose: a caller handles each branch differently.

    ZeroTrustError
     ├── ConfigurationError        settings that do not validate (at start-up)
     ├── CredentialError           what the client presented is unusable
     │    ├── InvalidRequest       malformed or duplicated credential: 400
     │    └── InvalidToken         the token fails verification: 401
     └── UnavailableError          a dependency cannot answer: 503
          ├── KeySourceUnavailable the JWKS endpoint or key file
          └── StoreUnavailable     the shared state store

Every error raised while deciding carries ``reason``, a stable snake_case
code from :mod:`zt_middleware.reasons`. No message ever contains a token, a
secret or key material.
"""

from __future__ import annotations


class ZeroTrustError(Exception):
    """Base class of every error this library raises."""

    reason = "zero_trust_error"

    def __init__(self, description: str, *, reason: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        if reason is not None:
            self.reason = reason


class ConfigurationError(ZeroTrustError, ValueError):
    """A setting is missing, of the wrong type or out of range."""

    reason = "configuration_invalid"


class CredentialError(ZeroTrustError):
    """The credential the client presented cannot be used."""

    error = "invalid_request"
    status = 400


class InvalidRequest(CredentialError):
    """The request carries a malformed or more than one credential."""


class InvalidToken(CredentialError):
    """The bearer token is malformed, unsigned, expired or not for us."""

    error = "invalid_token"
    status = 401


class UnavailableError(ZeroTrustError):
    """Something the decision depends on cannot be reached right now."""

    retry_after = 5


class KeySourceUnavailable(UnavailableError):
    reason = "key_source_unavailable"


class StoreUnavailable(UnavailableError):
    reason = "store_unavailable"
