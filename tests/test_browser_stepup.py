"""A real browser through the step-up page: headless Chromium, a real server.

Debian's ``chromium`` and ``chromium-driver`` are driven with Selenium
against uvicorn on 127.0.0.1 (a free port, stopped when the test ends); no
browser is downloaded and nothing else is contacted. Without Chromium the
test is skipped on a developer's machine and fails in CI (``CI=true``),
where ``.ci/run`` installs it.

The step-up cookie is ``Secure``; Chromium treats ``http://127.0.0.1`` as a
secure context and keeps Secure cookies set over it, which the test checks.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from zt_middleware import public, requires
from zt_middleware.adapters.asgi import ZeroTrustMiddleware
from zt_middleware.guard import Guard
from zt_middleware.issuer import Issuer, generate_key

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ISSUER = "https://issuer.example.test"
AUDIENCE = "https://account.example.test"
KEY = generate_key("ES256", "browser-k1")


def require_chromium() -> None:
    """Skip (locally) or fail (in CI) when the browser cannot run."""
    missing = [
        path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return

    reason = f"headless Chromium needs {', '.join(missing)}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run must install it", pytrace=False)
    pytest.skip(f"{reason} (apt-get install chromium chromium-driver)")


@public
async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@requires("account:read")
async def account(request: Request) -> HTMLResponse:
    subject = request.state.principal.subject
    return HTMLResponse(
        "<!doctype html><title>Account</title>"
        f'<h1>Account</h1><p id="content">Protected content for {subject}.</p>'
    )


@dataclass
class Server:
    base: str
    secret: str
    session_token: str


@pytest.fixture
def server() -> Iterator[Server]:
    import uvicorn

    # Every request is challenged (risk_challenge_at 0) until it carries a
    # fresh step-up token; the browser's session token rides in a cookie.
    guard = Guard(
        {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks": KEY.jwks(),
            "cookie_name": "zt_session",
            "risk_challenge_at": 0,
        }
    )
    secret = guard.step_up_flow.enrol("alice").secret
    app = Starlette(routes=[Route("/healthz", healthz), Route("/account", account)])
    app.add_middleware(ZeroTrustMiddleware, guard=guard)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", ws="none", http="h11"
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]})
    thread.start()
    for _ in range(200):
        if running.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert running.started, "uvicorn did not start"

    token = Issuer(KEY, ISSUER).issue(
        "alice", AUDIENCE, scopes=["account:read"], session_id="browser-s1"
    )
    try:
        yield Server(f"http://127.0.0.1:{port}", secret, token)
    finally:
        running.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    require_chromium()
    # The driver's path is given, so Selenium Manager never runs; if it
    # did, it must not go online.
    monkeypatch.setenv("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)

    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_window_size(900, 760)
        yield driver
    finally:
        driver.quit()


def _wrong_code(secret: str) -> str:
    totp, now = pyotp.TOTP(secret), time.time()
    valid = {totp.at(now + offset) for offset in (-30, 0, 30, 60)}
    return next(c for c in ("000000", "111111", "222222") if c not in valid)


def test_a_challenged_browser_steps_up_with_totp_and_lands_on_its_page(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 15)

    # Sign in: the session cookie, as an identity provider's callback would
    # leave it.
    browser.get(f"{server.base}/healthz")
    browser.add_cookie(
        {"name": "zt_session", "value": server.session_token, "path": "/"}
    )

    # Challenged: the step-up page instead of the account.
    browser.get(f"{server.base}/account")
    code_field = wait.until(ready.presence_of_element_located((By.NAME, "code")))
    challenge = tmp_path / "1-challenge.png"
    browser.save_screenshot(str(challenge))
    assert browser.title == "Confirm it's you"
    assert code_field.get_attribute("autocomplete") == "one-time-code"
    assert code_field.get_attribute("inputmode") == "numeric"
    hidden_next = browser.find_element(By.NAME, "next")
    assert hidden_next.get_attribute("value") == "/account"
    assert "Protected content" not in browser.page_source

    # A wrong code: the page again, with a message, and no cookie.
    code_field.send_keys(_wrong_code(server.secret))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    alert = wait.until(ready.presence_of_element_located((By.CLASS_NAME, "error")))
    wrong = tmp_path / "2-wrong-code.png"
    browser.save_screenshot(str(wrong))
    assert "That code is not right" in alert.text
    assert browser.get_cookie("zt_step_up") is None

    # The right code: back on /account, which now shows.
    code_field = browser.find_element(By.NAME, "code")
    code_field.send_keys(pyotp.TOTP(server.secret).now())
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    content = wait.until(ready.presence_of_element_located((By.ID, "content")))
    landed = tmp_path / "3-stepped-up.png"
    browser.save_screenshot(str(landed))
    assert browser.current_url == f"{server.base}/account"
    assert content.text == "Protected content for alice."

    # The Secure cookie was kept over http://127.0.0.1, locked down.
    cookie = browser.get_cookie("zt_step_up")
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (
        True,
        True,
        "Strict",
    )
    assert browser.execute_script("return document.cookie").find("zt_step_up") == -1

    for shot in (challenge, wrong, landed):
        assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        print(f"screenshot: {shot}")
