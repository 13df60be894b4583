"""``zt revoke``: write a revocation to the shared store, or list them.

It needs no key source: only the store URL, and optionally the settings file
for its store and TTLs. TTLs follow the same rule as ``Guard.revoke``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, free_port, running_redis

from zt_middleware.cli import main
from zt_middleware.guard import Guard
from zt_middleware.revocation import revocation_ttl
from zt_middleware.stores import StateKeys, StateRead
from zt_middleware.stores.urls import store_from_url


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/zt.db"


def revoke(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, list[list[str]], str]:
    """Run ``zt revoke ARGS``: exit code, output lines split on tabs, errors."""
    code = main(["revoke", *args])
    out, err = capsys.readouterr()
    return code, [line.split("\t") for line in out.splitlines()], err


def read_state(url: str, keys: StateKeys) -> StateRead:
    store = store_from_url(url)
    try:
        return store.read(keys)
    finally:
        store.close()


def utc(text: str) -> float:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00").timestamp()


@pytest.mark.parametrize(
    "kind, ttl",
    [("jti", 900 + 30), ("sid", 24 * 3600), ("sub", 900 + 30), ("svc", 24 * 3600)],
)
def test_revoke_prints_kind_value_and_utc_times_with_default_ttls(
    capsys: pytest.CaptureFixture[str], store_url: str, kind: str, ttl: int
) -> None:
    before = time.time()

    code, [line], _ = revoke(capsys, f"--{kind}", "v-1", "--store", store_url)

    assert code == 0
    assert line[:2] == [kind, "v-1"]
    revoked_at, expires_at = utc(line[2]), utc(line[3])
    assert int(before) <= revoked_at <= time.time()
    assert expires_at - revoked_at == pytest.approx(ttl, abs=1)


def test_revocation_reaches_a_guard_on_the_same_store(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    revoke(capsys, "--sid", "s-9", "--store", store_url)

    state = read_state(store_url, StateKeys("alice", "s-9"))

    assert state.session_revoked


def test_ttls_and_store_come_from_the_settings_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, store_url: str
) -> None:
    settings = tmp_path / "zt.toml"
    settings.write_text(
        "[zero_trust]\n"
        'issuer = "https://issuer.example.test"\n'
        'audience = "orders"\n'
        'jwks_url = "https://issuer.example.test/jwks.json"\n'
        f'store = "{store_url}"\n'
        "max_token_lifetime = 300\n"
        "leeway = 10\n"
        "revocation_ttl = 600\n"
    )

    _, [token], _ = revoke(capsys, "--jti", "t-1", "--settings", str(settings))
    _, [session], _ = revoke(capsys, "--sid", "s-1", "--settings", str(settings))

    assert utc(token[3]) - utc(token[2]) == pytest.approx(310, abs=1)
    assert utc(session[3]) - utc(session[2]) == pytest.approx(600, abs=1)
    assert read_state(store_url, StateKeys("alice", "s-1", "t-1")).token_revoked


def test_list_shows_revocations_in_force_oldest_first(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    revoke(capsys, "--jti", "t-1", "--store", store_url)
    revoke(capsys, "--sub", "alice", "--store", store_url)

    code, lines, _ = revoke(capsys, "--list", "--store", store_url)

    assert code == 0
    assert [line[:2] for line in lines] == [["jti", "t-1"], ["sub", "alice"]]
    assert all(utc(line[2]) < utc(line[3]) for line in lines)


def test_list_of_an_empty_store_prints_nothing(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    assert revoke(capsys, "--list", "--store", store_url)[:2] == (0, [])


def test_revoke_and_list_against_a_real_redis(
    capsys: pytest.CaptureFixture[str], redis_server: RedisServer
) -> None:
    redis_server.flush()
    revoke(capsys, "--svc", "svc:billing", "--store", redis_server.url)

    _, lines, _ = revoke(capsys, "--list", "--store", redis_server.url)
    state = read_state(redis_server.url, StateKeys("svc:billing"))

    assert [line[:2] for line in lines] == [["svc", "svc:billing"]]
    assert state.service_revoked


def test_control_characters_in_a_value_are_escaped_in_the_output(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    _, [line], _ = revoke(capsys, "--sub", "eve\x1b[2J\nroot", "--store", store_url)

    assert line[1] == "eve\\x1b[2J\\x0aroot"


def test_without_store_or_settings_it_says_what_is_missing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, lines, err = revoke(capsys, "--jti", "t-1")

    assert (code, lines) == (2, [])
    assert "--store" in err


def test_memory_store_is_refused_as_no_worker_would_see_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = revoke(capsys, "--jti", "t-1", "--store", "memory://")

    assert code == 2 and "memory://" in err


def test_empty_value_is_refused(
    capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    code, _, err = revoke(capsys, "--jti", "", "--store", store_url)

    assert code == 2 and "--jti" in err


@pytest.mark.parametrize(
    "args", [[], ["--jti", "a", "--sub", "b"], ["--list", "--sid", "s"]]
)
def test_exactly_one_of_jti_sid_sub_svc_or_list_is_required(
    capsys: pytest.CaptureFixture[str], store_url: str, args: list[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["revoke", *args, "--store", store_url])

    assert exited.value.code == 2


def test_unreachable_redis_exits_2_naming_no_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"

    code, lines, err = revoke(capsys, "--jti", "t-1", "--store", url)

    assert (code, lines) == (2, [])
    assert "Redis store" in err and "revoke failed" in err
    assert "hunter2" not in err


def test_malformed_url_exits_2_naming_the_store_and_no_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = revoke(capsys, "--list", "--store", "redis://:hunter2@cache:port/0")

    assert code == 2 and "store:" in err and "hunter2" not in err


def test_guard_and_command_line_share_one_ttl_rule(rsa_key: Any) -> None:
    settings = {
        "issuer": "https://issuer.example.test",
        "audience": "orders",
        "jwks": rsa_key.jwks(),
        "max_token_lifetime": 600,
        "leeway": 5,
        "revocation_ttl": 3600,
    }
    guard = Guard(settings, clock=lambda: 1000.0)

    for kind in ("jti", "sid", "sub", "svc"):
        made = guard.revoke(kind, "v")
        rule = revocation_ttl(kind, guard.settings, now=1000.0)
        assert made.expires_at - made.revoked_at == rule
    assert guard.revoke("jti", "w", expires_at=1100.0).expires_at == 1000.0 + 100 + 5
    assert revocation_ttl("jti", None, now=0) == 900 + 30
