"""The package as a whole: no framework in the core, a tidy public API, and
no secret in any repr."""

from __future__ import annotations

import base64
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import zt_middleware
from zt_middleware.guard import Guard
from zt_middleware.issuer import SigningKey
from zt_middleware.keys import KeySet, key_from_jwk
from zt_middleware.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CORE = [
    "zt_middleware",
    "zt_middleware.errors",
    "zt_middleware.reasons",
    "zt_middleware.settings",
    "zt_middleware.keys",
    "zt_middleware.jws",
    "zt_middleware.tokens",
    "zt_middleware.principal",
    "zt_middleware.routes",
    "zt_middleware.context",
    "zt_middleware.decision",
    "zt_middleware.audit",
    "zt_middleware.guard",
    "zt_middleware.issuer",
    "zt_middleware.effects",
    "zt_middleware.cache",
    "zt_middleware.session",
    "zt_middleware.revocation",
    "zt_middleware.risk",
    "zt_middleware.geo",
    "zt_middleware.reputation",
    "zt_middleware.posture",
    "zt_middleware.stepup",
    "zt_middleware.stepup_web",
    "zt_middleware.totp",
    "zt_middleware.stores",
    "zt_middleware.stores.base",
    "zt_middleware.stores.memory",
    "zt_middleware.stores.sqlite",
    "zt_middleware.stores.redis",
    "zt_middleware.stores.urls",
    "zt_middleware.cli",
    "zt_middleware.demo",
]
FRAMEWORKS = ["starlette", "fastapi", "flask", "django", "werkzeug"]

SECRET = b"hmac-secret-0123456789-abcdefghij"
SECRET_B64 = base64.urlsafe_b64encode(SECRET).rstrip(b"=").decode()
HMAC_JWKS = {"keys": [{"kty": "oct", "kid": "h1", "k": SECRET_B64}]}


def test_core_imports_no_web_framework() -> None:
    """Run in a fresh interpreter: this one has the adapters' tests loaded."""
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        f"frameworks = {FRAMEWORKS!r}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in frameworks)\n"
        "assert not loaded, loaded\n"
    )

    result = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr


def isort_style(name: str) -> tuple[int, str]:
    """Ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_public_names_are_sorted() -> None:
    assert zt_middleware.__all__ == sorted(zt_middleware.__all__, key=isort_style)


@pytest.mark.parametrize("module", CORE)
def test_every_exported_name_exists(module: str) -> None:
    imported = importlib.import_module(module)
    exported = getattr(imported, "__all__", [])

    assert len(set(exported)) == len(exported)
    for name in exported:
        assert hasattr(imported, name), f"{module}.{name}"


def test_settings_repr_hides_an_inline_hmac_secret() -> None:
    settings = Settings.from_mapping(
        {
            "issuer": "https://issuer.example.test",
            "audience": "a",
            "algorithms": ["HS256"],
            "jwks": HMAC_JWKS,
        }
    )

    for text in (repr(settings), str(settings), repr(Guard(settings))):
        assert SECRET_B64 not in text
        assert SECRET.decode() not in text
        assert "[secure]" in text


def test_verification_key_repr_hides_its_material(rsa_key: SigningKey) -> None:
    hmac_key = key_from_jwk(HMAC_JWKS["keys"][0], frozenset({"HS256"}))
    rsa_public = key_from_jwk(rsa_key.public_jwk(), frozenset({"RS256"}))

    assert SECRET.decode() not in repr(hmac_key)
    assert SECRET_B64 not in repr(hmac_key)
    assert rsa_key.public_jwk()["n"][:24] not in repr(rsa_public)
    assert "material=[secure]" in repr(hmac_key)
    assert repr(KeySet([hmac_key])) == "KeySet(['h1'])"


def test_signing_key_repr_hides_the_private_key(rsa_key: SigningKey) -> None:
    text = repr(rsa_key)
    private_numbers = rsa_key.private_key.private_numbers()
    pem_body = rsa_key.private_pem().decode().splitlines()[1]

    assert text == "SigningKey(kid='k1', algorithm='RS256', private_key=[secure])"
    assert str(private_numbers.d)[:24] not in text
    assert pem_body not in text
    assert json.dumps(rsa_key.public_jwk()).find('"d"') == -1
