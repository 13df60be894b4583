"""One measured run, and the median of several."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    """Requests served, their rate, and latency percentiles in seconds.

    ``rps`` is requests per second of wall time (over HTTP) or of time spent
    inside the app (in process). ``errors`` counts responses that were not
    200; ``statuses`` names them. Server and client CPU shares are of one
    core; ``others_cpu`` is the share of the whole machine that other
    processes took meanwhile.
    """

    requests: int
    rps: float
    p50: float
    p99: float
    errors: int = 0
    statuses: tuple[int, ...] = ()
    server_cpu: float | None = None
    client_cpu: float | None = None
    others_cpu: float | None = None  # share of all cores used by others
    runs: int = 1
    notes: tuple[str, ...] = field(default=(), compare=False)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def sample_from(
    latencies: list[float],
    seconds: float,
    errors: int = 0,
    statuses: Sequence[int] = (),
) -> Sample:
    latencies.sort()
    return Sample(
        requests=len(latencies),
        rps=len(latencies) / seconds if seconds > 0 else 0.0,
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        errors=errors,
        statuses=tuple(sorted(set(statuses))),
    )


def median_of(samples: Sequence[Sample]) -> Sample:
    """Each figure's median over the repeats; errors add up."""

    def middle(values: list[float | None]) -> float | None:
        present = [value for value in values if value is not None]
        return statistics.median(present) if present else None

    return Sample(
        requests=sum(s.requests for s in samples),
        rps=statistics.median(s.rps for s in samples),
        p50=statistics.median(s.p50 for s in samples),
        p99=statistics.median(s.p99 for s in samples),
        errors=sum(s.errors for s in samples),
        statuses=tuple(sorted({code for s in samples for code in s.statuses})),
        server_cpu=middle([s.server_cpu for s in samples]),
        client_cpu=middle([s.client_cpu for s in samples]),
        others_cpu=middle([s.others_cpu for s in samples]),
        runs=len(samples),
        notes=tuple(dict.fromkeys(note for s in samples for note in s.notes)),
    )
