"""Profile the middleware path of one in-process case with cProfile.

    .venv/bin/python bench/profile_path.py starlette repeated
    .venv/bin/python bench/profile_path.py flask first-seen --top 30

Runs the guarded app in process (as in bench/run.py, section 2(i)) under
cProfile and prints the functions of ``zt_middleware`` by their own time,
then the callees with the highest cumulative time. cProfile adds a fixed
cost per call, so many tiny calls look dearer than they are; read the list
for where the time goes, and bench/run.py for how much.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import bench as a package
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import cProfile
import io
import itertools
import pstats

from bench import apps, inprocess
from bench.workload import Workload

TOKENS = {"repeated", "first-seen", "none"}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench/profile_path.py")
    parser.add_argument("app", choices=["starlette", "fastapi", "flask", "django-wsgi"])
    parser.add_argument("tokens", choices=sorted(TOKENS))
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    first_seen = args.tokens == "first-seen"
    workload = Workload.create(args.requests + 200 if first_seen else 1)
    spec = apps.specs()[args.app]
    app = spec.build(workload.settings, workload.public_pem)
    path = spec.public if args.tokens == "none" else spec.protected

    def tokens(start: int, count: int) -> list[str | None]:
        if args.tokens == "none":
            return [None] * count
        if args.tokens == "repeated":
            return [workload.repeated] * count
        return list(itertools.islice(workload.pool, start, start + count))

    inprocess.run(app, spec.interface, path, tokens(0, 200), 5.0)  # warm up
    profiler = cProfile.Profile()
    profiler.enable()
    sample = inprocess.run(app, spec.interface, path, tokens(200, args.requests), 60.0)
    profiler.disable()

    print(f"{args.app}, {args.tokens}: {sample.requests} requests, "
          f"{sample.errors} non-200 (timings inflated by cProfile)")  # fmt: skip
    for order, title in (("tottime", "own time"), ("cumulative", "cumulative")):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats(order)
        stats.print_stats("zt_middleware", args.top)
        print(f"\n-- zt_middleware by {title} --")
        print(_trim(out.getvalue()))


def _trim(text: str) -> str:
    """Keep pstats' table, drop its preamble."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(line for line in lines[start:] if line.strip())


if __name__ == "__main__":
    main(sys.argv[1:])
