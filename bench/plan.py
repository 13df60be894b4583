"""Which cases run, grouped by framework, and what each is compared with.

A case is one row of a table: an app (bare or guarded), a route and a kind
of token. Within a group the cases run in turn, repeat after repeat, so that
bare and guarded runs see the same machine noise.
"""

from __future__ import annotations

from dataclasses import dataclass

BARE = "bare, token sent (ignored)"
BARE_PUBLIC = "bare, public route"
ZT_REPEATED = "zt, repeated token"
ZT_FIRST_SEEN = "zt, first-seen tokens"
ZT_PUBLIC = "zt, public route, no token"
ZT_AUDIT = "zt, repeated + audit built"
FJWT_REPEATED = "flask-jwt-extended, repeated"
FJWT_FIRST_SEEN = "flask-jwt-extended, first-seen"


@dataclass(frozen=True)
class Case:
    label: str
    app: str  # an AppSpec name
    variant: str  # "bare" or "zt"
    route: str  # "protected" or "public"
    tokens: str  # "repeated", "first-seen" or "none"
    baseline: str | None = None  # label of the row this one is compared with
    audit: bool = False  # attach a NullHandler at INFO to the audit logger

    @property
    def instance(self) -> tuple[str, str]:
        """One app object (in process) or one server (over HTTP) per value."""
        return self.app, self.variant


@dataclass(frozen=True)
class Group:
    name: str
    cases: tuple[Case, ...]

    def instances(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys(case.instance for case in self.cases))


def _guarded_cases(app: str, *, audit: bool) -> list[Case]:
    cases = [
        Case(BARE, app, "bare", "protected", "repeated"),
        Case(ZT_REPEATED, app, "zt", "protected", "repeated", BARE),
        Case(ZT_FIRST_SEEN, app, "zt", "protected", "first-seen", BARE),
        Case(BARE_PUBLIC, app, "bare", "public", "none"),
        Case(ZT_PUBLIC, app, "zt", "public", "none", BARE_PUBLIC),
    ]
    if audit:
        cases.append(
            Case(ZT_AUDIT, app, "zt", "protected", "repeated", BARE, audit=True)
        )
    return cases


def groups(names: list[str], *, audit: bool) -> list[Group]:
    """Groups for the named frameworks; Flask also gets flask-jwt-extended."""
    found = []
    for name in names:
        cases = _guarded_cases(name, audit=audit and name in ("starlette", "flask"))
        if name == "flask":
            fjwt = "flask-jwt-extended"
            cases += [
                Case(FJWT_REPEATED, fjwt, "bare", "protected", "repeated", BARE),
                Case(FJWT_FIRST_SEEN, fjwt, "bare", "protected", "first-seen", BARE),
            ]
        found.append(Group(name, tuple(cases)))

    return found
