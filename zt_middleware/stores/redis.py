"""The Redis store: workers on many hosts share one Redis deployment.

A request reads in one round trip and writes in at most one more, each a
non-transactional pipeline of single-key commands. Keys carry a hash tag
naming what they belong to, so that on Redis Cluster a token's keys, a
session's keys and a subject's keys each stay in one slot::

    zt:{jti:<jti>}:revoked:jti    revoked token         GET / SET EX
    zt:{jti:<jti>}:used           one-time claim        SET NX EX
    zt:{sid:<sid>}:revoked:sid    revoked session       GET / SET EX
    zt:{sid:<sid>}:last           the session's last    GET / SET EX
                                  request and place
    zt:{sub:<sub>}:revoked:sub    subject revoked at    GET / SET EX
    zt:{sub:<sub>}:revoked:svc    service identity      GET / SET EX
    zt:{sub:<sub>}:last           the subject's last    GET / SET EX
                                  request, any session
    zt:{sub:<sub>}:seen           devices and networks  sorted set scored
                                  of the subject        by expiry
    zt:revocations                what is in force      sorted set, listing
    zt:kv:<key>                   a step-up value, key  GET / SET / INCR
                                  with its own tag
    zt:{kv:<key>}                 one whose key has     GET / SET / INCR
                                  no tag

A read is at most seven commands (six GETs, a ZRANGEBYSCORE); a write at
most six (SET NX, two SETs, ZADD, ZREMRANGEBYSCORE, EXPIRE).

The step-up primitives are one round trip each: ``claim`` is SET NX EX,
``count`` a pipeline of INCR and EXPIRE NX (Redis 7 or later), ``get``,
``put`` and ``delete`` are GET, SET and DEL. Their keys are the caller's. A
key that holds a hash tag keeps it, so that the caller decides what shares
a slot (``totp:used:{sub:alice}:123`` is ``zt:kv:totp:used:{sub:alice}:123``,
in the slot of ``sub:alice``); any other key is tagged whole
(``lockout:alice`` is ``zt:{kv:lockout:alice}``). The two forms never name
the same key: one starts ``zt:kv:``, the other ``zt:{kv:``.

Every key has a TTL: a revocation's until what it protects expires,
history's ``history_ttl`` after its last use. Expiry is Redis's, so a
revocation lapses on the server's clock; history scores use this
process's clock.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..errors import StoreUnavailable
from .base import (
    Revocation,
    SessionRecord,
    StateKeys,
    StateRead,
    StateWrite,
    Store,
    check_kind,
)

__all__ = ["RedisStore"]

# One retry, at once: enough to replace a pooled connection that a server
# restart closed, and a dead server still fails fast.
RETRIES = 1

# Which hash tag a revocation of each kind lives under: a service identity
# is a subject, so its revocation sits beside the subject's.
_TAG = {"jti": "jti", "sid": "sid", "sub": "sub", "svc": "sub"}

# Trim, add, and let the listing's key live as long as its last entry.
# One key, so it is also safe on Cluster.
_INDEX_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(last[2])) + 1)
return 1
"""

_DEVICE, _NETWORK = "d:", "n:"

# Connection settings that mean the same to the asyncio client.
_PORTABLE = frozenset(
    {
        "host",
        "port",
        "db",
        "username",
        "password",
        "path",
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "client_name",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "health_check_interval",
        "ssl_keyfile",
        "ssl_certfile",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_check_hostname",
    }
)


class RedisStore(Store):
    """Shared state in Redis, through redis-py.

    ``client`` is any synchronous redis-py client: ``redis.Redis``, a
    Sentinel ``master_for(...)`` client or ``redis.cluster.RedisCluster``;
    ``async_client`` its ``redis.asyncio`` counterpart, for ASGI and async
    Django. Without one, a plain ``redis.Redis`` gets an asyncio twin with
    the same connection settings; for other clients the async twins
    (``aread``, ``awrite``, ``aclaim``, ...) run the sync client in a worker
    thread, which never blocks the loop.
    An asyncio client belongs to the event loop it first ran on.

    Tested against a real single server, a real Sentinel (one sentinel, one
    master) and a real three-node Cluster, sync and asyncio each.

    A refused one-time token still records its device, network and place
    (as the subject's last request): the claim and the history travel in one
    pipeline, across slots, so the history cannot wait for the claim's
    answer.
    """

    def __init__(
        self,
        client: Any,
        async_client: Any = None,
        *,
        prefix: str = "zt",
        name: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.async_client = (
            async_client if async_client is not None else _async_twin(client)
        )
        self.prefix = prefix
        self.name = name or _describe(client)
        self._clock = clock

    def __repr__(self) -> str:
        return f"RedisStore({self.name}, prefix={self.prefix!r})"

    # -- the request path --------------------------------------------------------

    def read(self, keys: StateKeys) -> StateRead:
        pipe = self.client.pipeline(transaction=False)
        now = self._clock()
        self._queue_read(pipe, keys, now)
        with self._errors("read"):
            replies = pipe.execute()

        return self._parse_read(keys, replies)

    async def aread(self, keys: StateKeys) -> StateRead:
        if self.async_client is None:
            return await asyncio.to_thread(self.read, keys)

        pipe = self.async_client.pipeline(transaction=False)
        now = self._clock()
        self._queue_read(pipe, keys, now)
        with self._errors("read"):
            replies = await pipe.execute()

        return self._parse_read(keys, replies)

    def write(self, update: StateWrite) -> bool:
        pipe = self.client.pipeline(transaction=False)
        self._queue_write(pipe, update, self._clock())
        with self._errors("write"):
            replies = pipe.execute()

        return update.once_key is None or bool(replies[0])

    async def awrite(self, update: StateWrite) -> bool:
        if self.async_client is None:
            return await asyncio.to_thread(self.write, update)

        pipe = self.async_client.pipeline(transaction=False)
        self._queue_write(pipe, update, self._clock())
        with self._errors("write"):
            replies = await pipe.execute()

        return update.once_key is None or bool(replies[0])

    # -- step-up primitives ------------------------------------------------------

    def claim(self, key: str, ttl: int) -> bool:
        with self._errors("claim"):
            claimed = self.client.set(
                self._value_key(key), b"1", nx=True, ex=_seconds(ttl)
            )

        return bool(claimed)

    async def aclaim(self, key: str, ttl: int) -> bool:
        if self.async_client is None:
            return await asyncio.to_thread(self.claim, key, ttl)

        with self._errors("claim"):
            claimed = await self.async_client.set(
                self._value_key(key), b"1", nx=True, ex=_seconds(ttl)
            )

        return bool(claimed)

    def count(self, key: str, ttl: int) -> int:
        pipe = self.client.pipeline(transaction=False)
        self._queue_count(pipe, key, ttl)
        with self._errors("count"):
            value, _ = pipe.execute()

        return int(value)

    async def acount(self, key: str, ttl: int) -> int:
        if self.async_client is None:
            return await asyncio.to_thread(self.count, key, ttl)

        pipe = self.async_client.pipeline(transaction=False)
        self._queue_count(pipe, key, ttl)
        with self._errors("count"):
            value, _ = await pipe.execute()

        return int(value)

    def get(self, key: str) -> bytes | None:
        with self._errors("get"):
            value: bytes | None = self.client.get(self._value_key(key))

        return value

    async def aget(self, key: str) -> bytes | None:
        if self.async_client is None:
            return await asyncio.to_thread(self.get, key)

        with self._errors("get"):
            value: bytes | None = await self.async_client.get(self._value_key(key))

        return value

    def put(self, key: str, value: bytes, ttl: int | None = None) -> None:
        expiry = None if ttl is None else _seconds(ttl)
        with self._errors("put"):
            self.client.set(self._value_key(key), bytes(value), ex=expiry)

    async def aput(self, key: str, value: bytes, ttl: int | None = None) -> None:
        if self.async_client is None:
            return await asyncio.to_thread(self.put, key, value, ttl)

        expiry = None if ttl is None else _seconds(ttl)
        with self._errors("put"):
            await self.async_client.set(self._value_key(key), bytes(value), ex=expiry)

    def delete(self, key: str) -> None:
        with self._errors("delete"):
            self.client.delete(self._value_key(key))

    async def adelete(self, key: str) -> None:
        if self.async_client is None:
            return await asyncio.to_thread(self.delete, key)

        with self._errors("delete"):
            await self.async_client.delete(self._value_key(key))

    # -- revocations -------------------------------------------------------------

    def revoke(self, kind: str, value: str, *, now: float, ttl: int) -> Revocation:
        check_kind(kind)
        revocation = Revocation(kind, value, revoked_at=now, expires_at=now + ttl)

        # The revocation first, then the listing: two commands, as a
        # cluster pipeline cannot carry a script. Not on the request path.
        member = json.dumps([kind, value])
        with self._errors("revoke"):
            self.client.set(
                self._revoked_key(kind, value), f"{now!r} {now + ttl!r}", ex=ttl
            )
            self.client.eval(
                _INDEX_SCRIPT, 1, self._index_key(), repr(now), repr(now + ttl), member
            )

        return revocation

    def revocations(self, *, now: float) -> list[Revocation]:
        with self._errors("list revocations"):
            members = self.client.zrangebyscore(self._index_key(), f"({now!r}", "+inf")
            entries = [json.loads(_text(member)) for member in members]
            pipe = self.client.pipeline(transaction=False)
            for kind, value in entries:
                pipe.get(self._revoked_key(kind, value))
            replies = pipe.execute() if entries else []

        found = []
        for (kind, value), reply in zip(entries, replies, strict=True):
            if reply is not None:
                revoked_at, expires_at = map(float, _text(reply).split())
                if expires_at > now:
                    found.append(Revocation(kind, value, revoked_at, expires_at))

        return sorted(found, key=lambda r: (r.revoked_at, r.kind, r.value))

    def close(self) -> None:
        """Close the sync client; ``aclose`` closes the asyncio one."""
        with self._errors("close"):
            for client in (self.client, *_sentinels(self.client)):
                client.close()

    async def aclose(self) -> None:
        if self.async_client is None:
            return
        with self._errors("close"):
            for client in (self.async_client, *_sentinels(self.async_client)):
                await client.aclose()

    # -- keys and commands -------------------------------------------------------

    def _key(self, tag: str, value: str, suffix: str) -> str:
        return f"{self.prefix}:{{{tag}:{value}}}:{suffix}"

    def _revoked_key(self, kind: str, value: str) -> str:
        return self._key(_TAG[kind], value, f"revoked:{kind}")

    def _index_key(self) -> str:
        return f"{self.prefix}:revocations"

    def _value_key(self, key: str) -> str:
        # The caller's hash tag, if it has one, decides the slot; otherwise
        # the whole key does.
        if _hash_tag(key):
            return f"{self.prefix}:kv:{key}"
        return f"{self.prefix}:{{kv:{key}}}"

    def _queue_read(self, pipe: Any, keys: StateKeys, now: float) -> None:
        # The order here is the order _parse_read takes the replies in. Plain
        # GETs: redis-py's asyncio cluster pipeline refuses MGET, and joining
        # same-slot keys in one MGET measured no faster.
        if keys.token_id is not None:
            pipe.get(self._revoked_key("jti", keys.token_id))
        if keys.parent_token_id is not None:
            pipe.get(self._revoked_key("jti", keys.parent_token_id))
        if keys.session_id is not None:
            pipe.get(self._revoked_key("sid", keys.session_id))
            pipe.get(self._key("sid", keys.session_id, "last"))
        pipe.get(self._revoked_key("sub", keys.subject))
        pipe.get(self._revoked_key("svc", keys.subject))
        pipe.get(self._key("sub", keys.subject, "last"))
        pipe.zrangebyscore(self._key("sub", keys.subject, "seen"), f"({now!r}", "+inf")

    def _parse_read(self, keys: StateKeys, replies: list[Any]) -> StateRead:
        replies = list(replies)
        token = replies.pop(0) if keys.token_id is not None else None
        if keys.parent_token_id is not None:
            token = replies.pop(0) or token
        session_revoked = session = None
        if keys.session_id is not None:
            session_revoked, session = replies.pop(0), replies.pop(0)
        subject, service, last, seen = replies
        # A revocation's value is "revoked_at expires_at".
        before = float(_text(subject).split()[0]) if subject is not None else None
        members = [_text(member) for member in seen]

        return StateRead(
            token_revoked=token is not None,
            session_revoked=session_revoked is not None,
            subject_revoked_before=before,
            service_revoked=service is not None,
            session=_session_record(session),
            subject_last=_session_record(last),
            subject_devices=_items(members, _DEVICE),
            subject_networks=_items(members, _NETWORK),
        )

    def _queue_write(self, pipe: Any, update: StateWrite, now: float) -> None:
        history_ttl = _seconds(update.history_ttl)
        if update.once_key is not None:
            # First in the pipeline: its reply decides write's answer.
            used = self._key("jti", update.once_key, "used")
            pipe.set(used, "1", nx=True, ex=_seconds(update.once_ttl))

        # The same record twice: the session's last request, and the
        # subject's in any session.
        record = json.dumps(
            [
                update.device,
                update.network,
                update.seen_at,
                update.country,
                update.latitude,
                update.longitude,
            ]
        )
        if update.session_id is not None:
            session = self._key("sid", update.session_id, "last")
            pipe.set(session, record, ex=history_ttl)
        pipe.set(self._key("sub", update.subject, "last"), record, ex=history_ttl)

        expires = now + history_ttl
        seen = {
            prefix + item: expires
            for prefix, item in ((_DEVICE, update.device), (_NETWORK, update.network))
            if item is not None
        }
        if seen:
            key = self._key("sub", update.subject, "seen")
            pipe.zadd(key, seen)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.expire(key, history_ttl)

    def _queue_count(self, pipe: Any, key: str, ttl: int) -> None:
        # INCR is atomic; EXPIRE NX sets a TTL only on a key without one, so
        # the first count starts the window and later counts leave it be. A
        # counter whose EXPIRE was lost gets one at its next count.
        counter = self._value_key(key)
        pipe.incr(counter)
        pipe.expire(counter, _seconds(ttl), nx=True)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            # redis-py's messages name the host and port, never a password.
            failure = f"{type(exc).__name__}: {exc}"
            raise StoreUnavailable(
                f"Redis store {self.name}: {action} failed ({failure})"
            ) from exc


def _seconds(ttl: float) -> int:
    """A TTL in whole seconds for EX and EXPIRE, which refuse zero."""
    return max(1, int(ttl))


def _hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes, by its rule: between the
    first ``{`` and the next ``}``, when that is not empty; else ``""``."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else ""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _items(members: list[str], prefix: str) -> frozenset[str]:
    return frozenset(m[len(prefix) :] for m in members if m.startswith(prefix))


def _session_record(raw: Any) -> SessionRecord | None:
    if raw is None:
        return None
    # [device, network, seen_at, country, latitude, longitude]; records
    # written before places were kept end at seen_at.
    device, network, seen_at, *place = json.loads(_text(raw))
    return SessionRecord(device, network, float(seen_at), *place)


def _sentinels(client: Any) -> list[Any]:
    """The clients a Sentinel-managed client asks for its master."""
    manager = getattr(
        getattr(client, "connection_pool", None), "sentinel_manager", None
    )
    return list(getattr(manager, "sentinels", ()))


def _describe(client: Any) -> str:
    """Where the client points, for messages: host, port and db, no secret."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {})
    service = getattr(pool, "service_name", None)
    if service:
        return f"sentinel service {service!r}"
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    return type(client).__name__


def _async_twin(client: Any) -> Any:
    """A ``redis.asyncio.Redis`` with ``client``'s settings, when it is plain."""
    pool = getattr(client, "connection_pool", None)
    if type(client) is not redis.Redis or type(pool) is not redis.ConnectionPool:
        return None

    classes = {
        redis.Connection: redis.asyncio.Connection,
        redis.SSLConnection: redis.asyncio.SSLConnection,
        redis.UnixDomainSocketConnection: redis.asyncio.UnixDomainSocketConnection,
    }
    connection_class = classes.get(pool.connection_class)
    if connection_class is None:
        return None

    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k in _PORTABLE}
    # from_pool: the twin owns its pool, and aclose() disconnects it.
    return redis.asyncio.Redis.from_pool(
        redis.asyncio.ConnectionPool(
            connection_class=connection_class,
            retry=redis.asyncio.retry.Retry(NoBackoff(), RETRIES),
            **kwargs,
        )
    )
