"""The step-up endpoint's web side: the page, the form, where to go next.

Pure functions over request data; :mod:`zt_middleware.stepup` decides. The
page is plain HTML with inline CSS and no script, served under a CSP that
allows nothing else; everything interpolated into it is escaped. A ``next``
path is kept only if a browser would stay on this site following it.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from string import Template
from urllib.parse import parse_qs, quote, urlsplit

from . import reasons
from .context import RequestContext
from .decision import Decision

__all__ = [
    "CSP",
    "FORM",
    "JSON",
    "MAX_BODY",
    "Submission",
    "content_type",
    "declared_length",
    "message_for",
    "page_headers",
    "parse_submission",
    "render_page",
    "safe_next",
    "same_origin",
]

# Bytes of request body the adapters read at most (they read one more, so
# that a larger body is seen and refused).
MAX_BODY = 4096

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


# -- requests ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class Submission:
    """A parsed POST; ``browser`` when it came from the page's form."""

    code: str | None
    next_path: str
    browser: bool

    def __repr__(self) -> str:
        return f"Submission(code=[secure], next_path={self.next_path!r})"


_UNSAFE_NEXT = re.compile(r"[\x00-\x1f\x7f\\]")
_NEXT_KEEPS = "/?&=%:@!$'()*+,;~-._#[]"


def safe_next(value: str | None, fallback: str = "/") -> str:
    """``value`` when it is a path on this site, else ``fallback``.

    ``//host`` and ``/\\host`` are other sites to a browser, and browsers drop
    tabs and newlines anywhere in a URL (``/<TAB>/host`` is ``//host``), so
    any control character or backslash refuses the value. What is left is
    percent-encoded to ASCII, fit for a Location header.
    """
    if not value or len(value) > 2048 or _UNSAFE_NEXT.search(value):
        return fallback

    quoted = quote(value, safe=_NEXT_KEEPS)
    if not quoted.startswith("/") or quoted.startswith("//"):
        return fallback
    parts = urlsplit(quoted)
    if parts.scheme or parts.netloc:
        return fallback

    return quoted


def same_origin(headers: Mapping[str, str]) -> bool:
    """The request says (Origin, else Referer) it comes from a page of the
    host it is sent to: a form on another site cannot spend a session."""
    host = headers.get("host", "").strip().lower()
    source = (headers.get("origin") or headers.get("referer") or "").strip()
    if not host or not source or source == "null":
        return False
    try:
        parts = urlsplit(source)
    except ValueError:
        return False

    return parts.scheme in ("http", "https") and parts.netloc.lower() == host


def content_type(ctx: RequestContext) -> str:
    return ctx.headers.get("content-type", "").partition(";")[0].strip().lower()


def parse_submission(kind: str, body: bytes) -> Submission | None:
    """The code (and, from a form, where to go next); None when malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None

    if kind == FORM:
        try:
            found = parse_qs(text, keep_blank_values=True, max_num_fields=8)
        except ValueError:
            return None
        if any(len(values) > 1 for values in found.values()):
            return None
        code = found["code"][0] if "code" in found else None
        return Submission(code, safe_next(found.get("next", ["/"])[0]), browser=True)

    try:
        document = json.loads(text)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    code = document.get("code")
    if code is not None and not isinstance(code, str):
        return None

    return Submission(code, "/", browser=False)


# -- the page ------------------------------------------------------------------

_PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Confirm it's you</title>
<style>
body{margin:0;min-height:100vh;display:flex;align-items:center;
justify-content:center;background:#eef1f6;color:#1c2230;
font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif}
main{background:#fff;width:100%;max-width:23rem;padding:2rem 2.25rem;
border-radius:14px;box-shadow:0 4px 18px rgba(20,30,60,.12)}
h1{font-size:1.4rem;margin:0 0 .4rem}
p{margin:0 0 1.1rem;color:#4a5266}
label{display:block;font-weight:600;margin-bottom:.4rem}
input[name=code]{box-sizing:border-box;width:100%;padding:.55rem .75rem;
font:1.7rem/1.2 ui-monospace,Menlo,Consolas,monospace;letter-spacing:.4em;
border:1px solid #b5bdcc;border-radius:9px}
input[name=code]:focus{outline:3px solid #9db6f5;border-color:#2f5fd8}
button{margin-top:1.1rem;width:100%;padding:.75rem;border:0;border-radius:9px;
background:#2f5fd8;color:#fff;font-size:1rem;font-weight:600;cursor:pointer}
.nw{white-space:nowrap}
.error{margin:0 0 1rem;padding:.6rem .8rem;border-radius:9px;
background:#fdeaea;color:#9b1c1c}
</style>
</head>
<body>
<main>
<h1>Confirm it's you</h1>
<p>$lead Enter the <span class="nw">6-digit</span> code from your authenticator app.</p>
$error<form method="post" action="$action">
<label for="code">Authentication code</label>
<input id="code" name="code" type="text" inputmode="numeric"
 autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required autofocus>
<input type="hidden" name="next" value="$next">
<button type="submit">Verify</button>
</form>
</main>
</body>
</html>
""")

_LEADS = {
    reasons.ACR_TOO_LOW: "This page needs a second factor.",
    reasons.AUTHENTICATION_TOO_OLD: "It has been a while since you signed in.",
    reasons.STEP_UP_REQUIRED: (
        "Something about this request is new to us, such as the device or the place."
    ),
}

_MESSAGES = {
    reasons.TOTP_INVALID: "That code is not right. Check the app and try again.",
    reasons.TOTP_REPLAYED: "That code has been used already. Wait for the next.",
    reasons.TOTP_NOT_ENROLLED: "No authenticator app is set up for your account.",
    reasons.STEP_UP_CROSS_ORIGIN: "This form must be sent from this site.",
    reasons.STEP_UP_MALFORMED: "Enter the code to go on.",
    reasons.MISSING_TOKEN: "Your session has ended. Sign in again.",
    reasons.TOTP_SECRET_UNREADABLE: "Codes cannot be checked now. Try again later.",
}


def _lead(codes: Iterable[str]) -> str:
    for code in codes:
        if code in _LEADS:
            return _LEADS[code]
    return "Confirm it's you with a second factor."


def message_for(decision: Decision) -> str:
    """What the page tells a person whose attempt was refused."""
    if reasons.TOTP_LOCKED_OUT in decision.reasons:
        minutes = math.ceil((decision.retry_after or 60) / 60)
        return f"Too many wrong codes. Try again in {minutes} minute(s)."
    return _MESSAGES.get(
        decision.reason, "This session cannot be used here. Sign in again."
    )


def declared_length(ctx: RequestContext) -> int:
    try:
        return int(ctx.headers.get("content-length", "0") or 0)
    except ValueError:
        return MAX_BODY + 1


def render_page(
    *, action: str, next_path: str, reasons: Iterable[str] = (), message: str | None
) -> bytes:
    """The step-up form posting to ``action``; everything in it is escaped."""
    error = ""
    if message:
        error = f'<p class="error" role="alert">{html.escape(message)}</p>\n'
    text = _PAGE.substitute(
        lead=html.escape(_lead(reasons)),
        error=error,
        action=html.escape(action),
        next=html.escape(safe_next(next_path)),
    )
    return text.encode("utf-8")


def page_headers(
    page: bytes, base: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """Headers for the page, over ``base`` (a refusal's headers)."""
    replaced = ("content-type", "content-length", "cache-control")
    headers = [(name, value) for name, value in base if name not in replaced]

    return [
        *headers,
        ("content-type", "text/html; charset=utf-8"),
        ("content-length", str(len(page))),
        ("cache-control", "no-store"),
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
    ]
