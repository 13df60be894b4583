"""The ``zt`` command: keys, development tokens, inspection and the demo.

zt keys generate [--alg RS256] [--kid K] [--out DIR]
zt token issue --key PEM --kid K --iss URL --aud AUD --sub SUB [--scope S ...] [--ttl N]
zt token inspect TOKEN|- [--settings FILE.toml]
zt revoke (--jti J | --sid S | --sub U | --svc N | --list) --store URL
zt demo [--serve]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jwt.exceptions import PyJWTError

from .errors import ConfigurationError, ZeroTrustError
from .issuer import MAX_LIFETIME, Issuer, SigningKey, generate_key
from .jws import b64url_decode, parse_json_object

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2

    try:
        result: int = args.run(args)
    except ZeroTrustError as exc:
        print(f"zt: {exc.description}", file=sys.stderr)
        return 2

    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zt", description="Zero Trust middleware tools."
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    keys = commands.add_parser("keys", help="key pairs").add_subparsers(
        metavar="ACTION"
    )
    generate = keys.add_parser(
        "generate", help="write a key pair as PEM and as a JWK Set"
    )
    generate.add_argument(
        "--alg", default="RS256", choices=["RS256", "PS256", "ES256", "EdDSA"]
    )
    generate.add_argument("--kid", default=None)
    generate.add_argument("--out", default=".", help="directory for the files")
    generate.set_defaults(run=_keys_generate)

    token = commands.add_parser("token", help="development tokens").add_subparsers(
        metavar="ACTION"
    )
    issue = token.add_parser("issue", help="sign a development token")
    issue.add_argument("--key", required=True, help="private key PEM file")
    issue.add_argument("--kid", required=True)
    issue.add_argument(
        "--alg", default=None, choices=["RS256", "PS256", "ES256", "EdDSA"]
    )
    issue.add_argument("--iss", required=True)
    issue.add_argument("--aud", required=True, action="append", help="repeatable")
    issue.add_argument("--sub", required=True)
    issue.add_argument("--scope", action="append", default=[])
    issue.add_argument(
        "--ttl", type=int, default=300, help=f"seconds, at most {MAX_LIFETIME}"
    )
    issue.set_defaults(run=_token_issue)

    inspect = token.add_parser(
        "inspect", help="decode a token and say why it would be refused"
    )
    inspect.add_argument("token", help="the token, or - to read it from standard input")
    inspect.add_argument("--settings", help="TOML file with a [zero_trust] table")
    inspect.set_defaults(run=_token_inspect)

    revoke = commands.add_parser(
        "revoke", help="revoke a token, session, subject or service in the shared store"
    )
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--jti", help="one token, by its jti")
    what.add_argument("--sid", help="every token of one session, by its sid")
    what.add_argument("--sub", help="every token of a subject issued before now")
    what.add_argument("--svc", help="every token of a service identity (its sub)")
    what.add_argument("--list", action="store_true", help="list revocations in force")
    revoke.add_argument("--store", help="store URL, as in the settings' store")
    revoke.add_argument(
        "--settings", help="TOML file with a [zero_trust] table: its store and TTLs"
    )
    revoke.set_defaults(run=_revoke)

    totp = commands.add_parser("totp", help="TOTP second factors").add_subparsers(
        metavar="ACTION"
    )
    enrol = totp.add_parser(
        "enrol", help="give a subject a new TOTP secret; print its otpauth:// URI"
    )
    enrol.add_argument("--sub", required=True, help="the subject, as its tokens' sub")
    enrol.add_argument("--store", help="store URL, as in the settings' store")
    enrol.add_argument(
        "--settings",
        help="TOML file with a [zero_trust] table: store, totp_issuer and "
        "totp_encryption_key",
    )
    enrol.add_argument(
        "--qr",
        help="write the QR code to this new .svg or .png file (it holds the "
        "secret); without it the QR code is printed on the terminal",
    )
    enrol.set_defaults(run=_totp_enrol)

    demo = commands.add_parser(
        "demo", help="run the three example services over real HTTP"
    )
    demo.add_argument(
        "--serve", action="store_true", help="keep them running; print curl lines"
    )
    demo.set_defaults(run=_demo)

    return parser


def _keys_generate(args: argparse.Namespace) -> int:
    key = generate_key(args.alg, args.kid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    private = out / f"{key.kid}.private.pem"
    try:
        private.touch(mode=0o600, exist_ok=False)
    except FileExistsError:
        raise ConfigurationError(
            f"--kid: {private} exists already; choose another kid or --out"
        ) from None
    private.write_bytes(key.private_pem())
    (out / f"{key.kid}.public.pem").write_bytes(key.public_pem())
    (out / f"{key.kid}.jwks.json").write_text(json.dumps(key.jwks(), indent=2) + "\n")

    print(
        f"kid {key.kid} ({key.algorithm}): {private} (keep secret), "
        f"{key.kid}.public.pem, {key.kid}.jwks.json in {out}"
    )
    return 0


def _token_issue(args: argparse.Namespace) -> int:
    try:
        pem = Path(args.key).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"--key: cannot read {args.key!r}") from exc
    try:
        key = SigningKey.from_pem(pem, args.kid, args.alg)
        scopes = [s for value in args.scope for s in value.split()]
        audience = args.aud[0] if len(args.aud) == 1 else args.aud
        token = Issuer(key, args.iss).issue(
            args.sub, audience, scopes=scopes, lifetime=args.ttl
        )
    except (ValueError, TypeError, PyJWTError) as exc:
        # Messages of key loaders may quote key material: only the type.
        raise ConfigurationError(
            f"--key/--alg: cannot sign with this key ({type(exc).__name__}); "
            "give a private key PEM and an algorithm that fits it"
        ) from None

    print(token)
    return 0


def _token_inspect(args: argparse.Namespace) -> int:
    token = sys.stdin.read().strip() if args.token == "-" else args.token  # noqa: S105
    header, claims = _decode_unverified(token)
    print(json.dumps({"header": header, "claims": claims}, indent=2, sort_keys=True))

    if not args.settings:
        print("(no --settings: signature and claims not checked)")
        return 0

    from .guard import Guard
    from .settings import Settings

    guard = Guard(Settings.from_toml(args.settings))
    try:
        principal = guard.verifier.verify_now(token)
    except ZeroTrustError as exc:
        print(f"refused: {exc.reason}: {exc.description}")
        return 1

    print(f"accepted: subject {principal.subject}, scopes {sorted(principal.scopes)}")
    return 0


def _decode_unverified(token: str) -> tuple[Any, Any]:
    """Header and claims for display only; the signature is never printed."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ConfigurationError("token: not a compact JWS (expected three parts)")
    try:
        header = parse_json_object(b64url_decode(parts[0]))
        claims = parse_json_object(b64url_decode(parts[1]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError("token: header or claims do not decode") from exc
    return header, claims


def _revoke(args: argparse.Namespace) -> int:
    """Write one revocation, or list those in force; one line each."""
    import time

    from .revocation import describe, revocation_ttl
    from .settings import Settings
    from .stores.base import REVOCATION_KINDS
    from .stores.urls import store_from_url

    settings = Settings.from_toml(args.settings) if args.settings else None
    url = args.store or (settings.store if settings else None)
    if not url:
        raise ConfigurationError(
            "--store: give the store URL, or --settings naming one"
        )
    if url.startswith("memory:"):
        raise ConfigurationError(
            "--store: memory:// lives in one process; no worker would see this"
        )

    store = store_from_url(url)
    try:
        now = time.time()
        if args.list:
            found = store.revocations(now=now)
        else:
            kind = next(
                kind for kind in REVOCATION_KINDS if getattr(args, kind) is not None
            )
            value = getattr(args, kind)
            if not value:
                raise ConfigurationError(
                    f"--{kind}: expected a value, got an empty one"
                )
            ttl = revocation_ttl(kind, settings, now=now)
            found = [store.revoke(kind, value, now=now, ttl=ttl)]
    finally:
        store.close()

    for revocation in found:
        print(describe(revocation))
    return 0


def _totp_enrol(args: argparse.Namespace) -> int:
    """Store a new secret; show its URI and QR code to the person enrolling.

    Showing them is the point of enrolment, so they go to standard output;
    nothing is logged. The QR file is created 0600 and must not exist yet.
    """
    from .settings import Settings
    from .stores.urls import store_from_url
    from .totp import enrol

    settings = Settings.from_toml(args.settings) if args.settings else None
    url = args.store or (settings.store if settings else None)
    if not url:
        raise ConfigurationError(
            "--store: give the store URL, or --settings naming one"
        )
    if url.startswith("memory:"):
        raise ConfigurationError(
            "--store: memory:// lives in this process; no service would see the secret"
        )

    qr_file = None
    if args.qr:
        kind = Path(args.qr).suffix.lower().lstrip(".")
        if kind not in ("svg", "png"):
            raise ConfigurationError(
                f"--qr: expected a .svg or .png file, got {args.qr!r}"
            )
        try:
            fd = os.open(args.qr, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ConfigurationError(
                f"--qr: cannot create {args.qr!r} ({type(exc).__name__}); "
                "give a new file"
            ) from None
        qr_file = os.fdopen(fd, "wb")

    try:
        store = store_from_url(url)
        try:
            enrolment = enrol(store, settings, args.sub)
        finally:
            store.close()
    except BaseException:
        if qr_file is not None:
            qr_file.close()
            os.unlink(args.qr)
        raise

    print(enrolment.uri)
    if qr_file is not None:
        with qr_file:
            enrolment.qr().save(qr_file, kind=kind, scale=6)
        print(
            f"QR code written to {args.qr} "
            "(it holds the secret: delete it once scanned)"
        )
    else:
        enrolment.qr().terminal(out=sys.stdout, compact=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(
        serve=args.serve, root=Path(os.environ.get("ZT_DEMO_ROOT", Path.cwd()))
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
