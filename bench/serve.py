"""Serve one benchmark app on 127.0.0.1; a subprocess of ``run.py``.

    python -m bench.serve APP VARIANT WORKLOAD_JSON [--threads N] [--http IMPL]

Binds an ephemeral port itself (no race for a "free" port), prints
``PORT <n>`` on stdout, then serves until SIGTERM: ASGI apps on uvicorn (one
worker, no access log), WSGI apps on waitress. Logging is left unconfigured,
as in the in-process runs, so the audit logger writes nowhere.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from typing import Any

from . import apps
from .workload import load_server_workload


def listening_socket() -> socket.socket:
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted
    # connections only when it sees that, and without it every response
    # written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


def serve_asgi(app: Any, sock: socket.socket, http: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        http=http,
        loop="asyncio",
        lifespan="off",
        access_log=False,
        log_level="warning",
        workers=1,
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve_wsgi(app: Any, sock: socket.socket, threads: int) -> None:
    from waitress import create_server

    # Queue-depth warnings are expected with more connections than threads.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    create_server(app, sockets=[sock], threads=threads, ident="bench").run()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve")
    parser.add_argument("app", choices=sorted(apps.specs()))
    parser.add_argument("variant", choices=["bare", "zt"])
    parser.add_argument("workload")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--http", default="httptools")
    args = parser.parse_args(argv)

    settings, pem = load_server_workload(args.workload)
    spec = apps.specs()[args.app]
    app = spec.build(settings if args.variant == "zt" else None, pem)

    sock = listening_socket()
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    if spec.interface == "asgi":
        serve_asgi(app, sock, args.http)
    else:
        serve_wsgi(app, sock, args.threads)


if __name__ == "__main__":
    main(sys.argv[1:])
