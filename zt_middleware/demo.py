"""``zt demo``: three real services, one identity provider, real HTTP.

A fresh RS256 key is made and its public half served as a JWK Set by a small
identity provider on 127.0.0.1. The three example services in
``integrations/`` start as separate processes under real servers, each told
only the issuer, its own audience and the JWKS URL (``ZT_SETTINGS_JSON``), so
each fetches the keys over HTTP as it would in production:

    orders     FastAPI under uvicorn    the pure ASGI middleware
    inventory  Flask under waitress     the Flask extension (WSGI)
    registry   Django under uvicorn     the Django middleware, async path

Requests then go over the wire with :mod:`http.client`, which sends a path
exactly as written (``//admin``, ``/%61dmin`` and ``/x/../admin`` included),
and a table compares each answer with what Zero Trust promises: the right
scope passes; no token, or an expired, over-long, tampered, unsigned or
algorithm-confused one, or one minted for another service, gets 401; a token
without the scope, or any token on a route that declares nothing, gets 403;
other spellings of ``/admin`` are refused like ``/admin``. The command exits
non-zero when any answer differs, and stops every process it started,
whatever happens (an error, Ctrl-C or SIGTERM).

With ``--serve`` everything keeps running after the table, and ready-to-paste
``curl`` lines with fresh tokens are printed, until Ctrl-C or SIGTERM.

No web framework is imported here: this module starts processes and speaks
HTTP, nothing more. The example services ship with the source checkout, not
the wheel; :func:`find_repo` says where it looked when it cannot find them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import reasons
from .issuer import Issuer, SigningKey, generate_key

__all__ = ["Step", "run_demo", "send"]

HOST = "127.0.0.1"
JWKS_PATH = "/.well-known/jwks.json"
READY_TRIES = 150  # times READY_PAUSE: 15 s for a service to answer /healthz
READY_PAUSE = 0.1
SETUP_TIMEOUT = 120.0
STOP_TIMEOUT = 5.0
REQUEST_TIMEOUT = 10.0

# Spellings of /admin that a check on the raw path would not see as /admin.
ADMIN_SPELLINGS = ("/admin", "/admin/", "//admin", "/%61dmin", "/x/../admin")
# Each framework routes these spellings its own way, and the guard judges
# the view the framework would run: the admin view's scope where it routes
# there, default deny where it routes nowhere. Never a 200.
REFUSED_ANY_WAY = (reasons.SCOPE_MISSING, reasons.ROUTE_UNANNOTATED)
REFUSED_LEGEND = (
    "* refused: scope_missing where the framework routes that spelling to the\n"
    "  admin view, route_unannotated (default deny) where it routes it nowhere"
)


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


class _Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; unwinds to the clean-up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# -- the services ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Service:
    """One example service: how to start it and which routes to try."""

    name: str  # also its audience and the prefix of its scopes
    stack: str
    argv: tuple[str, ...]  # after sys.executable; "{port}" is filled in
    read_path: str
    write: tuple[str, str]  # a method and path that need <name>:write
    admin_path: str  # the spelling the framework routes to the admin view
    unannotated_path: str
    setup: tuple[tuple[str, ...], ...] = ()  # commands run once before start

    def scope(self, action: str) -> str:
        return f"{self.name}:{action}"


_UVICORN = ("-m", "uvicorn", "--host", HOST, "--port", "{port}", "--no-access-log")
_WAITRESS = ("-m", "waitress", f"--host={HOST}", "--port={port}")
_MANAGE = "integrations/registry_django/manage.py"

SERVICES = (
    Service(
        name="orders",
        stack="FastAPI under uvicorn (ASGI)",
        argv=(*_UVICORN, "--factory", "integrations.orders_fastapi.asgi:app_from_env"),
        read_path="/api/orders",
        write=("POST", "/api/orders"),
        admin_path="/admin",
        unannotated_path="/api/internal/reindex",
    ),
    Service(
        name="inventory",
        stack="Flask under waitress (WSGI)",
        argv=(*_WAITRESS, "integrations.inventory_flask.wsgi:app"),
        read_path="/api/items",
        write=("POST", "/api/items/KB-104/reserve"),
        admin_path="/admin",
        unannotated_path="/api/internal/export",
    ),
    Service(
        name="registry",
        stack="Django under uvicorn (async ASGI)",
        # Django's ASGI handler speaks no lifespan protocol.
        argv=(
            *_UVICORN,
            "--lifespan",
            "off",
            "integrations.registry_django.asgi:application",
        ),
        read_path="/api/users",
        write=("POST", "/api/users"),
        admin_path="/admin/",
        unannotated_path="/api/internal/purge",
        setup=((_MANAGE, "migrate", "--noinput"), (_MANAGE, "seed")),
    ),
)


@dataclass(frozen=True, slots=True)
class Running:
    service: Service
    port: int
    process: subprocess.Popen[bytes]
    log: Path  # its standard error

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


# -- the identity provider -------------------------------------------------


class _JWKSHandler(BaseHTTPRequestHandler):
    server: IdentityProvider

    def do_GET(self) -> None:
        if self.path != JWKS_PATH:
            self.send_error(404)
            return

        self.server.count_fetch()
        self.send_response(200)
        self.send_header("Content-Type", "application/jwk-set+json")
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # the terminal is for the table


class IdentityProvider(ThreadingHTTPServer):
    """Serves the public JWK Set on a free loopback port, from a thread."""

    daemon_threads = True

    def __init__(self, key: SigningKey) -> None:
        super().__init__((HOST, 0), _JWKSHandler)
        self.body = json.dumps(key.jwks()).encode("utf-8")
        self.url = f"http://{HOST}:{self.server_address[1]}"
        self.fetches = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self.serve_forever, name="zt-demo-jwks", daemon=True
        )

    def count_fetch(self) -> None:
        with self._lock:
            self.fetches += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
            self._thread.join(STOP_TIMEOUT)
        self.server_close()


# -- tokens, good and bad --------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _header(alg: str, kid: str) -> str:
    return _b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())


class Tokens:
    """Mints the demo's tokens with the identity provider's real key."""

    def __init__(self, key: SigningKey, issuer: str) -> None:
        self.key = key
        self.issuer = Issuer(key, issuer)

    def valid(self, audience: str, *scopes: str) -> str:
        """Five minutes, for ``audience``, with ``scopes``."""
        return self.issuer.issue("alice", audience, scopes=scopes)

    def expired(self, audience: str, *scopes: str) -> str:
        """Issued ten minutes ago for five: past ``exp`` and the leeway."""
        ten_minutes_ago = time.time() - 600
        return self.issuer.issue("alice", audience, scopes=scopes, now=ten_minutes_ago)

    def long_lived(self, audience: str, *scopes: str) -> str:
        """Well signed and unexpired, but meant to live an hour."""
        now = int(time.time())
        claims = {
            "iss": self.issuer.issuer,
            "sub": "alice",
            "aud": audience,
            "iat": now,
            "exp": now + 3600,
            "scope": " ".join(scopes),
        }

        return self.issuer.sign(claims)

    def tampered(self, audience: str, *scopes: str) -> str:
        return tamper(self.valid(audience, *scopes))

    def unsigned(self, audience: str, *scopes: str) -> str:
        """A valid token's claims under ``alg: none``, with no signature."""
        _, payload, _ = self.valid(audience, *scopes).split(".")

        return f"{_header('none', self.key.kid)}.{payload}."

    def hmac_with_public_key(self, audience: str, *scopes: str) -> str:
        """HS256 keyed with the public key's PEM: algorithm confusion.

        Anyone can make this, the key being public; a verifier that lets
        the header pick HMAC would accept it. PyJWT refuses to sign it, so
        it is built by hand.
        """
        _, payload, _ = self.valid(audience, *scopes).split(".")
        signing_input = f"{_header('HS256', self.key.kid)}.{payload}"
        mac = hmac.new(self.key.public_pem(), signing_input.encode(), hashlib.sha256)

        return f"{signing_input}.{_b64url(mac.digest())}"


def tamper(token: str) -> str:
    """Change one character in the middle of the signature.

    A middle character carries six whole bits, so the result is still
    canonical base64url: only the signature check can catch it.
    """
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    swapped = "A" if signature[middle] != "A" else "B"

    return f"{head}.{payload}.{signature[:middle]}{swapped}{signature[middle + 1 :]}"


# Well-formed requests with a token every service must refuse with 401: how
# the table names it, how it is made, and the reason the guard must give.
BAD_TOKENS: tuple[tuple[str, Callable[[Tokens, str, str], str], str], ...] = (
    ("expired 5 min ago", Tokens.expired, reasons.TOKEN_EXPIRED),
    ("lives 1 h, cap 15 min", Tokens.long_lived, reasons.LIFETIME_EXCEEDED),
    ("signature tampered", Tokens.tampered, reasons.BAD_SIGNATURE),
    ("alg none, unsigned", Tokens.unsigned, reasons.ALGORITHM_NOT_ALLOWED),
    (
        "HS256 keyed with public PEM",
        Tokens.hmac_with_public_key,
        reasons.ALGORITHM_KEY_MISMATCH,
    ),
)


# -- the steps -------------------------------------------------------------


Reasons = str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Step:
    """One request and the answer Zero Trust promises for it."""

    service: str
    description: str  # of the token; the table shows this, never the token
    method: str
    path: str
    token: str | None = field(repr=False)
    expected_status: int
    expected_reason: Reasons  # any one of a tuple will do

    def accepts(self, status: int, reason: str) -> bool:
        reason = reason.split(" (", 1)[0]  # drop the score, if shown
        allowed = self.expected_reason
        if isinstance(allowed, str):
            allowed = (allowed,)
        return status == self.expected_status and reason in allowed

    @property
    def expected(self) -> str:
        allowed = self.expected_reason
        shown = allowed if isinstance(allowed, str) else "refused*"
        return f"{self.expected_status} {shown}"


def service_steps(service: Service, tokens: Tokens, other: str) -> list[Step]:
    """What every service must answer; ``other`` is another's audience."""
    name, path = service.name, service.read_path
    read_scope, admin_scope = service.scope("read"), service.scope("admin")
    read_only = f"{read_scope} only"
    read = tokens.valid(name, read_scope)
    foreign = tokens.valid(other, read_scope)
    admin = tokens.valid(name, admin_scope)
    every = tokens.valid(name, read_scope, service.scope("write"), admin_scope)

    def get(what: str, path: str, token: str | None, status: int, why: Reasons) -> Step:
        return Step(name, what, "GET", path, token, status, why)

    steps = [
        get("none", "/healthz", None, 200, reasons.PUBLIC_ROUTE),
        get(read_scope, path, read, 200, reasons.ALLOWED),
        get(admin_scope, service.admin_path, admin, 200, reasons.ALLOWED),
        get("none", path, None, 401, reasons.MISSING_TOKEN),
        get(f"minted for {other}", path, foreign, 401, reasons.WRONG_AUDIENCE),
    ]
    for what, mint, why in BAD_TOKENS:
        steps.append(get(what, path, mint(tokens, name, read_scope), 401, why))

    steps.append(
        Step(name, read_only, *service.write, read, 403, reasons.SCOPE_MISSING)
    )
    unannotated = service.unannotated_path
    steps.append(
        get(f"every {name} scope", unannotated, every, 403, reasons.ROUTE_UNANNOTATED)
    )

    for spelling in ADMIN_SPELLINGS:
        routed = spelling == service.admin_path
        refused = reasons.SCOPE_MISSING if routed else REFUSED_ANY_WAY
        steps.append(get(read_only, spelling, read, 403, refused))
        steps.append(get("none", spelling, None, 401, reasons.MISSING_TOKEN))

    return steps


def cross_service_steps(tokens: Tokens) -> list[Step]:
    """One token, two services: its audience binds it to the one it names."""
    token = tokens.valid("orders", "orders:read", "registry:read")
    what = "for orders, +registry:read"

    return [
        Step("orders", what, "GET", "/api/orders", token, 200, reasons.ALLOWED),
        Step("registry", what, "GET", "/api/users", token, 401, reasons.WRONG_AUDIENCE),
    ]


Section = tuple[str, list[Step]]


def all_sections(tokens: Tokens) -> list[Section]:
    names = [service.name for service in SERVICES]
    sections: list[Section] = []
    for index, service in enumerate(SERVICES):
        other = names[(index + 1) % len(names)]
        title = f"{service.name}: {service.stack}"
        sections.append((title, service_steps(service, tokens, other)))

    title = "one token, two services: the audience binds it to orders"
    sections.append((title, cross_service_steps(tokens)))

    return sections


def revocation_section(
    tokens: Tokens, ports: Mapping[str, int], repo: Path, store: str
) -> tuple[str, list[Result]]:
    """One session on all three services, revoked half-way with ``zt revoke``.

    The revocation goes through the real command line into the store the
    services share; the very next request on each service is refused.
    """
    session = "demo-" + secrets.token_hex(4)
    steps = {}
    for service in SERVICES:
        token = tokens.issuer.issue(
            "alice", service.name, scopes=[service.scope("read")], session_id=session
        )
        steps[service.name] = (service.read_path, token)

    def run_all(status: int, why: str, what: str) -> list[Result]:
        return [
            run_step(Step(name, what, "GET", path, token, status, why), ports)
            for name, (path, token) in steps.items()
        ]

    before = run_all(200, reasons.ALLOWED, f"session {session}")
    revoke = subprocess.run(  # noqa: S603 - our interpreter, our module
        [
            sys.executable,
            "-m",
            "zt_middleware.cli",
            "revoke",
            "--sid",
            session,
            "--store",
            store,
        ],
        cwd=repo,
        capture_output=True,
        timeout=SETUP_TIMEOUT,
        check=False,
    )
    if revoke.returncode != 0:
        raise DemoError(f"zt revoke failed: {revoke.stderr.decode(errors='replace')}")
    after = run_all(401, reasons.SESSION_REVOKED, "same, after revoke")

    title = f"zt revoke --sid {session} half-way: the next request everywhere"
    return title, before + after


# -- context: risk and step-up ----------------------------------------------

# Addresses in MaxMind's test databases (tests/vectors/maxmind): Britain,
# Milton WA in the US, and a Tor exit node. The demo's requests all come
# from 127.0.0.1, a trusted proxy here, so X-Forwarded-For says where.
BRITAIN = "2a02:d3c0::1"
USA = "216.160.83.56"
TOR_EXIT = "65.0.0.1"


def context_settings(repo: Path, tmp: Path) -> dict[str, Any]:
    """Risk and step-up settings shared by the three services."""
    from cryptography.fernet import Fernet

    maxmind = repo / "tests" / "vectors" / "maxmind"
    step_up_key = generate_key("ES256", "demo-step-up")
    key_file = tmp / "step-up.pem"
    key_file.touch(mode=0o600)
    key_file.write_bytes(step_up_key.private_pem())

    return {
        "trusted_proxies": ["127.0.0.1/32"],
        "geoip_city_db": str(maxmind / "GeoIP2-City-Test.mmdb"),
        "geoip_anonymous_db": str(maxmind / "GeoIP2-Anonymous-IP-Test.mmdb"),
        "step_up_key_file": str(key_file),
        "step_up_kid": step_up_key.kid,
        "totp_encryption_key": Fernet.generate_key().decode("ascii"),
    }


def audit_of(log: Path, request_id: str) -> dict[str, Any]:
    """The service's audit event for ``request_id`` (refusals reach its log)."""
    for _ in range(20):
        for line in log.read_text(errors="replace").splitlines():
            if f'"request_id":"{request_id}"' in line and "zt decision" in line:
                event: dict[str, Any] = json.loads(line.split("zt decision ", 1)[1])
                return event
        time.sleep(0.05)
    return {}


def step_up_story(
    tokens: Tokens, orders: Running, store: str, context: Mapping[str, Any]
) -> tuple[str, list[Result]]:
    """Britain, then the US ten minutes later (here: seconds), then Tor.

    The same session moves faster than any plane: challenged (RFC 9470). A
    code from the enrolled TOTP secret buys a stronger token, which passes.
    A Tor exit node on the sensitive route is refused outright.
    """
    import pyotp

    from .settings import Settings
    from .stores.urls import store_from_url
    from .totp import enrol

    settings = Settings.from_mapping(
        {"issuer": tokens.issuer.issuer, "audience": "orders",
         "jwks": tokens.key.jwks(), "store": store, **context}
    )  # fmt: skip
    shared = store_from_url(store)
    try:
        secret = enrol(shared, settings, "bob").secret
    finally:
        shared.close()

    session = "story-" + secrets.token_hex(4)
    token = tokens.issuer.issue(
        "bob", "orders", scopes=["orders:read", "orders:write"], session_id=session
    )
    results: list[Result] = []

    def ask(
        what: str,
        where: str,
        method: str,
        path: str,
        bearer: str,
        status: int,
        why: str,
        body: bytes | None = None,
    ) -> Reply:
        request_id = "demo-" + secrets.token_hex(6)
        headers = {
            "X-Forwarded-For": where,
            "X-Request-ID": request_id,
            "User-Agent": "zt-demo/1.0",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        step = Step("orders", what, method, path, bearer, status, why)
        try:
            reply = send(orders.port, method, path, bearer, headers=headers, body=body)
        except (OSError, http.client.HTTPException) as exc:
            results.append(Result(step, None, f"no answer ({type(exc).__name__})"))
            return Reply(0, None, b"")
        reason = reply.reason()
        event = audit_of(orders.log, request_id) if reply.status >= 400 else {}
        if event.get("signals"):
            weighed = ", ".join(f"{name} {weight}" for name, weight in event["signals"])
            reason = f"{reason} (score {event['score']}: {weighed})"
        results.append(Result(step, reply.status, reason))
        return reply

    ask("bob, from Britain", BRITAIN, "GET", "/api/orders", token, 200, reasons.ALLOWED)
    ask(
        "same session, from the US",
        USA,
        "GET",
        "/api/orders",
        token,
        401,
        reasons.STEP_UP_REQUIRED,
    )
    code = pyotp.TOTP(secret).now()
    minted = ask(
        "TOTP code from bob's app",
        USA,
        "POST",
        settings.step_up_path,
        token,
        200,
        "step_up_succeeded",
        body=json.dumps({"code": code}).encode(),
    )
    stronger = None
    if minted.status == 200:
        stronger = json.loads(minted.body).get("access_token")
    ask(
        "the stronger token",
        USA,
        "GET",
        "/api/orders",
        stronger or token,
        200,
        reasons.ALLOWED,
    )
    ask(
        "same code again",
        USA,
        "POST",
        settings.step_up_path,
        token,
        401,
        "totp_replayed",
        body=json.dumps({"code": code}).encode(),
    )
    ask(
        "bob, via a Tor exit",
        TOR_EXIT,
        "POST",
        "/api/orders",
        stronger or token,
        403,
        reasons.RISK_TOO_HIGH,
        body=json.dumps({"sku": "KB-104", "quantity": 1}).encode(),
    )

    title = "context: Britain, then the US in seconds, a TOTP step-up, then Tor"
    return title, results


# -- HTTP ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    location: str | None
    body: bytes

    def reason(self) -> str:
        """The refusal's ``reason``; on success, whether a principal came."""
        if 300 <= self.status < 400:
            return f"redirect to {self.location}"
        try:
            body = json.loads(self.body)
        except ValueError:
            return "(no JSON body)"
        if not isinstance(body, dict):
            return "(no JSON body)"

        if self.status < 300:
            if "access_token" in body:
                return "step_up_succeeded"
            # The example views echo the verified principal's subject.
            verified = "seen_by" in body or "created_by" in body
            return reasons.ALLOWED if verified else reasons.PUBLIC_ROUTE
        return str(body.get("reason", "(no reason)"))


def send(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> Reply:
    """One request to 127.0.0.1; ``path`` goes on the wire byte for byte."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    sent = {"Accept": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"

    try:
        connection.request(method, path, body=body, headers=sent)
        response = connection.getresponse()
        return Reply(response.status, response.getheader("Location"), response.read())
    finally:
        connection.close()


# -- processes -------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]

    return port


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"

    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


def _environment(repo: Path, tmp: Path, settings: Mapping[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(repo), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["ZT_SETTINGS_JSON"] = json.dumps(dict(settings))

    # Read by the registry (Django) only.
    env["DJANGO_SETTINGS_MODULE"] = "integrations.registry_django.settings"
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(32)
    env["REGISTRY_DB"] = str(tmp / "registry.sqlite3")

    return env


def start_service(
    stack: contextlib.ExitStack,
    service: Service,
    repo: Path,
    tmp: Path,
    issuer: str,
    store: str,
    context: Mapping[str, Any],
) -> Running:
    """Run the service's setup commands, then start it on a free port.

    Its output goes to files in ``tmp``; ``stack`` stops it and closes them.
    """
    settings = {
        "issuer": issuer,
        "audience": service.name,
        "jwks_url": issuer + JWKS_PATH,
        "store": store,
        **context,
    }
    env = _environment(repo, tmp, settings)
    log = tmp / f"{service.name}.err.log"
    out = stack.enter_context((tmp / f"{service.name}.out.log").open("ab"))
    err = stack.enter_context(log.open("ab"))

    for command in service.setup:
        done = subprocess.run(  # noqa: S603 - our interpreter, our files
            [sys.executable, *command],
            cwd=repo,
            env=env,
            stdout=out,
            stderr=err,
            timeout=SETUP_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise DemoError(
                f"{service.name}: {' '.join(command[1:])} failed "
                f"(exit {done.returncode}):\n{tail(log)}"
            )

    # A session of its own: Ctrl-C reaches only the demo, which then stops
    # each service itself, by its PID.
    port = free_port()
    argv = [sys.executable, *(arg.format(port=port) for arg in service.argv)]
    process = subprocess.Popen(  # noqa: S603 - our interpreter, our modules
        argv, cwd=repo, env=env, stdout=out, stderr=err, start_new_session=True
    )
    stack.callback(stop_process, process)

    return Running(service, port, process, log)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait, then SIGKILL: this process only."""
    if process.poll() is not None:
        return

    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def wait_until_ready(running: Running) -> None:
    """Poll the public /healthz a bounded number of times."""
    name = running.service.name
    for _ in range(READY_TRIES):
        if running.process.poll() is not None:
            raise DemoError(
                f"{name} exited ({running.process.returncode}) before it was "
                f"ready; its stderr ends with:\n{tail(running.log)}"
            )
        try:
            if send(running.port, "GET", "/healthz", timeout=1.0).status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(READY_PAUSE)

    raise DemoError(
        f"{name} did not answer /healthz within {READY_TRIES * READY_PAUSE:.0f} s; "
        f"its stderr ends with:\n{tail(running.log)}"
    )


# -- the table -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    step: Step
    status: int | None
    reason: str

    @property
    def passed(self) -> bool:
        return self.status is not None and self.step.accepts(self.status, self.reason)


def run_step(step: Step, ports: Mapping[str, int]) -> Result:
    try:
        reply = send(ports[step.service], step.method, step.path, step.token)
    except (OSError, http.client.HTTPException) as exc:
        return Result(step, None, f"no answer ({type(exc).__name__})")

    return Result(step, reply.status, reply.reason())


def _row(result: Result) -> tuple[str, ...]:
    step = result.step
    return (
        "ok" if result.passed else "FAIL",
        step.service,
        f"{step.method} {step.path}",
        step.description,
        step.expected,
        "-" if result.status is None else str(result.status),
        result.reason,
    )


def print_table(sections: Sequence[tuple[str, list[Result]]]) -> None:
    header = ("", "service", "request", "token", "expected", "got", "reasons")
    groups = [
        (title, [_row(result) for result in results]) for title, results in sections
    ]
    rows = [header, *(row for _, group in groups for row in group)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    rule_width = sum(widths) + 3 * (len(widths) - 1)

    def line(row: Sequence[str]) -> str:
        cells = zip(row, widths, strict=True)
        return " | ".join(cell.ljust(width) for cell, width in cells).rstrip()

    print(line(header))
    for title, group in groups:
        print(f"-- {title} ".ljust(rule_width, "-"))
        for row in group:
            print(line(row))

    if any(isinstance(r.step.expected_reason, tuple) for _, g in sections for r in g):
        print(REFUSED_LEGEND)


# -- serve mode ------------------------------------------------------------


def print_curl_lines(
    running: Sequence[Running], tokens: Tokens, key_file: Path
) -> None:
    """A 200, a 403 and a 401 per service, with fresh five-minute tokens."""
    names = [r.service.name for r in running]
    print("\nServing until Ctrl-C or SIGTERM. The tokens below expire in 5 minutes.")

    for index, service_run in enumerate(running):
        service = service_run.service
        other = names[(index + 1) % len(names)]
        read = tokens.valid(service.name, service.scope("read"))
        foreign = tokens.valid(other, service.scope("read"))
        lines = [
            (read, service.read_path, f"200 {reasons.ALLOWED}"),
            (read, service.admin_path, f"403 {reasons.SCOPE_MISSING}"),
            (foreign, service.read_path, f"401 {reasons.WRONG_AUDIENCE}, for {other}"),
        ]
        print(f"\n# {service.name}: {service.stack}")
        for token, path, outcome in lines:
            header = shlex.quote(f"Authorization: Bearer {token}")
            print(f"curl -i -H {header} {service_run.url}{path}   # {outcome}")

    zt = ["zt"] if shutil.which("zt") else [sys.executable, "-m", "zt_middleware.cli"]
    issue = [*zt, "token", "issue", "--key", str(key_file), "--kid", tokens.key.kid]
    issue += ["--iss", tokens.issuer.issuer, "--aud", "orders", "--sub", "alice"]
    print("\n# more tokens, while the demo runs (its key goes when it stops):")
    print(shlex.join([*issue, "--scope", "orders:read"]), flush=True)


def serve_until_stopped(running: Sequence[Running]) -> None:
    """Sleep until a signal; a service that dies on its own ends the wait."""
    try:
        while True:
            for service_run in running:
                if service_run.process.poll() is not None:
                    raise DemoError(
                        f"{service_run.service.name} exited on its own "
                        f"({service_run.process.returncode}):\n{tail(service_run.log)}"
                    )
            time.sleep(0.5)
    except _Interrupted as stop:
        print(f"\n{signal.Signals(stop.signum).name} received; stopping.", flush=True)


# -- the whole run ---------------------------------------------------------


def find_repo(root: Path | None = None) -> Path:
    """The checkout holding ``integrations/``.

    ``ZT_DEMO_ROOT`` when set; otherwise beside this package (a source
    checkout or an editable install), then ``root``, then the working
    directory.
    """
    explicit = os.environ.get("ZT_DEMO_ROOT")
    if explicit:
        candidates = [Path(explicit)]
    else:
        beside_package = Path(__file__).resolve().parents[1]
        candidates = [beside_package, *([root] if root else []), Path.cwd()]

    for candidate in candidates:
        examples = candidate / "integrations"
        if (examples / "orders_fastapi").is_dir() and (
            examples / "registry_django" / "manage.py"
        ).is_file():
            return candidate.resolve()

    looked = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise DemoError(
        f"cannot find the example services (an integrations/ folder) in {looked}. "
        "They ship with the source checkout, not the wheel: run zt demo from a "
        "clone of the repository, or set ZT_DEMO_ROOT to one."
    )


def check_requirements() -> None:
    needed = ("uvicorn", "waitress", "fastapi", "flask", "django")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise DemoError(
            f"the demo needs {', '.join(missing)} in this Python "
            f"({sys.executable}): pip install 'zt-middleware[demo]'"
        )


def _interrupt(signum: int, frame: object) -> None:
    raise _Interrupted(signum)


@contextlib.contextmanager
def _interruptible(cleanup: Callable[[], None]) -> Iterator[None]:
    """Inside, SIGINT and SIGTERM raise _Interrupted.

    On the way out both are ignored while ``cleanup`` runs, so a second
    Ctrl-C cannot cut it short (every wait in it is bounded); then the
    previous handlers come back.
    """
    in_main = threading.current_thread() is threading.main_thread()
    watched = (signal.SIGINT, signal.SIGTERM) if in_main else ()
    previous = {signum: signal.signal(signum, _interrupt) for signum in watched}
    try:
        yield
    finally:
        for signum in watched:
            signal.signal(signum, signal.SIG_IGN)
        try:
            cleanup()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _run(stack: contextlib.ExitStack, repo: Path, serve: bool) -> int:
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="zt-demo-")))
    key = generate_key("RS256")
    provider = IdentityProvider(key)
    stack.callback(provider.stop)
    provider.start()

    # One SQLite file holds revocations and history for all three services,
    # as it would for the workers of one host.
    store = f"sqlite:///{tmp / 'zt-state.sqlite3'}"
    context = context_settings(repo, tmp)
    started = time.monotonic()
    running = [
        start_service(stack, s, repo, tmp, provider.url, store, context)
        for s in SERVICES
    ]
    for service_run in running:
        wait_until_ready(service_run)

    print(f"identity provider  {provider.url}{JWKS_PATH}  (RS256, kid {key.kid})")
    for r in running:
        print(
            f"{r.service.name:<10} {r.service.stack:<34} {r.url}  pid {r.process.pid}"
        )
    print(f"all ready in {time.monotonic() - started:.1f} s\n", flush=True)

    tokens = Tokens(key, provider.url)
    ports = {r.service.name: r.port for r in running}
    sections = [
        (title, [run_step(step, ports) for step in steps])
        for title, steps in all_sections(tokens)
    ]
    sections.append(revocation_section(tokens, ports, repo, store))
    orders = next(r for r in running if r.service.name == "orders")
    sections.append(step_up_story(tokens, orders, store, context))
    print_table(sections)

    results = [result for _, group in sections for result in group]
    failed = sum(not result.passed for result in results)
    print(f"\n{len(results) - failed} passed, {failed} failed")
    print(
        f"(the services fetched the JWKS over HTTP {provider.fetches} times)",
        flush=True,
    )

    if serve:
        key_file = tmp / "signing-key.pem"
        key_file.touch(mode=0o600)
        key_file.write_bytes(key.private_pem())
        print_curl_lines(running, tokens, key_file)
        serve_until_stopped(running)

    return 1 if failed else 0


def run_demo(*, serve: bool = False, root: Path | None = None) -> int:
    """Run the demo; 0 when every step answered as expected."""
    try:
        repo = find_repo(root)
        check_requirements()
    except DemoError as exc:
        print(f"zt demo: {exc}", file=sys.stderr)
        return 2

    stack = contextlib.ExitStack()
    try:
        with _interruptible(stack.close):
            status = _run(stack, repo, serve)
    except DemoError as exc:
        print(f"zt demo: {exc}", file=sys.stderr)
        return 1
    except _Interrupted as stop:
        name = signal.Signals(stop.signum).name
        print(f"\nzt demo: {name} received; every service is stopped.", file=sys.stderr)
        return 128 + stop.signum

    if serve:
        print("Every service and the identity provider are stopped.", flush=True)

    return status
