"""One result type for every benchmark that `make bench` runs, and the table it prints.

A claim is measured against a baseline taken in the same run on the same database server
(raw COPY, a hand-written INSERT ... SELECT, a bare client) or against its stated goal when
it is an absolute one (300 ms, 500 events/s): absolute figures vary between machines, so the
ratio is what to read.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One measured claim: `ratio` is measured over baseline (None when there is none)."""

    claim: str
    measured: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool


def render(rows: Iterable[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| claim | measured | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
        cells = (row.claim, row.measured, row.baseline, ratio, row.goal, "yes" if row.met else "NO")
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def machine(postgres_version: str = "") -> str:
    """Date (UTC), cores, CPU model and load: what the numbers were measured on."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        model = found.group(1).strip() if found else model
    parts = [
        datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        f"{os.cpu_count()} cores ({model})",
        f"load average {load_average():.2f}",
    ]
    if postgres_version:
        parts.append(postgres_version)
    return ", ".join(parts)


def load_average() -> float:
    """The 1-minute load average: above 1 per core, other work shared the machine."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:,.2f} s"
