"""Build a store from the ``store`` setting's URL.

    memory://                                    this process only
    sqlite:///abs/path/zt.db, sqlite:///./rel.db  the workers of one host
    redis://[[user]:password@]host:port/db        a Redis server
    rediss://...                                  the same over TLS
    redis+sentinel://[[user]:password@]host:port[,host:port]/service/db

Redis clients get short socket timeouts (0.5 s to connect, 1 s to answer)
and one immediate retry, so a dead server turns into a 503 quickly; query
parameters of a ``redis://`` URL (``?socket_timeout=2``) override them. A
Sentinel URL's password is the master's; the sentinels are asked without.
Errors name the ``store`` setting and never repeat a password.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from ..errors import ConfigurationError
from .base import Store
from .memory import MemoryStore

__all__ = ["store_from_url"]

CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 1.0
SENTINEL_PORT = 26379


def store_from_url(url: str) -> Store:
    """The store a ``store`` URL names; ConfigurationError when it is wrong."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigurationError("store: not a URL") from None

    if parts.scheme == "memory":
        return MemoryStore()
    if parts.scheme == "sqlite":
        return _sqlite(parts)
    if parts.scheme in ("redis", "rediss"):
        return _redis(url, parts)
    if parts.scheme == "redis+sentinel":
        return _sentinel(parts)

    raise ConfigurationError(
        "store: expected memory://, sqlite:///path, redis://, rediss:// or "
        f"redis+sentinel://, got scheme {parts.scheme!r}"
    )


def _sqlite(parts: SplitResult) -> Store:
    from .sqlite import SQLiteStore

    if parts.netloc or parts.query or parts.fragment:
        raise ConfigurationError(
            "store: expected sqlite:///absolute/path or sqlite:///./relative/path"
        )
    path = unquote(parts.path)
    if path.startswith(("/./", "/../")):
        path = path[1:]
    if path in ("", "/") or path.endswith("/"):
        raise ConfigurationError("store: the sqlite URL names no file")

    return SQLiteStore(path)


def _redis(url: str, parts: SplitResult) -> Store:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.retry
        import redis.retry
    except ImportError as exc:
        raise ConfigurationError(
            "store: a redis:// store needs redis-py: pip install 'zt-middleware[redis]'"
        ) from exc

    from .redis import RedisStore

    host, port = _host_port(parts.netloc.rpartition("@")[2], 6379)
    db = _database(parts.path.strip("/") or "0")
    name = f"{parts.scheme}://{host}:{port}/{db}"

    try:
        client = redis.Redis.from_url(url, **_options(redis.retry.Retry))
        async_client = redis.asyncio.Redis.from_url(
            url, **_options(redis.asyncio.retry.Retry)
        )
    except (ValueError, TypeError) as exc:
        # redis-py's message may quote the URL; say only what kind of error.
        raise ConfigurationError(
            f"store: the Redis URL {name} does not parse ({type(exc).__name__})"
        ) from None

    return RedisStore(client, async_client, name=name)


def _sentinel(parts: SplitResult) -> Store:
    import redis.asyncio.retry
    import redis.asyncio.sentinel
    import redis.retry
    import redis.sentinel

    from .redis import RedisStore

    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = [_host_port(item, SENTINEL_PORT) for item in hosts.split(",")]

    path = [segment for segment in parts.path.split("/") if segment]
    if not 1 <= len(path) <= 2:
        raise ConfigurationError(
            "store: expected redis+sentinel://host:port[,host:port]/service_name/db"
        )
    service = unquote(path[0])
    db = _database(path[1] if len(path) == 2 else "0")

    credentials: dict[str, Any] = {
        "username": unquote(username) or None,
        "password": unquote(password) or None,
    }
    timeouts = _options(None)
    clients = []
    for sentinel_class, retry in (
        (redis.sentinel.Sentinel, redis.retry.Retry),
        (redis.asyncio.sentinel.Sentinel, redis.asyncio.retry.Retry),
    ):
        sentinel = sentinel_class(sentinels, sentinel_kwargs=timeouts, **timeouts)
        clients.append(
            sentinel.master_for(service, db=db, **credentials, **_options(retry))
        )

    hosts_named = ",".join(f"{host}:{port}" for host, port in sentinels)
    name = f"redis+sentinel://{hosts_named}/{service}/{db}"
    return RedisStore(clients[0], clients[1], name=name)


def _options(retry_class: Any) -> dict[str, Any]:
    from redis.backoff import NoBackoff

    from .redis import RETRIES

    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": READ_TIMEOUT,
    }
    if retry_class is not None:
        options["retry"] = retry_class(NoBackoff(), RETRIES)
    return options


def _host_port(netloc: str, default_port: int) -> tuple[str, int]:
    host, colon, port = netloc.rpartition(":")
    if not colon or host.endswith(":") or (netloc.startswith("[") and "]" in port):
        host, port = netloc, ""
    host = host.strip("[]")
    if not host:
        raise ConfigurationError("store: the URL names no host")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigurationError(
            f"store: the port of {host} is not a number from 1 to 65535"
        )

    return host, int(port)


def _database(text: str) -> int:
    if not text.isdigit():
        raise ConfigurationError("store: the Redis database must be a number, as in /0")
    return int(text)
