"""Render the example outcomes report shown in the README (docs/outcomes-example.png).

Run by hand: `.venv/bin/python scripts/outcomes_example.py`. The figures are made up (a school's
program of eight participants over four months); the drawing is service/reports/outcomes_pdf.py's
own, rendered to PNG with pypdfium2 (a development dependency).
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path

import pypdfium2

from models.outcomes import (
    Attendance,
    FocusAreaOutcome,
    MonthOutcome,
    Period,
    ProgramOutcomes,
    SessionCounts,
)
from models.types import FocusArea
from service.reports.outcomes_pdf import render

ROOT = Path(__file__).resolve().parent.parent


def area(name: str, months: list[tuple[str, float | None, int]]) -> FocusAreaOutcome:
    trend = [MonthOutcome(month=m, average=a, observations=n) for m, a, n in months]
    shown = [(a, n) for _, a, n in months if a is not None]
    total = sum(n for _, _, n in months)
    average = round(sum(a * n for a, n in shown) / sum(n for _, n in shown), 2)
    return FocusAreaOutcome(
        focus_area=FocusArea(name),
        observations=total,
        average=average,
        first_month_average=trend[0].average,
        last_month_average=trend[-1].average,
        trend=trend,
    )


def main() -> None:
    months = ["2030-09", "2030-10", "2030-11", "2030-12"]
    found = ProgramOutcomes(
        program_id=uuid.uuid4(),
        period=Period(start=date(2030, 9, 3), end=date(2030, 12, 17)),
        sessions=SessionCounts(planned=16, delivered=14, cancelled=1, late_cancelled=1, no_show=0),
        attendance=Attendance(expected_per_session=8.0, average=7.14, rate=0.8929),
        focus_areas=[
            area(
                "stress_anxiety",
                list(zip(months, [2.4, 2.9, 3.3, None], [5, 5, 5, 2], strict=True)),
            ),
            area(
                "social_confidence",
                list(zip(months, [2.8, 3.0, 3.5, None], [5, 5, 5, 2], strict=True)),
            ),
            area("wellbeing", list(zip(months, [3.1, 3.4, 3.9, None], [5, 5, 5, 2], strict=True))),
        ],
        suppressed=True,
        suppression_reason=(
            "Averages over fewer than 5 observations (a month, or the whole period) are withheld"
        ),
    )
    document = render(found, "Calm classroom, grade 7", "Riverside Middle School", "Maya Thompson")
    page = pypdfium2.PdfDocument(document)[0]
    image = page.render(scale=110 / 72).to_pil()
    target = ROOT / "docs" / "outcomes-example.png"
    image.save(target, optimize=True)
    print(target)


if __name__ == "__main__":
    main()
