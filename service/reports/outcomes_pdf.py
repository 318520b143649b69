"""The outcomes report as a PDF a school board or an HR team can read: one page with the
organization, program, period, therapist, sessions delivered against planned, attendance and a
small bar chart per focus area of its monthly average rating. The figures are those of
`outcomes.program_outcomes` (the same suppression); no note is ever read here.

Drawn with fpdf2 (pure Python, no system libraries): its core Helvetica font covers Latin-1, so
a character outside it is written as "?".
"""

from __future__ import annotations

import uuid
from datetime import date

from fpdf import FPDF
from sqlalchemy.ext.asyncio import AsyncSession

from models.organizations import Organization
from models.outcomes import FocusAreaOutcome, ProgramOutcomes
from models.therapists import Therapist
from service.core.auth import Principal
from service.reports import outcomes

FOCUS_AREA_LABELS = {
    "stress_anxiety": "Stress and anxiety",
    "focus_attention": "Focus and attention",
    "social_confidence": "Social confidence",
    "emotional_processing": "Emotional processing",
    "wellbeing": "Wellbeing",
}
RATING_MAX = 5
BAR = (46, 110, 160)  # the chart's bars
WITHHELD = (228, 228, 228)  # a month whose average is withheld
INK = (40, 40, 40)


def _latin1(value: str) -> str:
    return value.encode("latin-1", "replace").decode("latin-1")


def two(value: float | None) -> str:
    """How the PDF writes an average: two decimals, or "withheld"."""
    return "withheld" if value is None else f"{value:.2f}"


def percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


async def program_report(
    db: AsyncSession,
    principal: Principal,
    program_id: uuid.UUID,
    *,
    start: date | None,
    end: date | None,
    min_group: int,
) -> tuple[bytes, str]:
    """The PDF and a file name for it."""
    found, program = await outcomes.program_outcomes(
        db, principal, program_id, start=start, end=end, min_group=min_group
    )
    org = await db.get(Organization, program.organization_id)
    therapist = await db.get(Therapist, program.therapist_id) if program.therapist_id else None
    assert org is not None
    document = render(found, program.title, org.name, therapist.name if therapist else None)
    return document, f"outcomes-{found.period.start}-{found.period.end}.pdf"


def render(
    found: ProgramOutcomes, program_title: str, organization: str, therapist: str | None
) -> bytes:
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_creator("Ensemble")
    pdf.set_title(_latin1(f"Program outcomes: {program_title}"))
    pdf.add_page()
    pdf.set_text_color(*INK)
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, "Program outcomes", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 11)
    period = found.period
    for label, value in (
        ("Organization", organization),
        ("Program", program_title),
        ("Period", f"{period.start} to {period.end}"),
        ("Therapist", therapist or "not staffed"),
    ):
        _line(pdf, label, value)
    pdf.ln(2)
    sessions, attendance = found.sessions, found.attendance
    _line(
        pdf,
        "Sessions",
        f"{sessions.delivered} delivered of {sessions.planned} planned "
        f"(cancelled {sessions.cancelled}, late cancelled {sessions.late_cancelled}, "
        f"no-show {sessions.no_show})",
    )
    _line(
        pdf,
        "Attendance",
        f"average {two(attendance.average)} of {two(attendance.expected_per_session)} expected "
        f"per session, rate {percent(attendance.rate)}",
    )
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 8, "Ratings by focus area (1 low to 5 high)", new_x="LMARGIN", new_y="NEXT")
    top = pdf.get_y() + 1
    width, height, gap = 88.0, 48.0, 6.0
    for index, area in enumerate(found.focus_areas):
        column, row = index % 2, index // 2
        x = pdf.l_margin + column * (width + gap)
        y = top + row * (height + gap)
        if y + height > pdf.h - pdf.b_margin - 20:
            pdf.add_page()
            top, y = pdf.t_margin, pdf.t_margin
        _chart(pdf, area, x, y, width, height)
    rows = (len(found.focus_areas) + 1) // 2
    pdf.set_xy(pdf.l_margin, top + rows * (height + gap))
    pdf.set_font("Helvetica", "I", 9)
    notes = [
        "Counts are always shown. A rating average is shown only over at least "
        "the minimum group; otherwise it reads 'withheld' (grey bars).",
        "No participant is identified, and no clinical note is part of this report.",
    ]
    if found.suppression_reason:
        notes.insert(0, f"Withheld: {found.suppression_reason}.")
    for note in notes:
        pdf.multi_cell(0, 4.5, _latin1(note), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _line(pdf: FPDF, label: str, value: str) -> None:
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(32, 6.5, f"{label}:")
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(0, 6.5, _latin1(value), new_x="LMARGIN", new_y="NEXT")


def _chart(pdf: FPDF, area: FocusAreaOutcome, x: float, y: float, w: float, h: float) -> None:
    """A bar per month (its average rating), grey where withheld, on a 0-5 axis."""
    label = FOCUS_AREA_LABELS.get(area.focus_area.value, area.focus_area.value)
    pdf.set_font("Helvetica", "B", 10)
    pdf.set_xy(x, y)
    pdf.cell(w, 5, label)
    pdf.set_font("Helvetica", "", 8)
    pdf.set_xy(x, y + 5)
    pdf.cell(
        w,
        4,
        f"average {two(area.average)} over {area.observations} observations; first month "
        f"{two(area.first_month_average)}, last {two(area.last_month_average)}",
    )
    left, bottom = x + 6, y + h - 5
    plot_w, plot_h = w - 8, h - 17
    pdf.set_draw_color(*INK)
    pdf.set_line_width(0.3)
    pdf.line(left, bottom, left + plot_w, bottom)
    pdf.line(left, bottom, left, bottom - plot_h)
    pdf.set_font("Helvetica", "", 6)
    for tick in range(RATING_MAX + 1):
        ty = bottom - plot_h * tick / RATING_MAX
        pdf.set_xy(x, ty - 1.5)
        pdf.cell(5, 3, str(tick), align="R")
    months = area.trend
    if not months:
        pdf.set_xy(left, bottom - plot_h / 2)
        pdf.cell(plot_w, 4, "no observations in the period", align="C")
        return
    slot = plot_w / len(months)
    bar = max(slot * 0.7, 0.5)
    for index, month in enumerate(months):
        bx = left + index * slot + (slot - bar) / 2
        if month.average is None:
            # A pale band across the whole axis, labelled: no height that could read as a value.
            pdf.set_fill_color(*WITHHELD)
            pdf.rect(bx, bottom - plot_h, bar, plot_h, style="F")
            pdf.set_xy(bx, bottom - plot_h / 2 - 1.5)
            pdf.cell(bar, 3, "withheld" if bar >= 9 else "-", align="C")
        else:
            pdf.set_fill_color(*BAR)
            bar_h = plot_h * month.average / RATING_MAX
            pdf.rect(bx, bottom - bar_h, bar, bar_h, style="F")
        if len(months) <= 12 or index in (0, len(months) - 1):
            pdf.set_xy(left + index * slot, bottom + 0.5)
            pdf.cell(slot, 3, month.month[2:] if len(months) > 6 else month.month, align="C")
