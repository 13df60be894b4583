"""Verification keys: which key, for which algorithms, from where.

A :class:`KeySet` maps ``kid`` to a :class:`VerificationKey` whose algorithms
are fixed by the key's own type, never by a token's header: an RSA key can
never be used as an HMAC secret. Key sources hand out the current key set;
:class:`JWKSSource` fetches it over HTTP with a timeout and a size cap, caches
it, refetches on an unknown ``kid`` at most once per cool-down, and keeps the
last good set for a bounded time while the endpoint is down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import get_default_algorithms
from jwt.exceptions import PyJWTError

from .errors import ConfigurationError, KeySourceUnavailable
from .settings import redact_url

__all__ = [
    "JWKSSource",
    "KeySet",
    "KeySource",
    "StaticKeySource",
    "VerificationKey",
    "key_source_from_settings",
]

logger = logging.getLogger("zt_middleware.keys")

_ALGORITHMS = get_default_algorithms()

# Which algorithms each kind of key may verify.
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True, repr=False)
class VerificationKey:
    """One public key (or HMAC secret) and the algorithms it may verify."""

    kid: str | None
    kty: str
    algorithms: frozenset[str]
    material: Any

    def __repr__(self) -> str:
        return (
            f"VerificationKey(kid={self.kid!r}, kty={self.kty!r}, "
            f"algorithms={sorted(self.algorithms)!r}, material=[secure])"
        )

    @property
    def is_symmetric(self) -> bool:
        return self.kty == "oct"


class KeySet:
    """Keys by ``kid``; a set with one key also serves tokens without one."""

    __slots__ = ("_by_kid", "keys")

    def __init__(self, keys: Iterable[VerificationKey]) -> None:
        self.keys = tuple(keys)
        self._by_kid = {key.kid: key for key in self.keys if key.kid is not None}

        symmetric = [key for key in self.keys if key.is_symmetric]
        if symmetric and len(symmetric) != len(self.keys):
            # With an RSA or EC public key beside an HMAC secret, one
            # confusion bug away from "sign HS256 with the public key".
            raise ConfigurationError(
                "keys: an HMAC secret cannot share a key set with public keys"
            )

        # Two keys under one kid: which one verifies would depend on the
        # order of the document.
        if len(self._by_kid) != sum(key.kid is not None for key in self.keys):
            raise ConfigurationError("keys: a kid names more than one key")

    def __repr__(self) -> str:
        return f"KeySet({[key.kid for key in self.keys]!r})"

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, kid: str | None) -> VerificationKey | None:
        if kid is not None:
            return self._by_kid.get(kid)
        if len(self.keys) == 1:
            return self.keys[0]
        return None

    @classmethod
    def from_jwks(cls, document: Any, allowed: Iterable[str]) -> KeySet:
        """Build from a JWK Set document; unusable keys are skipped."""
        if not isinstance(document, Mapping) or not isinstance(
            document.get("keys"), list
        ):
            raise ConfigurationError("keys: a JWK Set needs a 'keys' list")

        allowed = frozenset(allowed)
        keys = []
        for jwk in document["keys"]:
            try:
                keys.append(key_from_jwk(jwk, allowed))
            except ConfigurationError as exc:
                logger.warning("skipping a JWK: %s", exc.description)

        return cls(keys)


def key_from_jwk(jwk: Any, allowed: frozenset[str]) -> VerificationKey:
    """One JWK to a verification key, refusing keys not meant for signatures."""
    if not isinstance(jwk, Mapping):
        raise ConfigurationError("JWK: expected an object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ConfigurationError("JWK: 'kid' must be a string")
    kty = jwk.get("kty")
    if kty not in ("RSA", "EC", "OKP", "oct"):
        raise ConfigurationError(f"JWK {kid!r}: unsupported kty {kty!r}")

    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ConfigurationError(f"JWK {kid!r}: use is {use!r}, not 'sig'")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (
        not isinstance(key_ops, list) or "verify" not in key_ops
    ):
        raise ConfigurationError(f"JWK {kid!r}: key_ops does not include 'verify'")

    # Parse with PyJWT's own JWK readers; their messages may quote the key,
    # so they are replaced, never passed on.
    reader = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA", "oct": "HS256"}[kty]
    try:
        material = _ALGORITHMS[reader].from_jwk(dict(jwk))
    except (PyJWTError, ValueError, TypeError, KeyError):
        raise ConfigurationError(f"JWK {kid!r}: key material does not parse") from None
    if hasattr(material, "public_key"):
        material = material.public_key()

    algorithms = algorithms_for(material, allowed)
    declared = jwk.get("alg")
    if declared is not None:
        if declared not in algorithms:
            raise ConfigurationError(
                f"JWK {kid!r}: alg {declared!r} is not allowed for this key"
            )
        algorithms = frozenset({declared})
    if not algorithms:
        raise ConfigurationError(f"JWK {kid!r}: no allowed algorithm fits this key")

    return VerificationKey(kid=kid, kty=kty, algorithms=algorithms, material=material)


def key_from_pem(kid: str, pem: bytes, allowed: frozenset[str]) -> VerificationKey:
    """A PEM public key (or certificate-free SPKI) to a verification key."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        material = load_pem_public_key(pem)
    except ValueError:
        raise ConfigurationError(f"pem_keys[{kid!r}]: not a PEM public key") from None
    algorithms = algorithms_for(material, allowed)
    if not algorithms:
        raise ConfigurationError(f"pem_keys[{kid!r}]: no allowed algorithm fits")
    kty = (
        "RSA"
        if isinstance(material, rsa.RSAPublicKey)
        else ("EC" if isinstance(material, ec.EllipticCurvePublicKey) else "OKP")
    )

    return VerificationKey(kid=kid, kty=kty, algorithms=algorithms, material=material)


def algorithms_for(material: Any, allowed: frozenset[str]) -> frozenset[str]:
    """The allowed algorithms that this key's type can verify."""
    if isinstance(material, rsa.RSAPublicKey):
        # Size is checked; ROCA-weak moduli (CVE-2017-15361) are not detected.
        if material.key_size < _MIN_RSA_BITS:
            return frozenset()
        return _RSA_ALGS & allowed
    if isinstance(material, ec.EllipticCurvePublicKey):
        alg = _EC_ALGS.get(material.curve.name)
        return frozenset({alg}) & allowed if alg else frozenset()
    if isinstance(material, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return frozenset({"EdDSA"}) & allowed
    if isinstance(material, bytes):
        return frozenset(
            alg
            for alg, size in _HMAC_MIN_BYTES.items()
            if alg in allowed and len(material) >= size
        )
    return frozenset()


class KeySource(Protocol):
    """Where the current key set comes from."""

    generation: int

    def current(self) -> KeySet | None: ...

    def should_refresh(self, kid: str | None) -> bool: ...

    def refresh(self) -> None: ...


class StaticKeySource:
    """Keys fixed at start: inline JWK Set, JWK Set file or PEM files."""

    generation = 0

    def __init__(self, keys: KeySet) -> None:
        self._keys = keys

    def current(self) -> KeySet:
        return self._keys

    def should_refresh(self, kid: str | None) -> bool:
        return False

    def refresh(self) -> None:
        return None


class JWKSSource:
    """A JWKS URL, fetched with a timeout and size cap, cached and rotated.

    ``current()`` never does I/O. ``should_refresh()`` says when a fetch is
    due: the set is past its TTL, or a ``kid`` is unknown and the cool-down
    has passed. ``refresh()`` does the blocking fetch; async callers run it
    in a worker thread. A failed fetch keeps the last good set until it is
    ``stale_for`` seconds past its TTL, then the source reports unavailable.
    """

    def __init__(
        self,
        url: str,
        *,
        allowed: Iterable[str],
        ttl: int = 300,
        cooldown: int = 30,
        timeout: float = 3.0,
        max_bytes: int = 256 * 1024,
        stale_for: int = 3600,
        clock: Callable[[], float] = time.monotonic,
        opener: Callable[[str, float, int], bytes] | None = None,
    ) -> None:
        self.url = url
        self.generation = 0
        self._allowed = frozenset(allowed)
        self._ttl = ttl
        self._cooldown = cooldown
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._stale_for = stale_for
        self._clock = clock
        self._open = opener or _open_url
        self._keys: KeySet | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._fingerprint: tuple[Any, ...] = ()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"JWKSSource({redact_url(self.url)!r}, generation={self.generation})"

    def current(self) -> KeySet | None:
        if self._keys is None:
            return None
        if self._clock() - self._fetched_at > self._ttl + self._stale_for:
            return None
        return self._keys

    def should_refresh(self, kid: str | None) -> bool:
        now = self._clock()
        if now - self._attempted_at < self._cooldown:
            return False
        if self._keys is None or now - self._fetched_at > self._ttl:
            return True
        return self._keys.find(kid) is None

    def refresh(self) -> None:
        """Fetch now (unless another thread just did); never raises.

        A caller waits for a fetch already under way at most ``timeout``
        seconds, so a slow endpoint never queues requests behind it.
        """
        if not self._lock.acquire(timeout=self._timeout):
            return
        try:
            self._refresh_locked()
        finally:
            self._lock.release()

    def _refresh_locked(self) -> None:
        if self._clock() - self._attempted_at < self._cooldown:
            return
        self._attempted_at = self._clock()
        try:
            body = self._open(self.url, self._timeout, self._max_bytes)
            if len(body) > self._max_bytes:
                raise ValueError("JWKS response larger than jwks_max_bytes")
            keys = KeySet.from_jwks(json.loads(body), self._allowed)
            if not len(keys):
                # An identity provider's hiccup must not become an
                # outage: an empty set never replaces a good one.
                raise ValueError("JWKS holds no usable key")
        except Exception as exc:
            logger.error(
                "JWKS fetch from %s failed (%s); %s",
                redact_url(self.url),
                type(exc).__name__,
                "keeping the last good set" if self._keys else "no keys yet",
            )
            return

        fingerprint = tuple(sorted(_fingerprint(k) for k in keys.keys))
        if fingerprint != self._fingerprint:
            self.generation += 1
            self._fingerprint = fingerprint
            logger.info(
                "JWKS from %s: %d key(s) %s",
                redact_url(self.url),
                len(keys),
                [k.kid for k in keys.keys],
            )
        self._keys = keys
        self._fetched_at = self._clock()

    def require(self) -> KeySet:
        keys = self.current()
        if keys is None:
            raise KeySourceUnavailable("the JWKS endpoint cannot be reached")
        return keys


def _fingerprint(key: VerificationKey) -> tuple[str, str, bytes]:
    """What identifies a key: new material under an old kid is a rotation."""
    if isinstance(key.material, bytes):
        raw = hashlib.sha256(key.material).digest()
    else:
        raw = key.material.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return (key.kid or "", key.kty, raw)


def _open_url(url: str, timeout: float, max_bytes: int) -> bytes:
    """GET ``url``; ``timeout`` bounds the whole fetch, not each read."""
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(  # noqa: S310 - http(s) only, checked at start
        url, headers={"Accept": "application/json"}
    )
    body = bytearray()
    # The scheme was checked at start (http or https only).
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        while len(body) <= max_bytes:
            # read1 returns after one read of the socket: a server that
            # trickles bytes is cut off at the deadline.
            chunk = response.read1(64 * 1024)
            if not chunk:
                break
            body += chunk
            if time.monotonic() > deadline:
                raise TimeoutError("JWKS fetch took longer than jwks_timeout")
    if len(body) > max_bytes:
        raise ValueError("JWKS response larger than jwks_max_bytes")
    return bytes(body)


def key_source_from_settings(settings: Any) -> KeySource:
    """The key source the settings describe (a JWKS URL wins if present)."""
    allowed = frozenset(settings.algorithms)
    if settings.jwks_url:
        return JWKSSource(
            settings.jwks_url,
            allowed=allowed,
            ttl=settings.jwks_cache_ttl,
            cooldown=settings.jwks_refresh_cooldown,
            timeout=settings.jwks_timeout,
            max_bytes=settings.jwks_max_bytes,
            stale_for=settings.jwks_stale_for,
        )

    keys: list[VerificationKey] = []
    if settings.jwks:
        keys.extend(KeySet.from_jwks(settings.jwks, allowed).keys)
    if settings.jwks_file:
        try:
            with open(settings.jwks_file, "rb") as fh:
                document = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(
                f"jwks_file: cannot read {settings.jwks_file!r} ({type(exc).__name__})"
            ) from exc
        keys.extend(KeySet.from_jwks(document, allowed).keys)
    for kid, path in settings.pem_keys.items():
        try:
            with open(path, "rb") as fh:
                keys.append(key_from_pem(kid, fh.read(), allowed))
        except OSError as exc:
            raise ConfigurationError(
                f"pem_keys[{kid!r}]: cannot read {path!r}"
            ) from exc
    if not keys:
        raise ConfigurationError("keys: the configured key set holds no usable key")

    return StaticKeySource(KeySet(keys))
