"""Verification keys: which key verifies which algorithm, and where keys come
from (static sets, files, PEM, and a JWKS URL driven without a network)."""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import get_default_algorithms

from zt_middleware.errors import ConfigurationError, KeySourceUnavailable
from zt_middleware.issuer import SigningKey
from zt_middleware.keys import (
    JWKSSource,
    KeySet,
    StaticKeySource,
    key_from_jwk,
    key_from_pem,
    key_source_from_settings,
)
from zt_middleware.settings import Settings

DEFAULT = frozenset({"RS256", "PS256", "ES256", "EdDSA"})
EVERY = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
        "HS256",
        "HS384",
        "HS512",
    }
)
URL = "https://issuer.example.test/.well-known/jwks.json"


def jwk_of(public_key: Any, **members: Any) -> dict[str, Any]:
    algorithm = {
        rsa.RSAPublicKey: "RS256",
        ec.EllipticCurvePublicKey: "ES256",
        ed25519.Ed25519PublicKey: "EdDSA",
    }
    name = next(alg for cls, alg in algorithm.items() if isinstance(public_key, cls))
    jwk: dict[str, Any] = json.loads(get_default_algorithms()[name].to_jwk(public_key))
    jwk.update(members)
    return jwk


def oct_jwk(secret: bytes, **members: Any) -> dict[str, Any]:
    k = base64.urlsafe_b64encode(secret).rstrip(b"=").decode()
    return {"kty": "oct", "k": k, **members}


@pytest.fixture(scope="module")
def small_rsa() -> rsa.RSAPrivateKey:
    # Weak on purpose: the library must refuse it.
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


# -- one JWK ------------------------------------------------------------------


def test_rsa_jwk_verifies_the_allowed_rsa_algorithms(rsa_key: SigningKey) -> None:
    jwk = jwk_of(rsa_key.private_key.public_key(), kid="k1")

    key = key_from_jwk(jwk, EVERY)

    assert key.kid == "k1"
    assert key.algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert key_from_jwk(jwk, DEFAULT).algorithms == {"RS256", "PS256"}


def test_jwk_alg_narrows_the_key_to_that_one_algorithm(rsa_key: SigningKey) -> None:
    key = key_from_jwk(rsa_key.public_jwk(), DEFAULT)

    assert key.algorithms == {"RS256"}


@pytest.mark.parametrize(
    ("curve", "algorithm"),
    [(ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384"), (ec.SECP521R1(), "ES512")],
    ids=["P-256", "P-384", "P-521"],
)
def test_ec_key_verifies_only_the_algorithm_of_its_curve(
    curve: ec.EllipticCurve, algorithm: str
) -> None:
    jwk = jwk_of(ec.generate_private_key(curve).public_key())

    assert key_from_jwk(jwk, EVERY).algorithms == {algorithm}


def test_ec_key_whose_curve_algorithm_is_not_allowed_is_refused() -> None:
    jwk = jwk_of(ec.generate_private_key(ec.SECP384R1()).public_key(), kid="p384")

    with pytest.raises(ConfigurationError, match="no allowed algorithm"):
        key_from_jwk(jwk, DEFAULT)


def test_ed25519_key_verifies_eddsa() -> None:
    jwk = jwk_of(ed25519.Ed25519PrivateKey.generate().public_key())

    assert key_from_jwk(jwk, DEFAULT).algorithms == {"EdDSA"}


def test_private_jwk_is_reduced_to_its_public_key(rsa_key: SigningKey) -> None:
    private = json.loads(get_default_algorithms()["RS256"].to_jwk(rsa_key.private_key))
    private.pop("key_ops", None)  # PyJWT marks private JWKs ["sign"]

    key = key_from_jwk(private, DEFAULT)

    assert isinstance(key.material, rsa.RSAPublicKey)


@pytest.mark.parametrize(
    ("size", "algorithms"),
    [
        (31, None),
        (32, {"HS256"}),
        (47, {"HS256"}),
        (48, {"HS256", "HS384"}),
        (64, {"HS256", "HS384", "HS512"}),
    ],
)
def test_hmac_secret_verifies_only_algorithms_its_length_can_carry(
    size: int, algorithms: set[str] | None
) -> None:
    """HS256 needs 32 bytes, HS384 48 and HS512 64 (RFC 7518 3.2)."""
    jwk = oct_jwk(b"s" * size, kid="h")
    if algorithms is None:
        with pytest.raises(ConfigurationError, match="no allowed algorithm"):
            key_from_jwk(jwk, EVERY)
    else:
        assert key_from_jwk(jwk, EVERY).algorithms == algorithms


def test_hmac_secret_shorter_than_32_bytes_leaves_the_key_set_empty() -> None:
    keys = KeySet.from_jwks({"keys": [oct_jwk(b"s" * 31, kid="h")]}, {"HS256"})

    assert len(keys) == 0
    assert keys.find("h") is None


def test_service_keyed_only_by_a_short_hmac_secret_does_not_start() -> None:
    values = {
        "issuer": "https://issuer.example.test",
        "audience": "api",
        "algorithms": ["HS256"],
        "jwks": {"keys": [oct_jwk(b"s" * 31, kid="h")]},
    }

    with pytest.raises(ConfigurationError, match="no usable key"):
        key_source_from_settings(Settings.from_mapping(values))


def test_rsa_key_under_2048_bits_is_refused(small_rsa: rsa.RSAPrivateKey) -> None:
    jwk = jwk_of(small_rsa.public_key(), kid="weak")

    with pytest.raises(ConfigurationError, match="no allowed algorithm"):
        key_from_jwk(jwk, EVERY)


def test_rsa_pem_under_2048_bits_is_refused(small_rsa: rsa.RSAPrivateKey) -> None:
    pem = small_rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    with pytest.raises(ConfigurationError, match="pem_keys"):
        key_from_pem("weak", pem, EVERY)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"use": "enc"}, "use is 'enc'"),
        ({"key_ops": ["encrypt"]}, "key_ops"),
        ({"key_ops": ["sign"]}, "key_ops"),
        ({"key_ops": "verify"}, "key_ops"),
        ({"alg": "HS256"}, "alg 'HS256' is not allowed"),
        ({"alg": "ES256"}, "alg 'ES256' is not allowed"),
        ({"alg": "RSA-OAEP"}, "alg 'RSA-OAEP' is not allowed"),
        ({"kid": 7}, "'kid' must be a string"),
    ],
    ids=[
        "use-enc",
        "ops-encrypt",
        "ops-sign-only",
        "ops-not-list",
        "alg-hs256",
        "alg-es256",
        "alg-encryption",
        "kid-not-string",
    ],
)
def test_jwk_not_meant_for_verifying_these_signatures_is_refused(
    rsa_key: SigningKey, members: dict[str, Any], message: str
) -> None:
    jwk = {**jwk_of(rsa_key.private_key.public_key(), kid="k1"), **members}

    with pytest.raises(ConfigurationError, match=message):
        key_from_jwk(jwk, EVERY)


def test_jwk_with_key_ops_verify_is_accepted(rsa_key: SigningKey) -> None:
    jwk = jwk_of(rsa_key.private_key.public_key(), key_ops=["verify"])

    assert key_from_jwk(jwk, DEFAULT).algorithms == {"RS256", "PS256"}


@pytest.mark.parametrize(
    "jwk",
    [
        "not an object",
        {"kty": "EC2"},
        {"kty": None},
        {"kty": "RSA", "n": "AQAB"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"kty": "OKP", "crv": "X25519", "x": "AAAA"},
        {"kty": "oct"},
    ],
    ids=[
        "string",
        "unknown-kty",
        "no-kty",
        "rsa-without-e",
        "ec-off-curve",
        "okp-x25519",
        "oct-without-k",
    ],
)
def test_jwk_that_does_not_parse_is_refused(jwk: Any) -> None:
    with pytest.raises(ConfigurationError):
        key_from_jwk(jwk, EVERY)


def test_refusing_a_jwk_never_quotes_its_secret() -> None:
    secret = b"TOPSECRET-hmac-" + b"x" * 4
    jwk = oct_jwk(secret, kid="h")

    with pytest.raises(ConfigurationError) as refused:
        key_from_jwk(jwk, EVERY)

    assert jwk["k"] not in str(refused.value)
    assert "TOPSECRET" not in str(refused.value)


# -- key sets -----------------------------------------------------------------


def test_key_set_finds_keys_by_kid(
    rsa_key: SigningKey, stranger_key: SigningKey
) -> None:
    keys = KeySet.from_jwks(
        {"keys": [rsa_key.public_jwk(), stranger_key.public_jwk()]}, DEFAULT
    )

    assert keys.find("k1").kid == "k1"
    assert keys.find("k2").kid == "k2"
    assert keys.find("k3") is None


def test_token_without_kid_is_served_only_by_a_one_key_set(
    rsa_key: SigningKey, stranger_key: SigningKey
) -> None:
    one = KeySet.from_jwks(rsa_key.jwks(), DEFAULT)
    two = KeySet.from_jwks(
        {"keys": [rsa_key.public_jwk(), stranger_key.public_jwk()]}, DEFAULT
    )

    assert one.find(None) is one.keys[0]
    assert two.find(None) is None


def test_hmac_secret_beside_public_keys_is_a_configuration_error(
    rsa_key: SigningKey,
) -> None:
    """One confusion bug away from "HMAC with the public key as secret"."""
    document = {"keys": [rsa_key.public_jwk(), oct_jwk(b"s" * 32, kid="h")]}

    with pytest.raises(ConfigurationError, match="HMAC secret"):
        KeySet.from_jwks(document, EVERY)


def test_two_keys_under_one_kid_are_a_configuration_error(
    rsa_key: SigningKey, stranger_key: SigningKey
) -> None:
    """Which key a kid names must not depend on the order of the JWKS."""
    document = {
        "keys": [rsa_key.public_jwk(), {**stranger_key.public_jwk(), "kid": "k1"}]
    }

    with pytest.raises(ConfigurationError, match="kid"):
        KeySet.from_jwks(document, DEFAULT)


@pytest.mark.parametrize("document", [None, [], {}, {"keys": {}}, {"keys": "k1"}])
def test_document_that_is_not_a_jwk_set_is_a_configuration_error(document: Any) -> None:
    with pytest.raises(ConfigurationError, match="'keys' list"):
        KeySet.from_jwks(document, DEFAULT)


def test_unusable_jwk_is_skipped_with_a_warning_naming_no_material(
    rsa_key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    encryption = {**rsa_key.public_jwk(), "kid": "enc-1", "use": "enc"}
    caplog.set_level(logging.DEBUG)

    keys = KeySet.from_jwks({"keys": [encryption, rsa_key.public_jwk()]}, DEFAULT)

    assert [key.kid for key in keys.keys] == ["k1"]
    assert "enc-1" in caplog.text
    assert rsa_key.public_jwk()["n"][:16] not in caplog.text


# -- static sources from settings ---------------------------------------------


def settings(**values: Any) -> Settings:
    return Settings.from_mapping(
        {"issuer": "https://issuer.example.test", "audience": "api", **values}
    )


def test_inline_jwks_becomes_a_static_source(rsa_key: SigningKey) -> None:
    source = key_source_from_settings(settings(jwks=rsa_key.jwks()))

    assert isinstance(source, StaticKeySource)
    assert source.current().find("k1") is not None
    assert source.should_refresh("unknown") is False
    assert source.generation == 0


def test_jwks_file_and_pem_keys_are_read(
    rsa_key: SigningKey, stranger_key: SigningKey, tmp_path
) -> None:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(rsa_key.jwks()))
    pem_file = tmp_path / "k2.pem"
    pem_file.write_bytes(stranger_key.public_pem())

    source = key_source_from_settings(
        settings(jwks_file=str(jwks_file), pem_keys={"k2": str(pem_file)})
    )

    assert source.current().find("k1").algorithms == {"RS256"}
    assert source.current().find("k2").algorithms == {"RS256", "PS256"}


def test_unreadable_jwks_file_names_the_setting(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="jwks_file"):
        key_source_from_settings(settings(jwks_file=str(tmp_path / "missing.json")))


def test_pem_file_that_is_not_a_public_key_names_the_kid(tmp_path) -> None:
    pem_file = tmp_path / "bad.pem"
    pem_file.write_text("-----BEGIN NOTHING-----\n")

    with pytest.raises(ConfigurationError, match=r"pem_keys\['k9'\]"):
        key_source_from_settings(settings(pem_keys={"k9": str(pem_file)}))


def test_key_set_with_no_usable_key_is_a_configuration_error(
    rsa_key: SigningKey,
) -> None:
    encryption_only = {"keys": [{**rsa_key.public_jwk(), "use": "enc"}]}

    with pytest.raises(ConfigurationError, match="no usable key"):
        key_source_from_settings(settings(jwks=encryption_only))


def test_hmac_secret_in_one_source_and_public_key_in_another_is_refused(
    rsa_key: SigningKey, tmp_path
) -> None:
    pem_file = tmp_path / "k1.pem"
    pem_file.write_bytes(rsa_key.public_pem())

    with pytest.raises(ConfigurationError, match="HMAC secret"):
        key_source_from_settings(
            settings(
                algorithms=["RS256", "HS256"],
                jwks={"keys": [oct_jwk(b"s" * 32, kid="h")]},
                pem_keys={"k1": str(pem_file)},
            )
        )


def test_jwks_url_wins_and_fetches_nothing_at_start(rsa_key: SigningKey) -> None:
    source = key_source_from_settings(
        settings(jwks_url=URL, jwks=rsa_key.jwks(), jwks_cache_ttl=60)
    )

    assert isinstance(source, JWKSSource)
    assert source.current() is None


# -- JWKS over "HTTP" ---------------------------------------------------------


class FakeEndpoint:
    """An opener for JWKSSource: serves ``body`` or raises, counts calls."""

    def __init__(self, document: Any) -> None:
        self.body = json.dumps(document).encode()
        self.failing = False
        self.calls = 0

    def serve(self, document: Any) -> None:
        self.body = json.dumps(document).encode()

    def __call__(self, url: str, timeout: float, max_bytes: int) -> bytes:
        self.calls += 1
        if self.failing:
            raise OSError("connection refused")
        return self.body


@pytest.fixture
def endpoint(rsa_key: SigningKey) -> FakeEndpoint:
    return FakeEndpoint(rsa_key.jwks())


@pytest.fixture
def source(endpoint: FakeEndpoint, clock) -> JWKSSource:
    return JWKSSource(
        URL,
        allowed=DEFAULT,
        ttl=300,
        cooldown=30,
        stale_for=3600,
        max_bytes=4096,
        clock=clock,
        opener=endpoint,
    )


def test_jwks_source_fetches_on_first_use(
    source: JWKSSource, endpoint: FakeEndpoint
) -> None:
    assert source.current() is None
    assert source.should_refresh("k1") is True

    source.refresh()

    assert endpoint.calls == 1
    assert source.current().find("k1") is not None
    assert source.generation == 1


def test_jwks_source_refetches_after_its_ttl(
    source: JWKSSource, endpoint: FakeEndpoint, clock
) -> None:
    source.refresh()

    clock.advance(300)
    assert source.should_refresh("k1") is False
    clock.advance(1)
    assert source.should_refresh("k1") is True


def test_unknown_kid_triggers_one_refetch_per_cooldown(
    source: JWKSSource, endpoint: FakeEndpoint, clock
) -> None:
    """An attacker spraying random kids costs at most one fetch per cool-down."""
    source.refresh()

    for _ in range(5):
        clock.advance(5)
        if source.should_refresh("k-random"):
            source.refresh()
    assert endpoint.calls == 1

    clock.advance(6)  # 31 s after the first fetch
    assert source.should_refresh("k-random") is True
    source.refresh()
    source.refresh()
    assert endpoint.calls == 2
    assert source.should_refresh("k-random") is False


def test_known_kid_within_ttl_never_refetches(source: JWKSSource, clock) -> None:
    source.refresh()
    clock.advance(200)

    assert source.should_refresh("k1") is False


def test_failed_fetch_keeps_the_last_good_set_until_ttl_plus_stale_for(
    source: JWKSSource, endpoint: FakeEndpoint, clock, caplog: pytest.LogCaptureFixture
) -> None:
    source.refresh()
    good = source.current()
    endpoint.failing = True

    clock.advance(301)
    source.refresh()
    assert source.current() is good
    assert any(r.levelno == logging.ERROR for r in caplog.records)

    clock.advance(3600 - 1)  # 3900 s after the fetch: ttl + stale_for
    assert source.current() is good
    clock.advance(1)
    assert source.current() is None
    with pytest.raises(KeySourceUnavailable):
        source.require()


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b"[]", b'{"keys": {}}', b'{"keys": "k1"}'],
    ids=["html", "array", "keys-object", "keys-string"],
)
def test_malformed_jwks_response_keeps_the_last_good_set(
    source: JWKSSource, endpoint: FakeEndpoint, clock, body: bytes
) -> None:
    source.refresh()
    good = source.current()
    endpoint.body = body

    clock.advance(301)
    source.refresh()

    assert source.current() is good
    assert source.generation == 1


def test_jwks_response_over_max_bytes_is_refused(
    source: JWKSSource, endpoint: FakeEndpoint, rsa_key: SigningKey
) -> None:
    """The cap holds whatever the opener does."""
    endpoint.serve({"keys": [rsa_key.public_jwk()], "padding": "x" * 5000})

    source.refresh()

    assert source.current() is None


def test_default_opener_stops_reading_past_max_bytes(monkeypatch) -> None:
    import urllib.request

    from zt_middleware import keys as keys_module

    asked: list[int] = []

    class Response(io.BytesIO):
        def read1(self, size: int = -1) -> bytes:
            asked.append(size)
            return super().read1(size)

    def fake_urlopen(request: Any, timeout: float) -> Response:
        assert timeout == 3.0
        return Response(b"x" * 1_000_000)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)

    with pytest.raises(ValueError, match="jwks_max_bytes"):
        keys_module._open_url(URL, 3.0, 1024)
    assert len(asked) == 1  # one chunk was enough to know it is too large


def test_default_opener_deadline_covers_the_whole_fetch(monkeypatch) -> None:
    """A server trickling one byte a second is cut off at jwks_timeout."""
    import urllib.request

    from zt_middleware import keys as keys_module

    now = [0.0]

    class Trickle(io.BytesIO):
        def read1(self, size: int = -1) -> bytes:
            now[0] += 1.0
            return b"x"

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout: Trickle())
    monkeypatch.setattr(keys_module.time, "monotonic", lambda: now[0])

    with pytest.raises(TimeoutError):
        keys_module._open_url(URL, 3.0, 1024)
    assert now[0] <= 5.0


def test_new_kid_in_the_jwks_bumps_the_generation(
    source: JWKSSource, endpoint: FakeEndpoint, stranger_key: SigningKey, clock
) -> None:
    source.refresh()
    endpoint.serve(stranger_key.jwks())

    clock.advance(301)
    source.refresh()

    assert source.generation == 2
    assert source.current().find("k1") is None


def test_new_key_under_the_same_kid_bumps_the_generation(
    source: JWKSSource, endpoint: FakeEndpoint, stranger_key: SigningKey, clock
) -> None:
    """Rotating the material but keeping the kid is still a rotation."""
    source.refresh()
    endpoint.serve({"keys": [{**stranger_key.public_jwk(), "kid": "k1"}]})

    clock.advance(301)
    source.refresh()

    assert source.generation == 2


def test_refetching_the_same_jwks_keeps_the_generation(
    source: JWKSSource, endpoint: FakeEndpoint, clock
) -> None:
    source.refresh()
    clock.advance(301)
    source.refresh()

    assert endpoint.calls == 2
    assert source.generation == 1


def test_jwks_source_repr_names_the_url_only(source: JWKSSource) -> None:
    assert repr(source) == f"JWKSSource({URL!r}, generation=0)"


def test_jwks_response_without_usable_keys_keeps_the_last_good_set(rsa_key) -> None:
    import json as _json

    from zt_middleware.keys import JWKSSource

    bodies = [_json.dumps(rsa_key.jwks()).encode(), b'{"keys": []}']
    now = [0.0]
    source = JWKSSource(
        "https://idp.example.test/jwks",
        allowed={"RS256"},
        ttl=10,
        cooldown=0,
        clock=lambda: now[0],
        opener=lambda url, timeout, size: bodies.pop(0),
    )
    source.refresh()
    now[0] = 20.0
    source.refresh()

    keys = source.current()
    assert keys is not None and keys.find(rsa_key.kid) is not None
