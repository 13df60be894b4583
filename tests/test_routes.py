"""Routes: one spelling per path, whole-path patterns, the stricter rule wins."""

from __future__ import annotations

from typing import Any

import pytest

from zt_middleware.routes import (
    PUBLIC,
    Requirement,
    RouteTable,
    normalise_path,
    public,
    requirement_of,
    requires,
)
from zt_middleware.settings import RouteRule

# -- normalise_path -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("/", "/"),
        ("", "/"),
        ("/api/orders", "/api/orders"),
        ("//api///orders", "/api/orders"),
        ("/api/orders/", "/api/orders"),
        ("/./api/./orders/.", "/api/orders"),
        ("/x/../api/orders", "/api/orders"),
        ("/../../../api/orders", "/api/orders"),
        ("/api/orders/..", "/api"),
        ("/%61pi/orders", "/api/orders"),
        ("/%2561pi/orders", "/api/orders"),
        ("/%252561pi/orders", "/api/orders"),
        ("/api%2forders", "/api/orders"),
        ("/api%5corders", "/api/orders"),
        ("/api\\orders", "/api/orders"),
        ("/%2e%2e/api/orders", "/api/orders"),
        ("/x/%2e%2e/api/orders", "/api/orders"),
        ("/caf%C3%A9", "/café"),
        ("/100%", "/100%"),
        ("/%zz", "/%zz"),
        ("/API/Orders", "/API/Orders"),
    ],
)
def test_path_is_reduced_to_one_canonical_spelling(raw: str, canonical: str) -> None:
    assert normalise_path(raw) == canonical


def test_case_insensitive_apps_fold_case() -> None:
    assert normalise_path("/API/%4Frders", case_insensitive=True) == "/api/orders"


def test_normalising_is_idempotent() -> None:
    for raw in ("/a//b/../c/", "/%2561/b", "/x/./y/%2e%2e/z"):
        once = normalise_path(raw)
        assert normalise_path(once) == once


# -- the route table ----------------------------------------------------------


def rule(path: str, **fields: Any) -> RouteRule:
    if "methods" in fields:
        fields["methods"] = frozenset(fields["methods"])
    if "scopes" in fields:
        fields["scopes"] = frozenset(fields["scopes"])
    return RouteRule(path=path, **fields)


@pytest.fixture
def table() -> RouteTable:
    return RouteTable(
        [
            rule("/healthz", public=True),
            rule("/api/orders", methods={"GET"}, scopes={"orders:read"}),
            rule("/api/orders", methods={"POST"}, scopes={"orders:write"}),
            rule("/api/orders/{id}", scopes={"orders:read"}),
            rule("/files/{rest:path}", scopes={"files:read"}),
        ]
    )


def test_patterns_match_whole_paths_only(table: RouteTable) -> None:
    assert table.match("GET", "/healthz") == PUBLIC
    for lookalike in ("/healthzevil", "/healthz.json", "/x/healthz", "/healthz/x"):
        assert table.match("GET", lookalike) is None


def test_rules_are_chosen_by_method(table: RouteTable) -> None:
    assert table.match("GET", "/api/orders").scopes == {"orders:read"}
    assert table.match("POST", "/api/orders").scopes == {"orders:write"}
    assert table.match("DELETE", "/api/orders") is None


def test_rule_without_methods_covers_every_method(table: RouteTable) -> None:
    for method in ("GET", "POST", "DELETE", "PATCH"):
        assert table.match(method, "/healthz") == PUBLIC


def test_parameter_matches_exactly_one_segment(table: RouteTable) -> None:
    assert table.match("GET", "/api/orders/42").scopes == {"orders:read"}
    assert table.match("GET", "/api/orders/42/items") is None


def test_path_parameter_matches_the_rest_of_the_path(table: RouteTable) -> None:
    assert table.match("GET", "/files/a/b/c.txt").scopes == {"files:read"}
    assert table.match("GET", "/files") is None


@pytest.mark.parametrize("pattern", ["/v1.0/items", "/v1.0/items/{id}"])
def test_literal_parts_of_a_pattern_are_not_regular_expressions(pattern: str) -> None:
    table = RouteTable([rule(pattern, scopes={"items"})])
    path = pattern.replace("{id}", "7")

    assert table.match("GET", path) is not None
    assert table.match("GET", path.replace("v1.0", "v1x0")) is None


def test_every_matching_rule_contributes_and_the_stricter_wins() -> None:
    table = RouteTable(
        [
            rule("/api/{any:path}", scopes={"api"}),
            rule("/api/reports", public=True),
            rule("/api/reports", scopes={"reports:read"}, max_age=300),
        ]
    )

    requirement = table.match("GET", "/api/reports")

    assert requirement == Requirement(
        scopes=frozenset({"api", "reports:read"}), max_age=300
    )


def test_case_insensitive_table_matches_any_case() -> None:
    table = RouteTable(
        [rule("/API/Orders", scopes={"orders:read"})], case_insensitive=True
    )

    assert table.match("GET", normalise_path("/api/ORDERS", case_insensitive=True))


def test_table_knows_its_size(table: RouteTable) -> None:
    assert len(table) == 5


# -- requirements -------------------------------------------------------------


def test_public_merged_with_anything_is_the_other() -> None:
    needs = Requirement(scopes=frozenset({"a"}))

    assert PUBLIC.merge(needs) == needs
    assert needs.merge(PUBLIC) == needs
    assert PUBLIC.merge(PUBLIC) == PUBLIC


def test_merge_unites_scopes_keeps_acr_and_the_shortest_max_age() -> None:
    left = Requirement(scopes=frozenset({"a"}), max_age=600)
    right = Requirement(scopes=frozenset({"b"}), acr="phr", max_age=60, one_time=True)

    merged = left.merge(right)

    assert merged == Requirement(
        scopes=frozenset({"a", "b"}), acr="phr", max_age=60, one_time=True
    )


# -- annotations --------------------------------------------------------------


def test_requires_marks_a_view() -> None:
    @requires("orders:read", "orders:write", acr="mfa", max_age=60)
    def view() -> None: ...

    assert requirement_of(view) == Requirement(
        scopes=frozenset({"orders:read", "orders:write"}), acr="mfa", max_age=60
    )


def test_public_marks_a_view() -> None:
    @public
    def view() -> None: ...

    assert requirement_of(view) == PUBLIC


def test_unmarked_view_has_no_requirement() -> None:
    def view() -> None: ...

    assert requirement_of(view) is None
    assert requirement_of(None) is None


@pytest.mark.parametrize("scope", ["", "orders read", "orders\tread", 7])
def test_requires_refuses_what_is_not_a_scope_token(scope: Any) -> None:
    with pytest.raises(ValueError, match="scope token"):
        requires(scope)


def test_class_view_handler_mark_merges_with_the_class_mark() -> None:
    @requires("orders")
    class Orders:
        @requires("orders:write")
        def post(self) -> None: ...

        def get(self) -> None: ...

    def as_view() -> None: ...

    as_view.view_class = Orders  # type: ignore[attr-defined]

    assert requirement_of(as_view, "POST").scopes == {"orders", "orders:write"}
    assert requirement_of(as_view, "GET").scopes == {"orders"}
    assert requirement_of(Orders, "POST").scopes == {"orders", "orders:write"}


def test_head_is_judged_by_the_get_handler() -> None:
    class Reports:
        @requires("reports:read")
        def get(self) -> None: ...

    assert requirement_of(Reports, "HEAD").scopes == {"reports:read"}


def test_bound_method_carries_its_functions_mark() -> None:
    class Api:
        @requires("api")
        def handler(self) -> None: ...

    assert requirement_of(Api().handler).scopes == {"api"}
