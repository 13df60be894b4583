"""Tables and the target summary, as plain text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .plan import FJWT_FIRST_SEEN, FJWT_REPEATED, ZT_FIRST_SEEN, ZT_REPEATED, Group
from .samples import Sample
from .verifier import VerifierRow

WIDTH = 34  # the case column
BUSY = 0.05  # flag a row when other processes took this share of the CPU


def heading(title: str) -> str:
    return f"\n{title}\n{'=' * len(title)}"


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.0f}%"


# -- verifier --------------------------------------------------------------------


def verifier_table(rows: Iterable[VerifierRow]) -> list[str]:
    lines = [f"{'alg':<7}{'case':<{WIDTH}}{'µs/token':>10}{'vs jwt.decode':>15}"]
    for row in rows:
        lines.append(
            f"{row.algorithm:<7}{row.case:<{WIDTH}}{row.micros:>10.1f}{row.ratio:>14.2f}x"
        )

    return lines


# -- throughput tables -------------------------------------------------------------


def group_table(
    group: Group, results: Mapping[str, Sample], *, scale: float, unit: str, cpu: bool
) -> list[str]:
    """One framework's rows; ratios compare each row with its bare baseline."""
    header = (
        f"  {'case':<{WIDTH}}{'req/s':>9}{'p50 ' + unit:>10}{'p99 ' + unit:>10}"
        f"{'rps x':>8}{'p99 x':>8}"
    )
    if cpu:
        header += f"{'srv cpu':>9}{'lg cpu':>8}"
    header += f"{'others':>8}"
    lines = [f"{group.name}", header]

    for case in group.cases:
        sample = results.get(case.label)
        if sample is None:
            continue
        base = results.get(case.baseline) if case.baseline else None
        line = (
            f"  {case.label:<{WIDTH}}{sample.rps:>9,.0f}"
            f"{sample.p50 * scale:>10.1f}{sample.p99 * scale:>10.1f}"
            f"{_ratio(sample.rps / base.rps if base else None):>8}"
            f"{_ratio(sample.p99 / base.p99 if base else None):>8}"
        )
        if cpu:
            line += f"{_percent(sample.server_cpu):>9}{_percent(sample.client_cpu):>8}"
        line += f"{_percent(sample.others_cpu):>8}"
        lines.append(line + _flags(sample))

    comparison = zt_over_fjwt(results)
    if comparison:
        repeated, first_seen = comparison
        lines.append(
            f"  zt / flask-jwt-extended req/s: repeated {_ratio(repeated)}, "
            f"first-seen {_ratio(first_seen)}"
        )
    return lines


def _flags(sample: Sample) -> str:
    flags = []
    if sample.errors:
        codes = ", ".join(str(code) if code else "lost" for code in sample.statuses)
        flags.append(f"!! {sample.errors} not 200 ({codes})")
    if sample.others_cpu is not None and sample.others_cpu >= BUSY:
        flags.append("busy machine")
    if sample.client_cpu is not None and sample.client_cpu > 0.9:
        flags.append("load generator near saturation")
    flags.extend(sample.notes)
    return f"   [{'; '.join(flags)}]" if flags else ""


def zt_over_fjwt(results: Mapping[str, Sample]) -> tuple[float, float] | None:
    labels = (ZT_REPEATED, FJWT_REPEATED, ZT_FIRST_SEEN, FJWT_FIRST_SEEN)
    if not all(label in results for label in labels):
        return None
    return (
        results[ZT_REPEATED].rps / results[FJWT_REPEATED].rps,
        results[ZT_FIRST_SEEN].rps / results[FJWT_FIRST_SEEN].rps,
    )


# -- targets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    where: str
    value: float | None
    threshold: float
    at_least: bool  # met when value >= threshold, else when value <= threshold
    valid: bool = True  # False when a run behind it saw non-200 responses

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "NO DATA"
        if not self.valid:
            return "INVALID (non-200 responses)"
        met = (
            self.value >= self.threshold
            if self.at_least
            else self.value <= self.threshold
        )
        return "MET" if met else "NOT MET"

    def line(self) -> str:
        sign = ">=" if self.at_least else "<="
        value = "-" if self.value is None else f"{self.value:.2f}x"
        goal = f"{sign} {self.threshold:.2f}x"
        return f"  {self.name:<52}{self.where:<12}{value:>8}  {goal:<9} {self.verdict}"


def summary(targets: Iterable[Target]) -> list[str]:
    header = f"  {'target':<52}{'measured':<12}{'figure':>8}  {'goal':<9} verdict"
    return [header, *(target.line() for target in targets)]
