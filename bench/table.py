"""The result of a benchmark claim, and the table bench/run_all.py prints."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Row:
    claim: str
    measured: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool


def machine() -> str:
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
    return f"{today}, {os.cpu_count()} cores, {model}"


def print_table(rows: list[Row], where: str) -> None:
    print(f"\n{where}\n")
    print("| claim | measured | baseline | ratio | goal | met |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        ratio = "—" if row.ratio is None else f"{row.ratio:.2f}"
        met = "yes" if row.met else "**no**"
        print(f"| {row.claim} | {row.measured} | {row.baseline} | {ratio} | {row.goal} | {met} |")
