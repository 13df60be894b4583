"""One structured audit event per decision, on ``zt_middleware.audit``.

Allowed requests are logged at INFO, refusals at WARNING and failures to
decide (503) at ERROR. The event is a JSON object in the message and the
same dict in ``record.zt_event`` for structured handlers. It never holds the
credential: only the principal's identifiers and the reason codes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, fields
from typing import Any

from .context import RequestContext
from .decision import Decision, Outcome

__all__ = ["AuditEvent", "AuditLog"]

logger = logging.getLogger("zt_middleware.audit")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    time: float
    request_id: str
    outcome: str
    status: int
    reasons: tuple[str, ...]
    method: str
    path: str
    route: str | None
    client: str | None
    subject: str | None
    session_id: str | None
    token_id: str | None
    score: int
    signals: tuple[tuple[str, int], ...]

    def as_dict(self) -> dict[str, Any]:
        # Shallow: every field is a str, number, None or tuple already.
        return {name: getattr(self, name) for name in _FIELDS}

    def as_json(self) -> str:
        return str(_LazyJSON(self.as_dict()))


_FIELDS = tuple(field.name for field in fields(AuditEvent))


class AuditLog:
    def __init__(self, log: logging.Logger = logger) -> None:
        self.logger = log

    def record(self, ctx: RequestContext, decision: Decision) -> None:
        level = _level(decision)
        if not self.logger.isEnabledFor(level):
            return

        principal = decision.principal
        event = AuditEvent(
            time=time.time(),
            request_id=ctx.request_id,
            outcome=decision.outcome.value,
            status=decision.status,
            reasons=decision.reasons,
            method=ctx.method,
            path=ctx.path,
            route=ctx.route,
            client=ctx.client,
            subject=principal.subject if principal else None,
            session_id=principal.session_id if principal else None,
            token_id=principal.token_id if principal else None,
            score=decision.score,
            signals=decision.signals,
        )
        fields = event.as_dict()
        # The JSON text is made only if a handler formats the record;
        # structured handlers read record.zt_event and never pay for it.
        self.logger.log(
            level, "zt decision %s", _LazyJSON(fields), extra={"zt_event": fields}
        )


class _LazyJSON:
    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        # json.dumps escapes control characters, so attacker-written paths
        # cannot forge log lines.
        return json.dumps(self.fields, separators=(",", ":"), sort_keys=True)


def _level(decision: Decision) -> int:
    if decision.outcome is Outcome.ALLOW:
        return logging.INFO
    if decision.status >= 500:
        return logging.ERROR
    return logging.WARNING
