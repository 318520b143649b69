"""The result of a benchmark claim, and the table bench/run_all.py prints.

A claim is measured against a baseline taken in the same run on the same database server
(raw COPY, a hand-written INSERT ... SELECT, a bare client, the ceiling app) or against its
stated goal when it is an absolute one (300 ms, 500 events/s): absolute figures vary between
machines, so the ratio is what to read.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Row:
    """One measured claim: `ratio` is measured over baseline (None when there is none)."""

    claim: str
    measured: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool


def machine(postgres_version: str = "") -> str:
    """Date (UTC), cores, CPU model and load: what the numbers were measured on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next(
                (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                model,
            )
    except OSError:
        pass
    today = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = f"{today}, {os.cpu_count()} cores, {model}, load average {load_average():.2f}"
    return f"{where}, {postgres_version}" if postgres_version else where


def load_average() -> float:
    """The 1-minute load average: above 1 per core, other work shared the machine."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def render(rows: Iterable[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| claim | measured | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
        met = "yes" if row.met else "**no**"
        cells = (row.claim, row.measured, row.baseline, ratio, row.goal, met)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def print_table(rows: list[Row], where: str) -> None:
    print(f"\n{where}\n")
    print(render(rows))


def ms(seconds: float) -> str:
    milliseconds = seconds * 1000
    return f"{milliseconds:,.2f} ms" if milliseconds < 10 else f"{milliseconds:,.1f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:,.2f} s"
