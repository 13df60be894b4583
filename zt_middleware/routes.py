"""What each route needs, and how a path is spelled before it is matched.

A route's requirement comes from an annotation on its view (``@requires``,
``@public``) or from the central route table in the settings. Both are
consulted and the stricter wins; a route found in neither is refused. Paths
are normalised before the table is matched, so that ``//admin``,
``/%61dmin``, ``/x/../admin`` and ``/admin/`` are all judged as ``/admin``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from .settings import RouteRule

__all__ = [
    "PUBLIC",
    "Requirement",
    "RouteTable",
    "normalise_path",
    "public",
    "requirement_of",
    "requires",
]

ATTRIBUTE = "__zt_requirement__"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Requirement:
    """Scopes a route needs, a minimum ``acr``, a ``max_age``, or public."""

    scopes: frozenset[str] = frozenset()
    public: bool = False
    # Every named acr must be met (a string names one); merging two routes'
    # requirements keeps both, never the first alone.
    acr: str | frozenset[str] | None = None
    max_age: int | None = None
    # Each token may reach this route once (step-up and similar flows).
    one_time: bool = False
    # Risk thresholds stricter than the settings' for sensitive routes.
    challenge_at: int | None = None
    deny_at: int | None = None

    def __post_init__(self) -> None:
        if self.acr is None or isinstance(self.acr, str):
            acrs = frozenset() if self.acr is None else frozenset({self.acr})
            object.__setattr__(self, "acr", acrs)

    @property
    def acrs(self) -> frozenset[str]:
        """The acr values this route needs, all of them."""
        return self.acr if isinstance(self.acr, frozenset) else frozenset()

    def merge(self, other: Requirement) -> Requirement:
        """The stricter of two requirements: public only if both are."""
        if self.public:
            return other
        if other.public:
            return self

        max_ages = [age for age in (self.max_age, other.max_age) if age is not None]
        return Requirement(
            scopes=self.scopes | other.scopes,
            acr=self.acrs | other.acrs,
            max_age=min(max_ages) if max_ages else None,
            one_time=self.one_time or other.one_time,
            challenge_at=_lowest(self.challenge_at, other.challenge_at),
            deny_at=_lowest(self.deny_at, other.deny_at),
        )


PUBLIC = Requirement(public=True)


def _lowest(first: int | None, second: int | None) -> int | None:
    present = [value for value in (first, second) if value is not None]
    return min(present) if present else None


def requires(
    *scopes: str,
    acr: str | None = None,
    max_age: int | None = None,
    one_time: bool = False,
    challenge_at: int | None = None,
    deny_at: int | None = None,
) -> Callable[[F], F]:
    """Mark a view (function or class) as needing every one of ``scopes``."""
    for scope in scopes:
        if not isinstance(scope, str) or not scope or any(c.isspace() for c in scope):
            raise ValueError(f"requires: {scope!r} is not a scope token")
    requirement = Requirement(
        scopes=frozenset(scopes),
        acr=acr,
        max_age=max_age,
        one_time=one_time,
        challenge_at=challenge_at,
        deny_at=deny_at,
    )

    def mark(view: F) -> F:
        setattr(view, ATTRIBUTE, requirement)
        return view

    return mark


def public(view: F) -> F:
    """Mark a view as reachable without a token. Nothing is public by default."""
    setattr(view, ATTRIBUTE, PUBLIC)
    return view


def requirement_of(view: Any, method: str | None = None) -> Requirement | None:
    """The annotation on a view, merged with its class's for class views.

    For a class-based view (Django's ``as_view()`` result, a Starlette
    ``HTTPEndpoint``) the handler for ``method`` may carry its own mark;
    with a mark on the class too, both apply.
    """
    view_class = getattr(view, "view_class", None)
    if view_class is None and isinstance(view, type):
        view_class = view

    found = _mark(view) or _mark(view_class)
    if view_class is not None and method:
        name = "get" if method in ("HEAD", "WEBSOCKET") else method.lower()
        handler = _mark(getattr(view_class, name, None))
        if handler is not None:
            found = handler if found is None else found.merge(handler)

    return found


def _mark(obj: Any) -> Requirement | None:
    found = getattr(obj, ATTRIBUTE, None)
    if found is None:
        found = getattr(getattr(obj, "__func__", None), ATTRIBUTE, None)
    return found if isinstance(found, Requirement) else None


def normalise_path(path: str, *, case_insensitive: bool = False) -> str:
    """One canonical spelling of ``path`` for matching.

    Percent-escapes are decoded until none is left (so double encoding does
    not hide a segment), backslashes count as slashes, empty and ``.``
    segments vanish, ``..`` climbs but never above the root, and a trailing
    slash is dropped.
    """
    for _ in range(4):
        decoded = unquote(path, errors="replace") if "%" in path else path
        if decoded == path:
            break
        path = decoded

    segments: list[str] = []
    for segment in path.replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)

    canonical = "/" + "/".join(segments)
    return canonical.lower() if case_insensitive else canonical


_ALIASES = {"HEAD": ("HEAD", "GET"), "WEBSOCKET": ("WEBSOCKET", "GET")}

_PARAMETER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")


def _compile(pattern: str, case_insensitive: bool) -> re.Pattern[str]:
    """``/orders/{id}`` matches one segment; ``{rest:path}`` the remainder."""
    normalised = normalise_path(pattern, case_insensitive=case_insensitive)
    regex, position = "", 0
    for match in _PARAMETER.finditer(normalised):
        regex += re.escape(normalised[position : match.start()])
        regex += ".+" if match.group(2) else "[^/]+"
        position = match.end()
    regex += re.escape(normalised[position:])

    return re.compile(regex)


class RouteTable:
    """The settings' route table, matched on normalised paths.

    Every rule whose pattern and method match contributes; their merge is
    the requirement (so a public rule never loosens a protected one).
    Patterns match whole paths: ``/healthz`` does not cover ``/healthzevil``.
    """

    def __init__(
        self, rules: Iterable[RouteRule], *, case_insensitive: bool = False
    ) -> None:
        self.case_insensitive = case_insensitive
        self._rules = [
            (
                _compile(rule.path, case_insensitive),
                rule.methods,
                Requirement(
                    scopes=rule.scopes,
                    public=rule.public,
                    acr=rule.acr,
                    max_age=rule.max_age,
                    challenge_at=rule.challenge_at,
                    deny_at=rule.deny_at,
                ),
            )
            for rule in rules
        ]

    def __len__(self) -> int:
        return len(self._rules)

    def match(self, method: str, path: str) -> Requirement | None:
        """The requirement for an already normalised path, or None."""
        # HEAD is judged as GET, a WebSocket handshake as a GET too; a rule
        # may also name HEAD or WEBSOCKET on its own.
        accepted = _ALIASES.get(method, (method,))
        found: Requirement | None = None
        for pattern, methods, requirement in self._rules:
            if "*" not in methods and methods.isdisjoint(accepted):
                continue
            if pattern.fullmatch(path):
                found = requirement if found is None else found.merge(requirement)
        return found
