"""An HTTP/1.1 keep-alive load generator on raw asyncio sockets.

It runs in its own process (started once, fed jobs over a pipe) so that it
takes the second core while the server under test takes the first. A job
opens a fixed number of connections to 127.0.0.1, each with one request in
flight, and stops at its deadline or when its request budget (for
first-seen tokens: its slice of the token pool) is spent, whichever comes
first. Latency is from the write of a request to the parse of the last byte
of its response. Responses need a Content-Length or chunked encoding.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from .inprocess import USER_AGENT
from .samples import Sample, sample_from

HOST = "127.0.0.1"
LOST = 0  # the status recorded for a response that never came
GRACE = 30.0  # seconds past its deadline before a job is abandoned


@dataclass(frozen=True)
class Job:
    port: int
    path: str
    tokens: str  # "repeated", "first-seen" or "none"
    first: int = 0  # first-seen: pool slice [first, last)
    last: int = 0
    connections: int = 16
    seconds: float = 1.0
    limit: int = 1_000_000


class ProtocolError(Exception):
    """The response cannot be framed (no length, bad chunk size)."""


def response_end(buffer: bytearray) -> int:
    """Index just past the first complete response in ``buffer``, or -1."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return -1
    head = bytes(buffer[:head_end]).lower()
    body = head_end + 4

    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end >= 0 else None])
        return body + length if len(buffer) >= body + length else -1

    if b"\r\ntransfer-encoding: chunked" in head:
        return _chunked_end(buffer, body)
    raise ProtocolError("response has neither Content-Length nor chunked encoding")


def _chunked_end(buffer: bytearray, position: int) -> int:
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return -1
        size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
        position = line_end + 2 + size + 2  # data, then its CRLF
        if len(buffer) < position:
            return -1
        if size == 0:  # no trailers are expected
            return position


class _Run:
    """The request supply and the results shared by one job's connections."""

    def __init__(self, requests: Iterator[bytes], seconds: float, limit: int) -> None:
        self.requests = requests
        self.deadline = time.perf_counter() + seconds
        self.remaining = limit
        self.latencies: list[float] = []
        self.failed: list[int] = []
        self.open = 0
        self.finished = asyncio.get_running_loop().create_future()

    def next_request(self) -> bytes | None:
        if self.remaining <= 0 or time.perf_counter() >= self.deadline:
            return None
        self.remaining -= 1
        return next(self.requests, None)

    def closed(self) -> None:
        self.open -= 1
        if self.open == 0 and not self.finished.done():
            self.finished.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.waiting = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def send_next(self) -> None:
        transport, request = self.transport, self.run.next_request()
        if transport is None:
            return
        if request is None:
            transport.close()
            return
        self.sent_at, self.waiting = time.perf_counter(), True
        transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            end = response_end(self.buffer)
        except (ProtocolError, ValueError):
            self.close()
            return
        if end < 0:
            return

        self.waiting = False
        self.run.latencies.append(time.perf_counter() - self.sent_at)
        status = int(self.buffer[9:12])
        if status != 200:
            self.run.failed.append(status)
        del self.buffer[:end]
        self.send_next()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting:  # closed by the server, or unframeable: a failure
            self.run.failed.append(LOST)
        self.run.closed()


def _requests(job: Job, repeated: str, pool: list[str]) -> Iterator[bytes]:
    head = (
        f"GET {job.path} HTTP/1.1\r\nHost: {HOST}:{job.port}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
    )
    if job.tokens == "none":
        return repeat((head + "\r\n").encode())
    if job.tokens == "repeated":
        return repeat((head + f"Authorization: Bearer {repeated}\r\n\r\n").encode())

    return iter(
        [
            (head + f"Authorization: Bearer {token}\r\n\r\n").encode()
            for token in pool[job.first : job.last]
        ]
    )


async def _run_job(job: Job, repeated: str, pool: list[str]) -> Sample:
    loop = asyncio.get_running_loop()
    run = _Run(_requests(job, repeated, pool), job.seconds, job.limit)
    connections = []
    for _ in range(job.connections):
        _transport, connection = await loop.create_connection(
            lambda: _Connection(run), HOST, job.port
        )
        connections.append(connection)
    run.open = len(connections)

    cpu, start = time.process_time(), time.perf_counter()
    run.deadline = start + job.seconds
    for connection in connections:
        connection.send_next()
    try:
        await asyncio.wait_for(asyncio.shield(run.finished), job.seconds + GRACE)
    except asyncio.TimeoutError:
        for connection in connections:
            connection.close()
        raise TimeoutError(f"no response from port {job.port} for {GRACE}s") from None
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu

    sample = sample_from(run.latencies, elapsed, len(run.failed), run.failed)
    return dataclasses.replace(sample, client_cpu=cpu / elapsed)


def _worker(conn: Any, repeated: str, pool: list[str]) -> None:
    loop = asyncio.new_event_loop()
    while True:
        job = conn.recv()
        if job is None:
            break
        try:
            conn.send(loop.run_until_complete(_run_job(job, repeated, pool)))
        except Exception as exc:
            conn.send(exc)
    loop.close()


class LoadGenerator:
    """The worker process; ``run(job)`` blocks until the job's sample."""

    def __init__(self, repeated: str, pool: list[str]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_worker, args=(child, repeated, pool), daemon=True
        )
        self._process.start()
        child.close()

    def run(self, job: Job) -> Sample:
        self._conn.send(job)
        result = self._conn.recv()
        if isinstance(result, Exception):
            raise result
        sample: Sample = result
        return sample

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
            self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
