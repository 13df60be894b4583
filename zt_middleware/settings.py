"""One settings schema for every framework.

The same mapping works as Django's ``settings.ZERO_TRUST``, Flask's
``app.config["ZERO_TRUST"]``, keyword arguments to the ASGI middleware, a TOML
file or ``ZT_*`` environment variables. Every key, its default and its meaning
is listed in :data:`FIELDS`; :meth:`Settings.from_mapping` validates at start
and names the field, what it expected and what it got.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["InsecureSettingWarning", "Settings", "load_settings", "redact_url"]

SUPPORTED_ALGORITHMS = frozenset(
    {
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512",
    }
)  # fmt: skip
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
MAX_LEEWAY = 300


class InsecureSettingWarning(UserWarning):
    """A setting is legal but weakens a guarantee; named in the message."""


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One row of the central route table."""

    path: str
    methods: frozenset[str] = frozenset({"*"})
    scopes: frozenset[str] = frozenset()
    public: bool = False
    acr: str | None = None
    max_age: int | None = None
    challenge_at: int | None = None
    deny_at: int | None = None


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    # Who issues the tokens we accept, and who they must be for.
    issuer: str
    audience: str
    # Where verification keys come from: a JWKS URL, an inline JWK Set, a
    # JWK Set file, or PEM public keys by kid. At least one is required.
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    jwks_file: str | None = None
    pem_keys: Mapping[str, str] = field(default_factory=dict)
    # Signature algorithms accepted; each key narrows this by its type.
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    # Clock skew allowed on exp, nbf and iat, in seconds (at most 300).
    leeway: int = 30
    # exp - iat above this is refused even with a good signature; None
    # turns the cap off (and warns).
    max_token_lifetime: int | None = 900
    # Bytes of bearer credential read at most; larger is refused unread.
    max_token_size: int = 8192
    # Required JOSE "typ" (e.g. "at+jwt", RFC 9068); None skips the check.
    token_type: str | None = None
    # realm="..." in WWW-Authenticate.
    realm: str = "api"
    # The central route table: {"path", "methods", "scopes" | "public"}.
    routes: tuple[RouteRule, ...] = ()
    # Fold case before matching routes (for case-insensitive apps).
    case_insensitive_paths: bool = False
    # Peers whose X-Forwarded-For is believed, as addresses or CIDRs.
    trusted_proxies: tuple[str, ...] = ()
    # OPTIONS with Origin and Access-Control-Request-Method passes unverified.
    allow_cors_preflight: bool = True
    # JWKS cache: fresh for ttl, refetch on unknown kid at most once per
    # cooldown, give up after timeout, read at most max_bytes, and keep the
    # last good set this long past its ttl while the source is down.
    jwks_cache_ttl: int = 300
    jwks_refresh_cooldown: int = 30
    jwks_timeout: float = 3.0
    jwks_max_bytes: int = 256 * 1024
    jwks_stale_for: int = 3600
    # Verified tokens kept (keyed by the exact token, until exp); 0 disables.
    verified_cache_size: int = 4096
    # acr values from weakest to strongest: a stronger one meets a route's
    # need for a weaker. Without it, acr values must match exactly.
    acr_levels: tuple[str, ...] = ()
    # Shared state: "memory://" (one process), "sqlite:///path/to/file"
    # (one host, several workers) or "redis://host:port/db", "rediss://..."
    # or "redis+sentinel://host:port/service/db" (many hosts).
    store: str = "memory://"
    # Request headers whose values make the device fingerprint.
    device_headers: tuple[str, ...] = ("user-agent",)
    # Seconds a session's and a subject's history is kept after last use.
    history_ttl: int = 30 * 24 * 3600
    # Seconds a session or service revocation holds (a subject revocation
    # holds until every token issued before it has expired).
    revocation_ttl: int = 24 * 3600
    # Claims that mark a token one-time: {"token_use": ["step_up"]}.
    one_time_claims: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    # -- risk: signals add up to a score; thresholds pick the outcome --------
    # At or above challenge_at: step up (RFC 9470); at or above deny_at: 403.
    # Routes may set stricter thresholds of their own.
    risk_challenge_at: int = 50
    risk_deny_at: int = 150
    # Weight per signal name, over the defaults in zt_middleware.risk.
    risk_weights: Mapping[str, int] = field(default_factory=dict)
    # Faster than this between two places is impossible travel.
    max_travel_kmh: int = 1000
    # MaxMind databases (City, Anonymous-IP); without a City database an
    # embedded country table is used.
    geoip_city_db: str | None = None
    geoip_anonymous_db: str | None = None
    # Files of CIDRs, one per line: allowed networks lower the score,
    # denied ones raise it.
    ip_allow_file: str | None = None
    ip_deny_file: str | None = None
    # Device posture: a JWT from device management in this header, signed
    # by posture_jwks(_file) for posture_issuer; minimum version per OS.
    posture_header: str = "x-device-posture"
    posture_jwks: Mapping[str, Any] | None = None
    posture_jwks_file: str | None = None
    posture_issuer: str | None = None
    posture_minimums: Mapping[str, str] = field(default_factory=dict)
    posture_required: bool = False

    # -- step-up: a TOTP code mints a stronger, short-lived token ------------
    step_up_path: str = "/.zt/step-up"
    step_up_acr: str = "urn:zt:acr:mfa"
    # Lifetime of the minted token, and how recent its auth_time must be to
    # answer a risk challenge.
    step_up_lifetime: int = 300
    step_up_max_age: int = 300
    # The private key (PEM) that signs step-up tokens, its kid and issuer.
    # Without a key file a key is generated per process (one worker only).
    step_up_key_file: str | None = None
    step_up_kid: str = "zt-step-up"
    step_up_issuer: str | None = None
    # The minted token may be used once only.
    step_up_one_time: bool = False
    # Browser sessions: the cookie carrying the session token, and the one
    # carrying the step-up token.
    cookie_name: str | None = None
    step_up_cookie: str = "zt_step_up"
    # TOTP: the issuer shown in authenticator apps, a Fernet key that
    # encrypts secrets at rest, failed attempts allowed before a lock-out of
    # totp_lockout seconds (per session and per subject).
    totp_issuer: str = "zt-middleware"
    totp_encryption_key: str | None = None
    totp_max_attempts: int = 5
    totp_lockout: int = 900

    @property
    def step_up_token_issuer(self) -> str:
        return self.step_up_issuer or f"urn:zt-middleware:step-up:{self.audience}"

    def __repr__(self) -> str:
        # Inline keys may hold HMAC secrets: never shown.
        return (
            f"Settings(issuer={self.issuer!r}, audience={self.audience!r}, "
            f"jwks_url={self.jwks_url and redact_url(self.jwks_url)!r}, "
            f"algorithms={list(self.algorithms)!r}, "
            f"routes={len(self.routes)}, jwks={'[secure]' if self.jwks else None})"
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | Settings) -> Settings:
        """Validate ``values`` and build settings, or raise ConfigurationError."""
        if isinstance(values, Settings):
            return values
        if not isinstance(values, Mapping):
            raise ConfigurationError(
                f"settings: expected a mapping, got {type(values).__name__}"
            )

        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(
                f"settings: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"known keys are {', '.join(sorted(known))}"
            )

        kwargs = {name: _VALIDATORS[name](name, raw) for name, raw in values.items()}
        for required in ("issuer", "audience"):
            if required not in kwargs:
                raise ConfigurationError(f"{required}: required, not given")
        settings = cls(**kwargs)
        settings._check_whole()

        return settings

    @classmethod
    def from_toml(cls, path: str, table: str = "zero_trust") -> Settings:
        """Load the ``[zero_trust]`` table (or the whole file) from ``path``."""
        try:
            with open(path, "rb") as fh:
                document = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"settings file {path!r}: {exc}") from exc

        return cls.from_mapping(document.get(table, document))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build from ``ZT_SETTINGS_FILE`` or ``ZT_<FIELD>`` variables.

        Values of list and mapping fields are JSON; numbers are parsed.
        """
        environ = os.environ if environ is None else environ
        if "ZT_SETTINGS_FILE" in environ:
            return cls.from_toml(environ["ZT_SETTINGS_FILE"])

        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"ZT_{f.name.upper()}")
            if raw is None:
                continue
            try:
                values[f.name] = json.loads(raw)
            except ValueError:
                values[f.name] = raw

        return cls.from_mapping(values)

    def _check_whole(self) -> None:
        if not (self.jwks_url or self.jwks or self.jwks_file or self.pem_keys):
            raise ConfigurationError(
                "settings: no key source; give one of jwks_url, jwks, jwks_file "
                "or pem_keys"
            )

        if self.risk_deny_at < self.risk_challenge_at:
            raise ConfigurationError(
                f"risk_deny_at: expected at least risk_challenge_at "
                f"({self.risk_challenge_at}), got {self.risk_deny_at}"
            )

        for proxy in self.trusted_proxies:
            if ipaddress.ip_network(proxy, strict=False).prefixlen == 0:
                warnings.warn(
                    f"trusted_proxies: {proxy} trusts every peer's X-Forwarded-For, "
                    "so any client can choose its own address",
                    InsecureSettingWarning,
                    stacklevel=3,
                )

        if self.max_token_lifetime is None:
            warnings.warn(
                "max_token_lifetime is None: tokens of any lifetime are accepted",
                InsecureSettingWarning,
                stacklevel=3,
            )

        if self.jwks_url and urlsplit(self.jwks_url).scheme == "http":
            host = urlsplit(self.jwks_url).hostname or ""
            if not _is_loopback(host):
                warnings.warn(
                    "jwks_url uses plain http to a host that is not loopback: "
                    "keys can be swapped in transit",
                    InsecureSettingWarning,
                    stacklevel=3,
                )


def load_settings(values: Mapping[str, Any] | Settings | str | None) -> Settings:
    """Settings from a mapping, a TOML path, or the environment when None."""
    if values is None:
        return Settings.from_env()
    if isinstance(values, str):
        return Settings.from_toml(values)

    return Settings.from_mapping(values)


def redact_url(url: str) -> str:
    """``url`` without user, password, query or fragment, for logs and reprs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- field validators ------------------------------------------------------


def _describe(value: Any) -> str:
    return type(value).__name__


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{name}: expected a non-empty string, got {_describe(value)}"
        )
    return value


def _optional_string(name: str, value: Any) -> str | None:
    return None if value is None else _string(name, value)


def _integer(low: int, high: int | None = None, optional: bool = False) -> Any:
    def check(name: str, value: Any) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(
                f"{name}: expected an integer, got {_describe(value)}"
            )
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            raise ConfigurationError(f"{name}: expected {bound}, got {value}")
        return value

    return check


def _positive_float(name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(f"{name}: expected a positive number, got {value!r}")
    return float(value)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{name}: expected true or false, got {_describe(value)}"
        )
    return value


def _string_list(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigurationError(
            f"{name}: expected a list of strings, got {_describe(value)}"
        )
    for item in value:
        if not isinstance(item, str) or not item:
            raise ConfigurationError(
                f"{name}: expected a list of strings, found {_describe(item)}"
            )
    return tuple(value)


def _algorithms(name: str, value: Any) -> tuple[str, ...]:
    algorithms = _string_list(name, value)
    for alg in algorithms:
        if alg not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(
                f"{name}: {alg!r} is not supported; choose from "
                f"{', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )
    if not algorithms:
        raise ConfigurationError(f"{name}: expected at least one algorithm")
    return algorithms


def _mapping(name: str, value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{name}: expected a mapping, got {_describe(value)}")
    return value


def _pem_keys(name: str, value: Any) -> Mapping[str, str]:
    mapping = _mapping(name, value) or {}
    for kid, path in mapping.items():
        if not isinstance(kid, str) or not isinstance(path, str):
            raise ConfigurationError(f"{name}: expected {{kid: path}} strings")
    return dict(mapping)


def _jwks_url(name: str, value: Any) -> str | None:
    if value is None:
        return None
    url = _string(name, value)
    if urlsplit(url).scheme not in ("https", "http"):
        raise ConfigurationError(
            f"{name}: expected an http(s) URL, got {redact_url(url)!r}"
        )
    return url


def _proxies(name: str, value: Any) -> tuple[str, ...]:
    proxies = _string_list(name, value)
    for entry in proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigurationError(
                f"{name}: {entry!r} is not an IP address or CIDR"
            ) from None
    return proxies


_METHODS = frozenset(
    {"*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WEBSOCKET"}
)


def _routes(name: str, value: Any) -> tuple[RouteRule, ...]:
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        raise ConfigurationError(f"{name}: expected a list of route rules")

    rules = []
    for index, entry in enumerate(value):
        where = f"{name}[{index}]"
        if isinstance(entry, RouteRule):
            rules.append(entry)
            continue
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"{where}: expected a mapping")
        extra = set(entry) - {
            "path", "methods", "scopes", "public", "acr", "max_age",
            "challenge_at", "deny_at",
        }  # fmt: skip
        if extra:
            raise ConfigurationError(f"{where}: unknown key(s) {sorted(extra)}")

        path = _string(f"{where}.path", entry.get("path"))
        if not path.startswith("/"):
            raise ConfigurationError(f"{where}.path: expected to start with '/'")
        for placeholder in re.findall(r"\{[^}]*\}|\*", path):
            if not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*(:path)?\}", placeholder):
                raise ConfigurationError(
                    f"{where}.path: {placeholder!r} is not a parameter; use {{name}} "
                    "for one segment or {name:path} for the rest"
                )
        methods = frozenset(
            m.upper()
            for m in _string_list(f"{where}.methods", entry.get("methods", ["*"]))
        )
        if not methods <= _METHODS:
            raise ConfigurationError(
                f"{where}.methods: unknown method(s) {sorted(methods - _METHODS)}"
            )
        scopes = _scope_set(f"{where}.scopes", entry.get("scopes", []))
        is_public = _boolean(f"{where}.public", entry.get("public", False))
        if is_public and scopes:
            raise ConfigurationError(f"{where}: a public route cannot require scopes")
        if not is_public and "scopes" not in entry and "acr" not in entry:
            raise ConfigurationError(
                f"{where}: say either public = true or the scopes it needs"
            )

        rules.append(
            RouteRule(
                path=path,
                methods=methods,
                scopes=scopes,
                public=is_public,
                acr=_optional_string(f"{where}.acr", entry.get("acr")),
                max_age=_integer(0, optional=True)(
                    f"{where}.max_age", entry.get("max_age")
                ),
                challenge_at=_integer(0, optional=True)(
                    f"{where}.challenge_at", entry.get("challenge_at")
                ),
                deny_at=_integer(0, optional=True)(
                    f"{where}.deny_at", entry.get("deny_at")
                ),
            )
        )

    return tuple(rules)


def _scope_set(name: str, value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = value.split()
    scopes = _string_list(name, value)
    for scope in scopes:
        if any(ch.isspace() or ch in '"\\' for ch in scope):
            raise ConfigurationError(f"{name}: {scope!r} is not a valid scope token")
    return frozenset(scopes)


def _store_url(name: str, value: Any) -> str:
    url = _string(name, value)
    if urlsplit(url).scheme not in (
        "memory",
        "sqlite",
        "redis",
        "rediss",
        "redis+sentinel",
    ):
        raise ConfigurationError(
            f"{name}: expected memory://, sqlite:///path, redis://, rediss:// "
            "or redis+sentinel://, "
            f"got scheme {urlsplit(url).scheme!r}"
        )
    return url


def _one_time_claims(name: str, value: Any) -> Mapping[str, tuple[str, ...]]:
    mapping = _mapping(name, value) or {}
    return {
        _string(f"{name} key", claim): _string_list(f"{name}[{claim!r}]", values)
        for claim, values in mapping.items()
    }


def _header_names(name: str, value: Any) -> tuple[str, ...]:
    return tuple(header.lower() for header in _string_list(name, value))


def _weights(name: str, value: Any) -> Mapping[str, int]:
    mapping = _mapping(name, value) or {}
    weights = {}
    for signal, weight in mapping.items():
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise ConfigurationError(
                f"{name}[{signal!r}]: expected an integer weight, "
                f"got {_describe(weight)}"
            )
        weights[_string(f"{name} key", signal)] = weight
    return weights


def _string_mapping(name: str, value: Any) -> Mapping[str, str]:
    mapping = _mapping(name, value) or {}
    return {
        _string(f"{name} key", key): _string(f"{name}[{key!r}]", item)
        for key, item in mapping.items()
    }


def _header_name(name: str, value: Any) -> str:
    return _string(name, value).lower()


def _path(name: str, value: Any) -> str:
    path = _string(name, value)
    if not path.startswith("/") or "?" in path or "#" in path:
        raise ConfigurationError(f"{name}: expected an absolute path, got {path!r}")
    return path


_VALIDATORS: dict[str, Any] = {
    "issuer": _string,
    "audience": _string,
    "jwks_url": _jwks_url,
    "jwks": _mapping,
    "jwks_file": _optional_string,
    "pem_keys": _pem_keys,
    "algorithms": _algorithms,
    "leeway": _integer(0, MAX_LEEWAY),
    "max_token_lifetime": _integer(1, optional=True),
    "max_token_size": _integer(256, 1024 * 1024),
    "token_type": _optional_string,
    "realm": _string,
    "routes": _routes,
    "case_insensitive_paths": _boolean,
    "trusted_proxies": _proxies,
    "allow_cors_preflight": _boolean,
    "jwks_cache_ttl": _integer(1),
    "jwks_refresh_cooldown": _integer(0),
    "jwks_timeout": _positive_float,
    "jwks_max_bytes": _integer(1024),
    "jwks_stale_for": _integer(0),
    "verified_cache_size": _integer(0),
    "acr_levels": _string_list,
    "store": _store_url,
    "device_headers": _header_names,
    "history_ttl": _integer(60),
    "revocation_ttl": _integer(60),
    "one_time_claims": _one_time_claims,
    "risk_challenge_at": _integer(0),
    "risk_deny_at": _integer(0),
    "risk_weights": _weights,
    "max_travel_kmh": _integer(1),
    "geoip_city_db": _optional_string,
    "geoip_anonymous_db": _optional_string,
    "ip_allow_file": _optional_string,
    "ip_deny_file": _optional_string,
    "posture_header": _header_name,
    "posture_jwks": _mapping,
    "posture_jwks_file": _optional_string,
    "posture_issuer": _optional_string,
    "posture_minimums": _string_mapping,
    "posture_required": _boolean,
    "step_up_path": _path,
    "step_up_acr": _string,
    "step_up_lifetime": _integer(1, 900),
    "step_up_max_age": _integer(1),
    "step_up_key_file": _optional_string,
    "step_up_kid": _string,
    "step_up_issuer": _optional_string,
    "step_up_one_time": _boolean,
    "cookie_name": _optional_string,
    "step_up_cookie": _string,
    "totp_issuer": _string,
    "totp_encryption_key": _optional_string,
    "totp_max_attempts": _integer(1, 100),
    "totp_lockout": _integer(1),
}
