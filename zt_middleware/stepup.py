"""Step-up: the endpoint that turns a TOTP code into a stronger token.

The guard serves ``settings.step_up_path`` itself; the app never sees it.

    GET, HEAD   the step-up page (also what a challenged browser is shown)
    POST        a form (``code``, ``next``) from the page, or JSON
                ``{"code": "123456"}`` from an API client

A POST needs the caller's session token (Authorization header or session
cookie). Then, in order: the token's revocations, the TOTP checks of
:mod:`zt_middleware.totp` (lock-out, the code, replay), and on success a
token at ``step_up_acr`` bound to the session (``sid``) and the device
(``zt_dev``), living ``step_up_lifetime`` seconds at most and never past
``max_token_lifetime`` or the session token's own ``exp``. API clients get
it as JSON; browsers as an HttpOnly, Secure, SameSite=Strict cookie and a
303 back to a same-origin path. Every outcome is audited; the code and the
token are never logged.

The flow is a generator of effects, so :meth:`Guard.step_up` and
:meth:`Guard.astep_up` drive the same steps. The page, the form's parsing
and the checks on ``next`` and ``Origin`` are in :mod:`.stepup_web`.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from . import reasons
from .context import RequestContext, cookie_value
from .decision import Decision, Outcome
from .effects import ReadState, adrive, drive
from .errors import ConfigurationError, CredentialError
from .issuer import Issuer, SigningKey, generate_key
from .keys import VerificationKey, algorithms_for
from .principal import Principal
from .session import device_fingerprint
from .stepup_web import (
    FORM,
    JSON,
    MAX_BODY,
    Submission,
    content_type,
    declared_length,
    message_for,
    page_headers,
    parse_submission,
    render_page,
    safe_next,
    same_origin,
)
from .stores.base import StateKeys, StateRead
from .totp import (
    Check,
    Enrolment,
    SecretBox,
    SecretUnreadable,
    Verdict,
    check_code,
    enrol_steps,
    warn_if_plain,
)

if TYPE_CHECKING:
    from .guard import Guard
    from .settings import Settings

__all__ = ["StepUpFlow", "load_signing_key", "verification_key"]

logger = logging.getLogger("zt_middleware.stepup")

Response = tuple[int, list[tuple[str, str]], bytes]
Steps = Generator[Any, Any, Response]

# -- keys ----------------------------------------------------------------------


def load_signing_key(settings: Settings) -> SigningKey:
    """The key in ``step_up_key_file``, or one made now for this process."""
    path = settings.step_up_key_file
    if path is None:
        logger.warning(
            "step_up_key_file is not set: step-up tokens are signed with a key "
            "made in this process and verify only here; give every worker the "
            "same key file"
        )
        return generate_key("ES256", settings.step_up_kid)

    try:
        with open(path, "rb") as fh:
            pem = fh.read()
    except OSError as exc:
        raise ConfigurationError(
            f"step_up_key_file: cannot read {path!r} ({type(exc).__name__})"
        ) from None
    try:
        return SigningKey.from_pem(pem, settings.step_up_kid)
    except (ValueError, TypeError):
        # The loader's message may quote the key: say only what is expected.
        raise ConfigurationError(
            f"step_up_key_file: {path!r} is not an unencrypted PEM private key "
            "of a type that signs JWTs (RSA of 2048 bits or more, P-256, Ed25519)"
        ) from None


def verification_key(key: SigningKey) -> VerificationKey:
    """The public half, allowed exactly the algorithm the key signs with."""
    public = key.private_key.public_key()
    algorithms = algorithms_for(public, frozenset({key.algorithm}))
    if not algorithms:
        raise ConfigurationError(
            f"step_up_key_file: the key cannot verify {key.algorithm} "
            "(RSA keys need 2048 bits; EC keys must be P-256)"
        )

    kty = str(key.public_jwk()["kty"])
    return VerificationKey(kid=key.kid, kty=kty, algorithms=algorithms, material=public)


# -- the flow ------------------------------------------------------------------


class StepUpFlow:
    """The step-up endpoint and page of one guard, and its signing key."""

    def __init__(self, guard: Guard) -> None:
        settings = guard.settings
        self.guard = guard
        self.settings = settings
        self.box = SecretBox(settings.totp_encryption_key)
        self.key = load_signing_key(settings)
        self.issuer = Issuer(self.key, settings.step_up_token_issuer)
        cap = settings.max_token_lifetime
        self.lifetime = min(settings.step_up_lifetime, cap or settings.step_up_lifetime)

        # The verifier must know the public half before the first step-up
        # token comes back.
        guard.verifier.step_up_key = verification_key(self.key)
        warn_if_plain(self.box)

    def __repr__(self) -> str:
        secrets_at_rest = "encrypted" if self.box.encrypted else "plain"
        return (
            f"StepUpFlow(kid={self.key.kid!r}, algorithm={self.key.algorithm!r}, "
            f"secrets={secrets_at_rest!r})"
        )

    # -- enrolment -------------------------------------------------------------

    def enrol(self, subject: str) -> Enrolment:
        """A new TOTP secret for ``subject``, stored (sealed when configured)."""
        return drive(self._enrol(subject))

    async def aenrol(self, subject: str) -> Enrolment:
        return await adrive(self._enrol(subject))

    def _enrol(self, subject: str) -> Generator[Any, Any, Enrolment]:
        return enrol_steps(
            self.guard.store, self.box, subject, self.settings.totp_issuer
        )

    # -- the page --------------------------------------------------------------

    def page(
        self,
        *,
        next_path: str,
        reasons: Iterable[str] = (),
        message: str | None = None,
    ) -> bytes:
        """The step-up form, returning to ``next_path`` when it is safe."""
        return render_page(
            action=self.settings.step_up_path,
            next_path=self._next(next_path),
            reasons=reasons,
            message=message,
        )

    def page_headers(
        self, page: bytes, base: Iterable[tuple[str, str]] = ()
    ) -> list[tuple[str, str]]:
        """Headers for the page, over ``base`` (a refusal's headers)."""
        return page_headers(page, base)

    def _next(self, path: str) -> str:
        path = safe_next(path)
        return "/" if path.partition("?")[0] == self.settings.step_up_path else path

    # -- the endpoint ----------------------------------------------------------

    def handle(self, ctx: RequestContext, body: bytes) -> Steps:
        """Generator: yields store and key effects, returns the response."""
        if ctx.method in ("GET", "HEAD"):
            shown = Decision(Outcome.ALLOW, 200, (reasons.STEP_UP_PAGE,))
            return self._answer(ctx, shown, Submission(None, "/", browser=True))
        if ctx.method != "POST":
            refused = _refusal(405, reasons.STEP_UP_MALFORMED, "Use GET or POST.")
            return self._answer(ctx, refused, extra=[("allow", "GET, HEAD, POST")])
        if len(body) > MAX_BODY or declared_length(ctx) > MAX_BODY:
            refused = _refusal(413, reasons.BODY_TOO_LARGE, "The body is too large.")
            return self._answer(ctx, refused)

        kind = content_type(ctx)
        if kind not in (FORM, JSON):
            refused = _refusal(415, reasons.STEP_UP_MALFORMED, f"Send {JSON}.")
            return self._answer(ctx, refused)
        submission = parse_submission(kind, body)
        if submission is None:
            refused = _refusal(400, reasons.STEP_UP_MALFORMED, "Malformed body.")
            return self._answer(ctx, refused)
        submission = Submission(
            submission.code, self._next(submission.next_path), submission.browser
        )

        # A form post, or any post riding on the session cookie, is what a
        # page on another site could forge: it must say it comes from here.
        ambient = cookie_value(ctx.headers, self.settings.cookie_name) is not None
        if (submission.browser or ambient) and not same_origin(ctx.headers):
            refused = Decision(
                Outcome.DENY, 403, (reasons.STEP_UP_CROSS_ORIGIN,),
                error="access_denied",
                description="Send the step-up form from a page of this site.",
            )  # fmt: skip
            return self._answer(ctx, refused, submission)

        try:
            token = self.guard._credential(ctx)
            if token is None:
                missing = Decision(Outcome.DENY, 401, (reasons.MISSING_TOKEN,))
                return self._answer(ctx, missing, submission)
            principal = yield from self.guard.verifier.verify(token)
        except CredentialError as exc:
            return self._answer(ctx, self.guard._refusal(exc), submission)

        unusable = self._unusable(principal)
        if unusable is None:
            keys = StateKeys(
                principal.subject, principal.session_id, principal.token_id
            )
            state: StateRead = yield ReadState(self.guard.store, keys)
            unusable = self._revoked(principal, state)
        if unusable is not None:
            return self._answer(ctx, unusable, submission)

        if not submission.code:
            refused = _refusal(400, reasons.STEP_UP_MALFORMED, "Send the code.")
            return self._answer(ctx, refused, submission)

        now = self.guard.clock()
        try:
            check = yield from check_code(
                self.guard.store,
                self.box,
                self.settings,
                principal.subject,
                principal.session_id,
                submission.code,
                now,
            )
        except SecretUnreadable as exc:
            logger.error("cannot check a TOTP code: %s", exc.description)
            return self._answer(ctx, _unreadable(principal), submission)
        if check.verdict is not Verdict.ACCEPTED:
            return self._answer(ctx, _totp_refusal(check, principal), submission)

        return (yield from self._succeed(ctx, principal, submission, now))

    def _unusable(self, principal: Principal) -> Decision | None:
        """A session token that cannot be stepped up, or None."""
        if principal.claims.get("token_use") == "step_up":
            return _invalid(
                principal, reasons.STEP_UP_INVALID, "Step up with the session's token."
            )
        if principal.session_id is None:
            # Without a sid the stronger token could not be tied to a session.
            return _invalid(principal, reasons.CLAIM_MISSING, "The token has no sid.")
        return None

    def _revoked(self, principal: Principal, state: StateRead) -> Decision | None:
        revoked = self.guard._revocation(principal, state)
        if revoked is None:
            return None
        return _invalid(principal, revoked, "The session was revoked.")

    def _succeed(
        self,
        ctx: RequestContext,
        principal: Principal,
        submission: Submission,
        now: float,
    ) -> Steps:
        token, expires_in = self._mint(ctx, principal, now)
        # Verified as the guard will verify it: a token this service would
        # refuse is never handed out.
        stronger = yield from self.guard.verifier.verify(token)

        decision = Decision(
            Outcome.ALLOW, 200, (reasons.STEP_UP_SUCCEEDED,), principal=stronger
        )
        recorded = self.guard._recorded(ctx, decision)
        if recorded is not decision:  # not audited: not handed out
            return self.guard.render(recorded, ctx)

        if submission.browser:
            name = self.settings.step_up_cookie
            cookie = (
                f"{name}={token}; Path=/; Max-Age={expires_in}; "
                "HttpOnly; Secure; SameSite=Strict"
            )
            headers = [
                ("location", submission.next_path),
                ("set-cookie", cookie),
                ("cache-control", "no-store"),
                ("content-length", "0"),
            ]
            return 303, headers, b""

        body = json.dumps(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "acr": self.settings.step_up_acr,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            ("pragma", "no-cache"),
        ]

        return 200, headers, body

    def _mint(
        self, ctx: RequestContext, principal: Principal, now: float
    ) -> tuple[str, int]:
        """The stronger token and its lifetime in seconds."""
        settings = self.settings
        issued = int(now)
        # Never longer than the session token it stands beside.
        expires = min(
            issued + self.lifetime, max(issued + 1, int(principal.expires_at))
        )

        claims: dict[str, Any] = {
            "iss": settings.step_up_token_issuer,
            "sub": principal.subject,
            "aud": settings.audience,
            "iat": issued,
            "exp": expires,
            "auth_time": issued,
            "jti": secrets.token_urlsafe(16),
            "sid": principal.session_id,
            "acr": settings.step_up_acr,
            "amr": [*[m for m in principal.amr if m != "otp"], "otp"],
            "token_use": "step_up",
        }
        if principal.scopes:
            claims["scope"] = " ".join(sorted(principal.scopes))
        device = device_fingerprint(ctx.headers, settings.device_headers)
        if device is not None:
            claims["zt_dev"] = device
        if principal.token_id is not None:
            claims["zt_parent"] = principal.token_id

        headers = {"typ": settings.token_type} if settings.token_type else None
        return self.issuer.sign(claims, headers=headers), expires - issued

    def _answer(
        self,
        ctx: RequestContext,
        decision: Decision,
        submission: Submission | None = None,
        *,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """Audit ``decision``; a browser gets the page, an API client JSON."""
        recorded = self.guard._recorded(ctx, decision)
        if submission is not None and submission.browser and recorded is decision:
            shown = decision.outcome is Outcome.ALLOW
            page = self.page(
                next_path=submission.next_path,
                message=None if shown else message_for(decision),
            )
            headers = page_headers(page)
            if decision.retry_after is not None:
                headers.append(("retry-after", str(decision.retry_after)))
            if decision.status == 401:
                # RFC 9110: a 401 names its challenge, page or not.
                realm = self.guard.settings.realm
                headers.append(("www-authenticate", decision.www_authenticate(realm)))
            return decision.status, headers, page

        status, headers, body = self.guard.render(recorded, ctx)
        return status, [*headers, *extra], body


def _refusal(status: int, reason: str, description: str) -> Decision:
    return Decision(
        Outcome.DENY,
        status,
        (reason,),
        error="invalid_request",
        description=description,
    )


def _invalid(principal: Principal, reason: str, description: str) -> Decision:
    return Decision(
        Outcome.DENY,
        401,
        (reason,),
        error="invalid_token",
        description=description,
        principal=principal,
    )


def _unreadable(principal: Principal) -> Decision:
    # The operator's to fix (totp_encryption_key), not the caller's.
    return Decision(
        Outcome.DENY,
        503,
        (reasons.TOTP_SECRET_UNREADABLE,),
        error="temporarily_unavailable",
        principal=principal,
        retry_after=60,
    )


def _totp_refusal(check: Check, principal: Principal) -> Decision:
    why: tuple[str, ...] = (check.verdict.value,)
    if check.verdict is Verdict.LOCKED_OUT:
        description = "Too many wrong codes; retry after the lock-out."
        return Decision(
            Outcome.DENY, 429, why, error="access_denied", description=description,
            principal=principal, retry_after=check.retry_after,
        )  # fmt: skip
    if check.verdict is Verdict.NOT_ENROLLED:
        description = "No second factor is enrolled for this subject."
        return Decision(
            Outcome.DENY, 403, why, error="access_denied", description=description,
            principal=principal,
        )  # fmt: skip

    description = "The code is wrong or was used already; send a new one."
    if check.locked:
        return Decision(
            Outcome.DENY, 429, (*why, reasons.TOTP_LOCKED_OUT), error="access_denied",
            description=description, principal=principal, retry_after=check.retry_after,
        )  # fmt: skip
    return Decision(
        Outcome.DENY, 401, why, error="invalid_request", description=description,
        principal=principal,
    )  # fmt: skip
