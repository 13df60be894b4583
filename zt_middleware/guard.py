"""The guard: every request, the same ordered checks, one decision.

Order, stopping at the first failure: the route's requirement (public routes
and real CORS preflights pass here), the bearer credential, the token, the
route's scopes, ``acr`` and ``max_age``, then the session: revocations of the
token, its session, its subject or its service identity, and a one-time
token's second use. A route with no requirement is refused even with a valid
token.

The checks are one generator, :meth:`Guard._steps`. It yields an effect when
it needs I/O (refreshing a JWKS, reading or writing the store) and returns a
:class:`Decision`. :meth:`Guard.decide` runs each effect inline for sync
stacks; :meth:`Guard.adecide` awaits its async twin, so the event loop never
blocks. Any exception while deciding ends as a refusal, never as an allow.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

from . import reasons
from .audit import AuditLog
from .context import RequestContext, cookie_value, wants_html
from .decision import Decision, Outcome
from .effects import ReadState, WriteState, adrive, drive, store_errors
from .errors import (
    CredentialError,
    InvalidRequest,
    InvalidToken,
    UnavailableError,
)
from .keys import KeySource, key_source_from_settings
from .principal import Principal
from .revocation import revocation_ttl
from .risk import Assessment, RiskEngine
from .routes import Requirement, RouteTable, normalise_path
from .session import compare, device_fingerprint, network_of
from .settings import Settings, load_settings
from .stepup import StepUpFlow
from .stores import StateKeys, StateRead, StateWrite, Store
from .stores.base import Revocation
from .stores.urls import store_from_url
from .tokens import TokenVerifier

__all__ = ["Guard"]

logger = logging.getLogger("zt_middleware.guard")

# RFC 6750 section 2.1: b64token after one "Bearer" and spaces.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9\-._~+/]+=*) *")


Steps = Generator[Any, Any, Decision]
Response = tuple[int, list[tuple[str, str]], bytes]


class Guard:
    """Decides one request. Built from settings; holds no global state."""

    def __init__(
        self,
        settings: Settings | Mapping[str, Any] | str | None,
        *,
        key_source: KeySource | None = None,
        store: Store | None = None,
        risk: RiskEngine | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = load_settings(settings)
        self.key_source = key_source or key_source_from_settings(self.settings)
        self.verifier = TokenVerifier(self.settings, self.key_source, clock=clock)
        self.routes = RouteTable(
            self.settings.routes, case_insensitive=self.settings.case_insensitive_paths
        )
        self.store = store or store_from_url(self.settings.store)
        self.risk = risk or RiskEngine(self.settings, clock=clock)
        self.audit = audit or AuditLog()
        self.clock = clock
        self._step_up_flow: StepUpFlow | None = None
        if self.settings.step_up_key_file is not None:
            # Another worker's step-up tokens may arrive before this one
            # mints any: the verifier must know the shared key from the start.
            self._step_up_flow = StepUpFlow(self)

    def __repr__(self) -> str:
        return f"Guard({self.settings!r})"

    # -- drivers ---------------------------------------------------------------

    def decide(self, ctx: RequestContext) -> Decision:
        """Decide synchronously (WSGI, sync Django)."""
        try:
            decision = drive(self._steps(ctx))
        except Exception as exc:
            decision = self._refusal(exc)

        return self._recorded(ctx, decision)

    async def adecide(self, ctx: RequestContext) -> Decision:
        """Decide from an event loop; blocking work goes to a thread."""
        try:
            decision = await adrive(self._steps(ctx))
        except Exception as exc:
            decision = self._refusal(exc)

        return self._recorded(ctx, decision)

    def render(self, decision: Decision, ctx: RequestContext) -> Response:
        """The response for a request the app will not see.

        A browser (it asks for HTML) that is challenged gets the step-up
        page instead of a bare 401; everything else gets the RFC 6750 /
        RFC 9470 JSON refusal.
        """
        status, headers, body = decision.render(self.settings.realm, ctx.request_id)
        if decision.outcome is Outcome.CHALLENGE and wants_html(ctx.headers):
            flow = self.step_up_flow
            # The way back is the path alone: a query string is not carried.
            body = flow.page(next_path=ctx.path, reasons=decision.reasons)
            headers = flow.page_headers(body, headers)

        return status, headers, body

    # -- step-up -----------------------------------------------------------------

    def is_step_up(self, ctx: RequestContext) -> bool:
        """Whether this request is for the step-up endpoint the guard serves."""
        return ctx.path == self.settings.step_up_path

    def step_up(self, ctx: RequestContext, body: bytes) -> Response:
        """Serve the step-up endpoint (sync stacks)."""
        try:
            return drive(self.step_up_flow.handle(ctx, body))
        except Exception as exc:
            return self.render(self._recorded(ctx, self._refusal(exc)), ctx)

    async def astep_up(self, ctx: RequestContext, body: bytes) -> Response:
        """Serve the step-up endpoint from an event loop."""
        try:
            return await adrive(self.step_up_flow.handle(ctx, body))
        except Exception as exc:
            return self.render(self._recorded(ctx, self._refusal(exc)), ctx)

    @property
    def step_up_flow(self) -> StepUpFlow:
        if self._step_up_flow is None:
            self._step_up_flow = StepUpFlow(self)
        return self._step_up_flow

    def _recorded(self, ctx: RequestContext, decision: Decision) -> Decision:
        """Audit the decision; a decision that cannot be audited is refused."""
        try:
            self.audit.record(ctx, decision)
        except Exception as exc:
            logger.error("audit failed with %s; refusing", type(exc).__name__)
            return Decision(
                Outcome.DENY,
                503,
                (reasons.AUDIT_UNAVAILABLE,),
                error="temporarily_unavailable",
                retry_after=5,
            )

        return decision

    # -- the checks --------------------------------------------------------------

    def _steps(self, ctx: RequestContext) -> Steps:
        if _CONTROL.search(ctx.path):
            # Routers disagree on these ("$" matches before a final newline):
            # no spelling with a control character is judged at all.
            raise InvalidRequest(
                "the path holds a control character", reason=reasons.MALFORMED_PATH
            )

        requirement = self.requirement_for(ctx)
        if requirement is not None and requirement.public:
            return Decision.allow(None, reasons.PUBLIC_ROUTE)
        if self._is_preflight(ctx):
            # Answered here, never passed on: a view that accepts OPTIONS
            # must not run unauthenticated. A CORS layer outside the guard
            # answers preflights before they get here.
            return Decision(Outcome.ALLOW, 204, (reasons.CORS_PREFLIGHT,), answer=True)

        token = self._credential(ctx)
        if token is None:
            why: tuple[str, ...] = (reasons.MISSING_TOKEN,)
            if requirement is None:
                why += (reasons.ROUTE_UNANNOTATED,)
            return Decision(Outcome.DENY, 401, why)

        principal = presented = yield from self.verifier.verify(token)

        companion = self._step_up_credential(ctx)
        if companion is not None and companion != token:
            stronger = yield from self.verifier.verify(companion)
            mismatch = self._step_up_mismatch(principal, stronger)
            if mismatch is not None:
                return Decision(
                    Outcome.DENY,
                    401,
                    (mismatch,),
                    error="invalid_token",
                    principal=principal,
                )
            principal = stronger

        if requirement is None:
            return Decision(
                Outcome.DENY,
                403,
                (reasons.ROUTE_UNANNOTATED,),
                error="insufficient_scope",
                description="No policy opens this route to any token.",
                principal=principal,
            )

        refusal = self._authorise(principal, requirement)
        if refusal is not None:
            return refusal

        return (yield from self._session(ctx, principal, presented, requirement))

    def _session(
        self,
        ctx: RequestContext,
        principal: Principal,
        presented: Principal,
        requirement: Requirement,
    ) -> Steps:
        """Revocations, then record the request and claim one-time tokens.

        ``principal`` is who the request acts as (the step-up token when one
        rides along); ``presented`` the session token it was sent with. Both
        must be unrevoked, and the session token's one-time mark holds
        whatever rides beside it.
        """
        parent = presented.token_id if presented is not principal else None
        if parent is None:
            parent = _optional_text(principal.claims.get("zt_parent"))
        keys = StateKeys(
            principal.subject, principal.session_id, principal.token_id, parent
        )
        state: StateRead = yield ReadState(self.store, keys)

        revoked = self._revocation(principal, state)
        if revoked is not None:
            return Decision(
                Outcome.DENY,
                401,
                (revoked,),
                error="invalid_token",
                principal=principal,
            )

        device = device_fingerprint(ctx.headers, self.settings.device_headers)
        network = network_of(ctx.client)
        if self._is_step_up(principal) and principal.claims.get("zt_dev") != device:
            # A step-up token proves a factor on one device; elsewhere it
            # proves nothing.
            return Decision(
                Outcome.DENY,
                401,
                (reasons.STEP_UP_DEVICE_MISMATCH,),
                error="invalid_token",
                principal=principal,
            )

        now = self.clock()
        change = compare(state, device, network)
        risk = self.risk.assess(ctx.headers, ctx.client, state, change, now)
        verdict = self._judge(principal, requirement, risk, now)
        if verdict is not None:
            return verdict

        once_token = next(
            (
                candidate
                for candidate in (presented, principal)
                if self._is_one_time(candidate, requirement)
            ),
            None,
        )
        if once_token is not None and once_token.token_id is None:
            return Decision(
                Outcome.DENY,
                401,
                (reasons.CLAIM_MISSING,),
                error="invalid_token",
                principal=principal,
            )

        place = risk.place
        update = StateWrite(
            subject=principal.subject,
            session_id=principal.session_id,
            device=device,
            network=network,
            seen_at=now,
            history_ttl=self.settings.history_ttl,
            once_key=once_token.token_id if once_token else None,
            once_ttl=max(1, int(principal.expires_at - now) + self.settings.leeway),
            country=place.country if place else None,
            latitude=place.latitude if place else None,
            longitude=place.longitude if place else None,
        )
        first_use = True
        if update.once_key is not None or _history_changed(state, update):
            first_use = yield WriteState(self.store, update)
        if not first_use:
            return Decision(
                Outcome.DENY,
                401,
                (reasons.TOKEN_REPLAYED,),
                error="invalid_token",
                principal=principal,
            )

        return Decision(
            Outcome.ALLOW,
            200,
            (reasons.ALLOWED, *risk.reasons),
            principal=principal,
            change=change,
            score=risk.score,
            signals=_weighed(risk),
        )

    def _judge(
        self,
        principal: Principal,
        requirement: Requirement,
        risk: Assessment,
        now: float,
    ) -> Decision | None:
        """Deny or challenge on the score; None lets the request through."""
        settings = self.settings
        deny_at = _stricter_threshold(settings.risk_deny_at, requirement.deny_at)
        challenge_at = _stricter_threshold(
            settings.risk_challenge_at, requirement.challenge_at
        )

        if risk.score >= deny_at:
            return Decision(
                Outcome.DENY,
                403,
                (reasons.RISK_TOO_HIGH, *risk.reasons),
                error="access_denied",
                description="The request's context is too risky to allow.",
                principal=principal,
                score=risk.score,
                signals=_weighed(risk),
            )

        if risk.score >= challenge_at and not self._stepped_up(principal, now):
            return Decision(
                Outcome.CHALLENGE,
                401,
                (reasons.STEP_UP_REQUIRED, *risk.reasons),
                error="insufficient_user_authentication",
                description="Unusual context: prove it is you with a second factor.",
                principal=principal,
                acr_values=settings.step_up_acr,
                max_age=settings.step_up_max_age,
                score=risk.score,
                signals=_weighed(risk),
            )

        return None

    def _stepped_up(self, principal: Principal, now: float) -> bool:
        """A recent enough authentication at the step-up level."""
        if not self._acr_meets(principal.acr, self.settings.step_up_acr):
            return False
        auth_time = principal.auth_time
        return (
            auth_time is not None and now - auth_time <= self.settings.step_up_max_age
        )

    def _step_up_credential(self, ctx: RequestContext) -> str | None:
        """The step-up token riding beside the session's, if any."""
        header = ctx.headers.get("zt-step-up")
        cookie = cookie_value(ctx.headers, self.settings.step_up_cookie)
        if header and cookie and header != cookie:
            raise InvalidRequest(
                "send the step-up token once", reason=reasons.MULTIPLE_CREDENTIALS
            )
        return header or cookie

    def _step_up_mismatch(
        self, principal: Principal, stronger: Principal
    ) -> str | None:
        """Why a step-up token cannot stand in for this session's, or None."""
        if (
            not self._is_step_up(stronger)
            or stronger.issuer != self.settings.step_up_token_issuer
        ):
            return reasons.STEP_UP_INVALID
        if (
            stronger.subject != principal.subject
            or stronger.session_id != principal.session_id
        ):
            return reasons.STEP_UP_SESSION_MISMATCH
        return None

    def _revocation(self, principal: Principal, state: StateRead) -> str | None:
        if state.token_revoked:
            return reasons.TOKEN_REVOKED
        if state.session_revoked:
            return reasons.SESSION_REVOKED
        if state.service_revoked:
            return reasons.SERVICE_REVOKED
        before = state.subject_revoked_before
        if before is not None and principal.issued_at < before:
            return reasons.SUBJECT_REVOKED
        return None

    def _is_step_up(self, principal: Principal) -> bool:
        """A step-up token this service minted (its own issuer, its own key)."""
        return (
            principal.issuer == self.settings.step_up_token_issuer
            and principal.claims.get("token_use") == "step_up"
        )

    def _is_one_time(self, principal: Principal, requirement: Requirement) -> bool:
        if requirement.one_time:
            return True
        if self.settings.step_up_one_time and self._is_step_up(principal):
            # A spent step-up cookie is refused, not ignored: a browser keeps
            # getting token_replayed until the cookie's Max-Age runs out.
            return True
        for claim, values in self.settings.one_time_claims.items():
            if principal.claims.get(claim) in values:
                return True
        return False

    # -- revocation --------------------------------------------------------------

    def revoke(
        self, kind: str, value: str, *, expires_at: float | None = None
    ) -> Revocation:
        """Revoke a ``jti``, ``sid``, ``sub`` or ``svc`` in the shared store.

        A token's entry lives until its ``exp`` when given, else for the
        lifetime cap; a subject's until every token issued before now has
        expired; a session's and a service's for ``revocation_ttl``.
        """
        now = self.clock()
        ttl = revocation_ttl(kind, self.settings, now=now, expires_at=expires_at)
        with store_errors():
            revocation = self.store.revoke(kind, value, now=now, ttl=ttl)
        logger.warning("revoked %s %s until %d", kind, value, revocation.expires_at)

        return revocation

    def requirement_for(self, ctx: RequestContext) -> Requirement | None:
        """The view's annotation merged with the route table (stricter wins)."""
        method = ctx.method
        path = normalise_path(ctx.path, case_insensitive=self.routes.case_insensitive)
        from_table = self.routes.match(method, path)

        # Frameworks route the path as sent, without resolving "..": a
        # spelling like /admin/x/../../static/y runs the admin view while its
        # normal form looks public. Judge both spellings; public only if both
        # agree.
        sent = ctx.path.lower() if self.routes.case_insensitive else ctx.path
        if sent != path:
            from_table = _stricter(from_table, self.routes.match(method, sent))

        if ctx.requirement is None:
            return from_table
        if from_table is None:
            return ctx.requirement
        return ctx.requirement.merge(from_table)

    def _is_preflight(self, ctx: RequestContext) -> bool:
        return (
            self.settings.allow_cors_preflight
            and ctx.method == "OPTIONS"
            and "origin" in ctx.headers
            and "access-control-request-method" in ctx.headers
        )

    def _credential(self, ctx: RequestContext) -> str | None:
        """The one bearer token in the Authorization header, or None."""
        header = ctx.headers.get("authorization")
        cookie = cookie_value(ctx.headers, self.settings.cookie_name)
        if cookie is not None:
            if header is not None or ctx.query_has_token:
                raise InvalidRequest(
                    "the request carries more than one credential",
                    reason=reasons.MULTIPLE_CREDENTIALS,
                )
            if len(cookie) > self.settings.max_token_size:
                raise InvalidToken(
                    "the token is too large", reason=reasons.TOKEN_TOO_LARGE
                )
            return cookie
        if header is None:
            if ctx.query_has_token:
                raise InvalidRequest(
                    "send the token in the Authorization header, not the URL",
                    reason=reasons.MALFORMED_AUTHORIZATION,
                )
            return None

        if len(header) > self.settings.max_token_size + 16:
            raise InvalidToken("the token is too large", reason=reasons.TOKEN_TOO_LARGE)
        if not header[:7].lower().startswith("bearer"):
            return None
        match = _BEARER.fullmatch(header)
        if match is None:
            reason = (
                reasons.MULTIPLE_CREDENTIALS
                if header.lower().count("bearer") > 1
                else reasons.MALFORMED_AUTHORIZATION
            )
            raise InvalidRequest("malformed Authorization header", reason=reason)
        if ctx.query_has_token:
            raise InvalidRequest(
                "the request carries more than one credential",
                reason=reasons.MULTIPLE_CREDENTIALS,
            )

        return match.group(1)

    def _authorise(
        self, principal: Principal, requirement: Requirement
    ) -> Decision | None:
        """The refusal for a principal the route's needs do not fit, or None."""
        missing = requirement.scopes - principal.scopes
        if missing:
            return Decision(
                Outcome.DENY,
                403,
                (reasons.SCOPE_MISSING,),
                error="insufficient_scope",
                principal=principal,
                scope=requirement.scopes,
            )

        unmet = [
            acr for acr in requirement.acrs if not self._acr_meets(principal.acr, acr)
        ]
        if unmet:
            wanted = " ".join(sorted(unmet, key=self._acr_rank, reverse=True))
            return Decision(
                Outcome.CHALLENGE,
                401,
                (reasons.ACR_TOO_LOW,),
                error="insufficient_user_authentication",
                description=f"Authenticate again at level {wanted}.",
                principal=principal,
                acr_values=wanted,
            )

        if requirement.max_age is not None:
            auth_time = principal.auth_time
            if auth_time is None or self.clock() - auth_time > requirement.max_age:
                return Decision(
                    Outcome.CHALLENGE,
                    401,
                    (reasons.AUTHENTICATION_TOO_OLD,),
                    error="insufficient_user_authentication",
                    description="Authentication is too old; authenticate again.",
                    principal=principal,
                    max_age=requirement.max_age,
                )

        return None

    def _acr_rank(self, acr: str | None) -> int:
        levels = self.settings.acr_levels
        return levels.index(acr) if acr in levels else -1

    def _acr_meets(self, presented: str | None, required: str) -> bool:
        """Equal, or ranked at least as high in ``acr_levels``."""
        if presented == required:
            return True
        rank = self._acr_rank(required)
        return rank >= 0 and self._acr_rank(presented) >= rank

    # -- failures ----------------------------------------------------------------

    def _refusal(self, exc: Exception) -> Decision:
        if isinstance(exc, CredentialError):
            return Decision(Outcome.DENY, exc.status, (exc.reason,), error=exc.error)

        if isinstance(exc, UnavailableError):
            logger.error("cannot decide: %s: %s", exc.reason, exc.description)
            return Decision(
                Outcome.DENY,
                503,
                (exc.reason,),
                error="temporarily_unavailable",
                retry_after=exc.retry_after,
            )

        # A bug or an unexpected input: refuse, and say only the type.
        logger.error("decision failed with %s; refusing", type(exc).__name__)
        return Decision(
            Outcome.DENY, 403, (reasons.DECISION_ERROR,), error="access_denied"
        )


def _stricter(
    first: Requirement | None, second: Requirement | None
) -> Requirement | None:
    """Merge two table answers; "no rule" beats public, protection beats both."""
    if first is None or second is None:
        found = first or second
        return None if found is None or found.public else found
    return first.merge(second)


def _weighed(risk: Assessment) -> tuple[tuple[str, int], ...]:
    return tuple((signal.name, signal.weight) for signal in risk.signals)


def _stricter_threshold(default: int, route: int | None) -> int:
    """A route may lower a threshold (0 included), never raise it."""
    return default if route is None else min(default, route)


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# A repeat of the session's last request within this many seconds, from the
# same device, network and place, is not written again: the read already
# showed it. Impossible travel then measures from a sighting at most this old,
# which can only lower the speed it computes.
_REWRITE_AFTER = 60.0


def _history_changed(state: StateRead, update: StateWrite) -> bool:
    """Whether this request adds anything to the history the store holds."""
    record = update.record()
    for seen in (state.session, state.subject_last):
        if seen is None or update.seen_at - seen.seen_at >= _REWRITE_AFTER:
            return True
        if (seen.device, seen.network, seen.country) != (
            record.device,
            record.network,
            record.country,
        ):
            return True
    return update.session_id is None
