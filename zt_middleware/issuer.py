"""A development issuer: key pairs and signed tokens for tests and the demo.

Production tokens come from your identity provider. This module exists so
that ``zt token issue``, the demo and the test-suite can mint real tokens
with real keys; it refuses lifetimes over the verifier's cap.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from .errors import ConfigurationError

__all__ = ["DEFAULT_LIFETIME", "Issuer", "SigningKey", "generate_key"]

DEFAULT_LIFETIME = 300
MAX_LIFETIME = 900


@dataclass(frozen=True, slots=True, repr=False)
class SigningKey:
    kid: str
    algorithm: str
    private_key: Any

    def __repr__(self) -> str:
        return (
            f"SigningKey(kid={self.kid!r}, algorithm={self.algorithm!r}, "
            "private_key=[secure])"
        )

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(
            get_default_algorithms()[self.algorithm].to_jwk(
                self.private_key.public_key()
            )
        )
        jwk.update(kid=self.kid, alg=self.algorithm, use="sig")
        return jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def private_pem(self) -> bytes:
        pem: bytes = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem

    def public_pem(self) -> bytes:
        pem: bytes = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo,
        )
        return pem

    @classmethod
    def from_pem(cls, pem: bytes, kid: str, algorithm: str | None = None) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        return cls(
            kid=kid, algorithm=algorithm or _default_algorithm(key), private_key=key
        )


def _default_algorithm(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ConfigurationError("signing key: unsupported private key type")


def generate_key(algorithm: str = "RS256", kid: str | None = None) -> SigningKey:
    """A fresh private key for ``algorithm`` (RS256, PS256, ES256 or EdDSA)."""
    key: Any
    if algorithm in ("RS256", "PS256"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ConfigurationError(f"algorithm: cannot generate keys for {algorithm!r}")

    return SigningKey(
        kid=kid or secrets.token_hex(8), algorithm=algorithm, private_key=key
    )


class Issuer:
    """Mints tokens signed by one key, for one issuer."""

    def __init__(
        self, key: SigningKey, issuer: str, *, max_lifetime: int = MAX_LIFETIME
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.max_lifetime = max_lifetime

    def issue(
        self,
        subject: str,
        audience: str | list[str],
        *,
        scopes: Iterable[str] = (),
        lifetime: int = DEFAULT_LIFETIME,
        session_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        if lifetime <= 0 or lifetime > self.max_lifetime:
            raise ConfigurationError(
                f"lifetime: expected 1 to {self.max_lifetime} seconds, got {lifetime}"
            )

        issued_at = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": issued_at,
            "exp": issued_at + lifetime,
            "jti": secrets.token_urlsafe(12),
            "sid": session_id or secrets.token_urlsafe(12),
        }
        scopes = sorted(scopes)
        if scopes:
            claims["scope"] = " ".join(scopes)
        claims.update(extra or {})

        return self.sign(claims, headers=headers)

    def sign(
        self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None
    ) -> str:
        """Sign arbitrary claims as they are (tests use it to craft bad ones)."""
        header = {"kid": self.key.kid, **(headers or {})}
        return jwt.encode(
            dict(claims),
            self.key.private_key,
            algorithm=self.key.algorithm,
            headers=header,
        )
