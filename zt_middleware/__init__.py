"""Zero Trust access control for Starlette, FastAPI, Flask and Django.

Every request carries a signed token and every request is verified; a route
that says nothing about access is refused. See README.md for set-up.
"""

from __future__ import annotations

from .context import RequestContext
from .decision import Decision, Outcome
from .errors import (
    ConfigurationError,
    CredentialError,
    InvalidRequest,
    InvalidToken,
    KeySourceUnavailable,
    StoreUnavailable,
    UnavailableError,
    ZeroTrustError,
)
from .guard import Guard
from .principal import Principal
from .routes import PUBLIC, Requirement, public, requires
from .settings import InsecureSettingWarning, Settings

__all__ = [
    "PUBLIC",
    "ConfigurationError",
    "CredentialError",
    "Decision",
    "Guard",
    "InsecureSettingWarning",
    "InvalidRequest",
    "InvalidToken",
    "KeySourceUnavailable",
    "Outcome",
    "Principal",
    "RequestContext",
    "Requirement",
    "Settings",
    "StoreUnavailable",
    "UnavailableError",
    "ZeroTrustError",
    "public",
    "requires",
]

__version__ = "0.1.0"
