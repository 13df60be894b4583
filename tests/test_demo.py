"""``zt demo``: the three example services, guarded, over real HTTP.

The end-to-end tests run the command as a user would, in a subprocess, and
then check that every server it started is gone: no PID left, no port still
listening.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zt_middleware import demo
from zt_middleware.issuer import generate_key
from zt_middleware.jws import b64url_decode

REPO = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "zt_middleware.cli", "demo"]
RUN_TIMEOUT = 180
SERVICES = ("orders", "inventory", "registry")
KEY_REASONS = (
    "token_expired",
    "lifetime_exceeded",
    "wrong_audience",
    "scope_missing",
    "route_unannotated",
    "session_revoked",
    "step_up_required",
    "step_up_succeeded",
    "totp_replayed",
    "risk_too_high",
)


def demo_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("ZT_DEMO_ROOT", None)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO), env.get("PYTHONPATH")])
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def started_servers(output: str) -> tuple[list[int], list[int]]:
    """The service PIDs and every port (JWKS included) the demo printed."""
    pids = [int(pid) for pid in re.findall(r"\bpid (\d+)", output)]
    ports = [int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", output)]
    return pids, sorted(set(ports))


def is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def assert_all_stopped(pids: list[int], ports: list[int]) -> None:
    # The demo waits for each service before it exits; allow the kernel a
    # moment to release the listening sockets all the same.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(map(is_running, pids)) and not any(map(is_listening, ports)):
            return
        time.sleep(0.1)

    assert [pid for pid in pids if is_running(pid)] == []
    assert [port for port in ports if is_listening(port)] == []


def stop_leftovers(pids: list[int]) -> None:
    """After a failure only: stop services the demo left behind, by PID."""
    for pid in pids:
        if is_running(pid):
            os.kill(pid, signal.SIGKILL)


# -- the table -------------------------------------------------------------


def stop_demo(process: subprocess.Popen[str]) -> None:
    """SIGTERM first, so the demo stops its own services; SIGKILL last."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


@pytest.fixture(scope="module")
def finished() -> Iterator[subprocess.CompletedProcess[str]]:
    """One run of ``zt demo``, shared by the tests that read its output."""
    with subprocess.Popen(  # noqa: S603 - our interpreter, our module
        COMMAND,
        cwd=REPO,
        env=demo_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_demo(process)
            stdout, stderr = process.communicate()
            pytest.fail(f"zt demo ran over {RUN_TIMEOUT} s:\n{stdout}{stderr}")

    yield subprocess.CompletedProcess(COMMAND, process.returncode, stdout, stderr)
    stop_leftovers(started_servers(stdout)[0])


def test_demo_answers_every_step_as_expected(
    finished: subprocess.CompletedProcess[str],
) -> None:
    output = finished.stdout

    assert finished.returncode == 0, output + finished.stderr
    assert re.search(r"^\d+ passed, 0 failed$", output, re.MULTILINE)
    assert "FAIL" not in output
    for service in SERVICES:
        assert re.search(rf"^ok \| {service} ", output, re.MULTILINE), service
    for reason in KEY_REASONS:
        assert f"| {reason}" in output, reason
    # The risk rows show the score and each signal's weight from the audit.
    assert "impossible_travel 70" in output
    assert "tor_exit 90" in output


def test_demo_stops_every_server_it_started(
    finished: subprocess.CompletedProcess[str],
) -> None:
    pids, ports = started_servers(finished.stdout)

    assert len(pids) == 3, finished.stdout + finished.stderr
    assert len(ports) == 4  # the identity provider and three services
    assert_all_stopped(pids, ports)


def test_demo_output_never_shows_a_token(
    finished: subprocess.CompletedProcess[str],
) -> None:
    # A JWT's header, '{"...', always starts "eyJ" in base64url.
    assert "eyJ" not in finished.stdout + finished.stderr


# -- serve mode ------------------------------------------------------------


@pytest.fixture
def serving() -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    process = subprocess.Popen(  # noqa: S603 - our interpreter, our module
        [*COMMAND, "--serve"],
        cwd=REPO,
        env=demo_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield process, lines
    finally:
        stop_demo(process)
        reader.join(10)
        assert process.stdout is not None
        process.stdout.close()


def read_until_curl_lines(lines: queue.Queue[str], wanted: int) -> list[str]:
    """Everything printed until ``wanted`` curl lines and the mint line."""
    seen: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        seen.append(line)
        curls = [s for s in seen if s.startswith("curl ")]
        if len(curls) >= wanted and "token issue" in line:
            return seen

    pytest.fail("no curl lines within the time limit:\n" + "".join(seen))


def test_serve_prints_working_curl_lines_and_stops_on_sigterm(
    serving: tuple[subprocess.Popen[str], queue.Queue[str]],
) -> None:
    process, lines = serving
    output = "".join(read_until_curl_lines(lines, wanted=9))
    pids, ports = started_servers(output)
    try:
        assert "0 failed" in output
        for line in (s for s in output.splitlines() if s.startswith("curl ")):
            # curl -i -H 'Authorization: Bearer ...' URL   # 200 allowed
            _, _, _, authorization, url = shlex.split(line, comments=True)
            expected = int(line.rsplit("# ", 1)[1].split()[0])
            port, path = re.fullmatch(r"http://127\.0\.0\.1:(\d+)(/.*)", url).groups()
            token = authorization.removeprefix("Authorization: Bearer ")
            assert demo.send(int(port), "GET", path, token).status == expected, line

        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        stop_leftovers(pids)

    assert_all_stopped(pids, ports)


# -- pieces ----------------------------------------------------------------


def test_http_client_sends_the_path_byte_for_byte() -> None:
    paths = ["/admin/", "//admin", "/%61dmin", "/x/../admin"]
    request_lines: list[bytes] = []

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]

        def answer() -> None:
            for _ in paths:
                connection, _ = server.accept()
                with connection:
                    received = b""
                    while b"\r\n\r\n" not in received:
                        chunk = connection.recv(4096)
                        if not chunk:
                            break
                        received += chunk
                    request_lines.append(received.split(b"\r\n", 1)[0])
                    connection.sendall(
                        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
                    )

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        for path in paths:
            assert demo.send(port, "GET", path).status == 204
        thread.join(10)

    assert request_lines == [f"GET {path} HTTP/1.1".encode() for path in paths]


def test_tampered_signature_is_still_canonical_base64url() -> None:
    tokens = demo.Tokens(generate_key("RS256"), "http://127.0.0.1:1")
    token = tokens.valid("orders", "orders:read")

    forged = demo.tamper(token)

    assert forged != token
    assert forged.rsplit(".", 1)[0] == token.rsplit(".", 1)[0]
    b64url_decode(forged.rsplit(".", 1)[1])  # raises if not canonical


def test_step_repr_never_shows_its_token() -> None:
    tokens = demo.Tokens(generate_key("RS256"), "http://127.0.0.1:1")
    step = demo.Step(
        "orders",
        "orders:read",
        "GET",
        "/api/orders",
        tokens.valid("orders", "orders:read"),
        200,
        "allowed",
    )

    assert "eyJ" not in repr(step)


def test_missing_checkout_is_reported_with_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZT_DEMO_ROOT", str(tmp_path))

    with pytest.raises(demo.DemoError, match="cannot find the example services"):
        demo.find_repo()
