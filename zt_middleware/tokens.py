"""Token verification: signature first, then one claim at a time.

:class:`TokenVerifier` turns a bearer credential into a :class:`Principal`
or raises :class:`InvalidToken` with a reason code. Verification is written
as a generator so that the one piece of I/O it may need, refreshing a JWKS,
is done by whoever drives it: a plain loop for sync code, a worker thread for
async code. A bounded cache keyed by the exact token string serves repeats
until ``exp``; a key rotation invalidates it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Generator
from types import MappingProxyType
from typing import Any

from . import reasons
from .cache import put_bounded
from .errors import InvalidToken
from .jws import parse_compact, verified_claims
from .keys import KeySource, VerificationKey
from .principal import Principal
from .settings import Settings

__all__ = ["RefreshKeys", "TokenVerifier"]


class RefreshKeys:
    """An effect: the key source must be refreshed before going on."""

    __slots__ = ("source",)

    def __init__(self, source: KeySource) -> None:
        self.source = source

    def run(self) -> None:
        self.source.refresh()

    async def arun(self) -> None:
        # The fetch blocks; it runs in a worker thread, never on the loop.
        await asyncio.to_thread(self.source.refresh)


Steps = Generator[RefreshKeys, None, Principal]


class TokenVerifier:
    def __init__(
        self,
        settings: Settings,
        key_source: KeySource,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.key_source = key_source
        self.clock = clock
        self._cache: dict[str, tuple[Principal, int, str | None]] = {}
        self._cache_size = settings.verified_cache_size
        # The key this service signs its own step-up tokens with, once it
        # has one: those tokens name it by kid and carry the step-up issuer.
        self.step_up_key: VerificationKey | None = None

    def verify(self, token: str) -> Steps:
        """Generator: yields RefreshKeys when it needs keys, returns a principal."""
        cached = self._cache.get(token)
        if cached is not None:
            principal, generation, kid = cached
            if self._is_step_up_kid(kid):
                self._check_times(principal.claims)
                return principal
            # A cached token must not outlive its key: refresh when due, so a
            # rotation is seen, and trust nothing once the key set is gone.
            if self.key_source.should_refresh(kid):
                yield RefreshKeys(self.key_source)
            source = self.key_source
            if generation == source.generation and source.current() is not None:
                self._check_times(principal.claims)
                return principal
            self._cache.clear()

        jws = parse_compact(token, self.settings.max_token_size)
        self._check_type(jws.header)

        step_up = self._is_step_up_kid(jws.kid)
        if step_up:
            key = self.step_up_key
        else:
            if self.key_source.should_refresh(jws.kid):
                yield RefreshKeys(self.key_source)
            key = self._current_keys().find(jws.kid)
        if key is None:
            raise InvalidToken(
                "the token was signed by a key we do not know",
                reason=reasons.UNKNOWN_KEY,
            )
        claims = verified_claims(jws, key)
        issuer = self.settings.step_up_token_issuer if step_up else self.settings.issuer
        principal = self._validate_claims(claims, issuer)
        if step_up and claims.get("token_use") != "step_up":
            raise InvalidToken(
                "a token signed with the step-up key must be a step-up token",
                reason=reasons.CLAIM_INVALID,
            )
        self._remember(token, principal, jws.kid)

        return principal

    def verify_now(self, token: str) -> Principal:
        """Drive :meth:`verify` synchronously (for CLI and tests)."""
        steps = self.verify(token)
        try:
            effect = next(steps)
            while True:
                effect.run()
                effect = steps.send(None)
        except StopIteration as done:
            principal: Principal = done.value
            return principal

    def _current_keys(self) -> Any:
        keys = self.key_source.current()
        if keys is None:
            from .errors import KeySourceUnavailable

            raise KeySourceUnavailable("no verification keys are available")
        return keys

    def _remember(self, token: str, principal: Principal, kid: str | None) -> None:
        entry = (principal, self.key_source.generation, kid)
        put_bounded(self._cache, self._cache_size, token, entry)

    # -- header and claims ---------------------------------------------------

    def _check_type(self, header: dict[str, Any]) -> None:
        expected = self.settings.token_type
        if expected is None:
            return
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower().removeprefix(
            "application/"
        ) != expected.lower().removeprefix("application/"):
            raise InvalidToken(
                f"the token's typ must be {expected}", reason=reasons.WRONG_TOKEN_TYPE
            )

    def _is_step_up_kid(self, kid: str | None) -> bool:
        return self.step_up_key is not None and kid == self.step_up_key.kid

    def _validate_claims(self, claims: dict[str, Any], issuer: str) -> Principal:
        settings = self.settings

        for name in ("exp", "iat", "iss", "aud", "sub"):
            if name not in claims:
                raise InvalidToken(
                    f"the token has no {name} claim", reason=reasons.CLAIM_MISSING
                )

        self._check_times(claims)

        issued_at = _numeric_date(claims, "iat")
        expires_at = _numeric_date(claims, "exp")
        cap = settings.max_token_lifetime
        if cap is not None and expires_at - issued_at > cap:
            raise InvalidToken(
                f"the token lives longer than the {cap} s this service accepts",
                reason=reasons.LIFETIME_EXCEEDED,
            )

        if claims["iss"] != issuer:
            raise InvalidToken(
                "the token was issued by someone else", reason=reasons.WRONG_ISSUER
            )

        audience = claims["aud"]
        if isinstance(audience, str):
            audience = [audience]
        if (
            not isinstance(audience, list)
            or not all(isinstance(item, str) for item in audience)
            or settings.audience not in audience
        ):
            raise InvalidToken(
                "the token is meant for another audience",
                reason=reasons.WRONG_AUDIENCE,
            )

        return _principal(claims, issued_at, expires_at)

    def _check_times(self, claims: Any) -> None:
        now = self.clock()
        leeway = self.settings.leeway

        expires_at = _numeric_date(claims, "exp")
        if now >= expires_at + leeway:
            raise InvalidToken("the token has expired", reason=reasons.TOKEN_EXPIRED)

        issued_at = _numeric_date(claims, "iat")
        if issued_at > now + leeway:
            raise InvalidToken(
                "the token claims to be issued in the future",
                reason=reasons.ISSUED_IN_FUTURE,
            )

        if "nbf" in claims and _numeric_date(claims, "nbf") > now + leeway:
            raise InvalidToken(
                "the token is not valid yet", reason=reasons.TOKEN_NOT_YET_VALID
            )


def _numeric_date(claims: Any, name: str) -> float:
    """RFC 7519 NumericDate: a finite JSON number; no strings, no booleans."""
    value = claims[name]
    try:
        if type(value) in (int, float) and math.isfinite(value):
            return float(value)
    except OverflowError:  # an integer too large for a float
        pass
    raise InvalidToken(
        f"the token's {name} claim is not a number", reason=reasons.CLAIM_INVALID
    )


def _optional_string(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidToken(
            f"the token's {name} claim is not a string", reason=reasons.CLAIM_INVALID
        )
    return value


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from ``scope`` (space-separated, RFC 8693) or ``scp`` (a list)."""
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise InvalidToken(
                "the scope claim is not a string", reason=reasons.CLAIM_INVALID
            )
        return frozenset(scope.split())

    scp = claims.get("scp")
    if scp is not None:
        if not isinstance(scp, list) or not all(isinstance(s, str) for s in scp):
            raise InvalidToken(
                "the scp claim is not a list", reason=reasons.CLAIM_INVALID
            )
        return frozenset(scp)

    return frozenset()


def _principal(
    claims: dict[str, Any], issued_at: float, expires_at: float
) -> Principal:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise InvalidToken(
            "the sub claim is not a string", reason=reasons.CLAIM_INVALID
        )

    amr = claims.get("amr", [])
    if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
        raise InvalidToken("the amr claim is not a list", reason=reasons.CLAIM_INVALID)
    auth_time = _numeric_date(claims, "auth_time") if "auth_time" in claims else None

    return Principal(
        subject=subject,
        issuer=claims["iss"],
        scopes=_scopes(claims),
        session_id=_optional_string(claims, "sid"),
        token_id=_optional_string(claims, "jti"),
        acr=_optional_string(claims, "acr"),
        amr=tuple(amr),
        auth_time=auth_time,
        issued_at=issued_at,
        expires_at=expires_at,
        claims=MappingProxyType(claims),
    )
