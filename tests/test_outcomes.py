"""Outcomes for the organization: sessions delivered against planned, attendance and the
average rating per focus area with its monthly trend, for a program and rolled up for an
organization; rating averages are withheld wherever they could single out a person."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from service.core.settings import Settings
from tests.conftest import AppFor
from tests.outcomes_support import Delivered, delivered, observe
from tests.support import Api, invalid_fields, ok


def month_of(session: dict[str, Any]) -> str:
    """The session's month in Edmonton (the test organizations' zone)."""
    from zoneinfo import ZoneInfo

    start = datetime.fromisoformat(session["starts_at"].replace("Z", "+00:00"))
    return start.astimezone(ZoneInfo("America/Edmonton")).strftime("%Y-%m")


async def rate_all(api: Api, work: Delivered, ratings: list[dict[str, int]]) -> None:
    for session, rating in zip(work.sessions, ratings, strict=False):
        await observe(api, session, api.admin, rating, note="Not in any outcome.")


async def outcomes_of(api: Api, program: dict[str, Any], headers=None, **params: str) -> Any:
    return ok(
        await api.client.get(
            f"/v1/programs/{program['id']}/outcomes", params=params, headers=headers or api.admin
        )
    )


async def test_a_group_programs_outcomes_with_exact_averages_and_monthly_trend(api: Api):
    # Six participants, six daily sessions ending yesterday; five rated (stress: 2,3,3,4,5).
    work = await delivered(api, sessions=6, days_ago=6, participants=6, attendance=5)
    stress = [2, 3, 3, 4, 5]
    await rate_all(api, work, [{"stress_anxiety": r, "wellbeing": 4} for r in stress])

    found = await outcomes_of(api, work.program)

    months = sorted({month_of(s) for s in work.sessions[:5]})
    assert found["program_id"] == work.program["id"]
    assert found["period"] == {
        "from": work.program["schedule"]["start_date"],
        "to": work.sessions[-1]["starts_at"][:10],
    }
    assert found["sessions"] == {
        "planned": 6,
        "delivered": 6,
        "cancelled": 0,
        "late_cancelled": 0,
        "no_show": 0,
    }
    assert found["attendance"] == {"expected_per_session": 6.0, "average": 5.0, "rate": 0.8333}
    [stress_area, wellbeing] = found["focus_areas"]
    assert (stress_area["focus_area"], stress_area["observations"], stress_area["average"]) == (
        "stress_anxiety",
        5,
        3.4,
    )
    assert (wellbeing["observations"], wellbeing["average"]) == (5, 4.0)
    if len(months) == 1:
        # All five in one month: the month is the whole period.
        assert stress_area["trend"] == [{"month": months[0], "average": 3.4, "observations": 5}]
        assert (stress_area["first_month_average"], stress_area["last_month_average"]) == (3.4, 3.4)
        assert (found["suppressed"], found["suppression_reason"]) == (False, None)
    else:
        # Split across a month's end: each month has fewer than five observations.
        assert [m["average"] for m in stress_area["trend"]] == [None, None]
        assert sum(m["observations"] for m in stress_area["trend"]) == 5
        assert found["suppressed"] is True


async def test_a_month_with_fewer_observations_than_the_minimum_is_withheld(api: Api):
    # Weekly sessions over about two months: every month holds fewer than five of them.
    work = await delivered(
        api, days_ago=63, participants=8, rrule="FREQ=WEEKLY;COUNT=9", attendance=8
    )
    await rate_all(api, work, [{"wellbeing": 1 + n % 5} for n in range(9)])

    found = await outcomes_of(api, work.program)

    [wellbeing] = [a for a in found["focus_areas"] if a["focus_area"] == "wellbeing"]
    by_month: dict[str, list[int]] = {}
    for n, session in enumerate(work.sessions):
        by_month.setdefault(month_of(session), []).append(1 + n % 5)
    assert wellbeing["observations"] == 9
    assert wellbeing["average"] == round(sum(1 + n % 5 for n in range(9)) / 9, 2)  # 2.78
    assert wellbeing["trend"] == [
        {
            "month": month,
            "average": round(sum(r) / len(r), 2) if len(r) >= 5 else None,
            "observations": len(r),
        }
        for month, r in sorted(by_month.items())
    ]
    assert found["suppressed"] is True
    assert found["suppression_reason"] == (
        "Averages over fewer than 5 observations (a month, or the whole period) are withheld"
    )
    # Counts are always shown.
    assert found["sessions"]["delivered"] == 9
    assert found["attendance"] == {"expected_per_session": 8.0, "average": 8.0, "rate": 1.0}


async def test_an_individual_program_never_shows_a_rating_average(api: Api):
    work = await delivered(api, sessions=6, days_ago=7, participants=1)
    await rate_all(api, work, [{"stress_anxiety": 4}] * 6)

    found = await outcomes_of(api, work.program)

    stress = found["focus_areas"][0]
    assert stress["observations"] == 6
    assert stress["average"] is None
    assert stress["first_month_average"] is None and stress["last_month_average"] is None
    assert all(m["average"] is None for m in stress["trend"])
    assert found["suppressed"] is True
    assert found["suppression_reason"] == (
        "Ratings are averaged only over at least 5 participants; the program has 1, so every "
        "rating average is withheld"
    )
    assert found["attendance"] == {"expected_per_session": 1.0, "average": 1.0, "rate": 1.0}


async def test_the_minimum_group_is_a_setting(
    api: Api, settings: Settings, app_for: AppFor, connection
):
    import httpx
    from sqlalchemy.ext.asyncio import async_sessionmaker

    work = await delivered(api, sessions=2, days_ago=3, participants=2)
    await rate_all(api, work, [{"stress_anxiety": 2}, {"stress_anxiety": 5}])
    lenient = settings.model_copy(update={"outcomes_min_group": 2})
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    transport = httpx.ASGITransport(app=app_for(lenient, factory), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as client:
        response = await client.get(
            f"/v1/programs/{work.program['id']}/outcomes", headers=api.admin
        )
    found = ok(response)
    assert found["focus_areas"][0]["average"] == 3.5
    assert found["suppressed"] is False


async def test_cancellations_no_shows_and_make_ups_are_counted_as_such(api: Api):
    work = await delivered(api, sessions=4, days_ago=4, participants=5, complete=False)
    first, second, third, fourth = work.sessions
    for session, attendance in ((first, 5), (second, 3)):
        ok(
            await api.client.post(
                f"/v1/sessions/{session['id']}/complete",
                json={"attendance": attendance},
                headers=api.admin,
            )
        )
    ok(await api.client.post(f"/v1/sessions/{third['id']}/no-show", headers=api.admin))
    ok(
        await api.client.post(
            f"/v1/sessions/{fourth['id']}/cancel",
            json={"cancelled_by": "provider"},
            headers=api.admin,
        )
    )
    make_up = (datetime.now(UTC) + timedelta(days=10)).replace(hour=17, minute=0, second=0)
    ok(
        await api.client.post(
            f"/v1/sessions/{fourth['id']}/make-up",
            json={"starts_at": make_up.isoformat()},
            headers=api.admin,
        ),
        201,
    )

    found = await outcomes_of(api, work.program)

    # The cancelled session and its make-up (to come, in the period) count once as planned.
    assert found["period"]["to"] == str(make_up.date())
    assert found["sessions"] == {
        "planned": 4,
        "delivered": 2,
        "cancelled": 1,
        "late_cancelled": 0,
        "no_show": 1,
    }
    # Expected 5 per delivered session; 8 of 10 came.
    assert found["attendance"] == {"expected_per_session": 5.0, "average": 4.0, "rate": 0.8}


async def test_a_period_narrows_everything_and_must_be_in_order(api: Api):
    work = await delivered(api, sessions=6, days_ago=6, participants=5)
    await rate_all(api, work, [{"wellbeing": 5}] * 6)
    first_day = date.fromisoformat(work.program["schedule"]["start_date"])
    found = await outcomes_of(
        api, work.program, **{"from": str(first_day), "to": str(first_day + timedelta(days=1))}
    )
    assert found["sessions"]["planned"] == 2
    assert found["focus_areas"][1]["observations"] == 2
    response = await api.client.get(
        f"/v1/programs/{work.program['id']}/outcomes",
        params={"from": str(first_day), "to": str(first_day - timedelta(days=1))},
        headers=api.admin,
    )
    assert invalid_fields(response) == ["to"]


async def test_an_organizations_rollup_adds_up_its_programs(api: Api):
    org = await api.make_org()
    one = await delivered(api, org=org, sessions=3, days_ago=5, participants=3, attendance=3)
    two = await delivered(api, org=org, sessions=3, days_ago=4, participants=4, attendance=2)
    await rate_all(api, one, [{"stress_anxiety": 2}, {"stress_anxiety": 3}, {"stress_anxiety": 4}])
    await rate_all(api, two, [{"stress_anxiety": 5}, {"stress_anxiety": 5}, {"wellbeing": 1}])
    other = await delivered(api, sessions=2, days_ago=3, participants=9)  # another organization
    await rate_all(api, other, [{"stress_anxiety": 1}] * 2)
    today = datetime.now(UTC).date()

    found = ok(
        await api.client.get(
            f"/v1/organizations/{org['id']}/outcomes",
            params={"from": str(today - timedelta(days=30)), "to": str(today)},
            headers=api.admin,
        )
    )

    assert found["organization_id"] == org["id"]
    assert found["programs"] == 2
    assert found["sessions"] == {
        "planned": 6,
        "delivered": 6,
        "cancelled": 0,
        "late_cancelled": 0,
        "no_show": 0,
    }
    # 3 x 3 + 3 x 2 = 15 present of 3 x 3 + 3 x 4 = 21 expected.
    assert found["attendance"] == {"expected_per_session": 3.5, "average": 2.5, "rate": 0.7143}
    stress = next(a for a in found["focus_areas"] if a["focus_area"] == "stress_anxiety")
    wellbeing = next(a for a in found["focus_areas"] if a["focus_area"] == "wellbeing")
    # Seven participants in all; five stress ratings (2, 3, 4, 5, 5); one wellbeing rating.
    assert (stress["observations"], stress["average"]) == (5, 3.8)
    assert (wellbeing["observations"], wellbeing["average"]) == (1, None)
    assert found["suppressed"] is True


@pytest.mark.parametrize("who", ["coordinator", "other coordinator", "finance", "therapist"])
async def test_outcomes_are_the_organizations_and_the_providers_alone(api: Api, who: str):
    work = await delivered(api, sessions=1, days_ago=2)
    other_org = await api.make_org()
    headers = {
        "coordinator": await api.coordinator(work.org["id"]),
        "other coordinator": await api.coordinator(other_org["id"]),
        "finance": await api.key("finance"),
        "therapist": work.therapist_key,
    }[who]
    today = datetime.now(UTC).date()
    statuses = [
        (await api.client.get(path, params=params, headers=headers)).status_code
        for path, params in (
            (f"/v1/programs/{work.program['id']}/outcomes", {}),
            (f"/v1/programs/{work.program['id']}/outcomes.pdf", {}),
            (
                f"/v1/organizations/{work.org['id']}/outcomes",
                {"from": str(today - timedelta(days=7)), "to": str(today)},
            ),
        )
    ]
    assert statuses == ([200, 200, 200] if who == "coordinator" else [404, 404, 404])


def pdf_text_and_image(document: bytes) -> tuple[str, Any, int]:
    """The PDF's text (pypdf), its first page rendered at 100 dpi (pypdfium2), and its pages."""
    import io

    import pypdfium2
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(document))
    text = "\n".join(page.extract_text() for page in reader.pages)
    rendered = pypdfium2.PdfDocument(document)
    image = rendered[0].render(scale=100 / 72).to_pil().convert("RGB")
    return text, image, len(reader.pages)


def pixels_near(image: Any, color: tuple[int, int, int], tolerance: int = 12) -> int:
    colors = image.getcolors(image.width * image.height)
    return sum(
        count
        for count, pixel in colors
        if all(abs(a - b) <= tolerance for a, b in zip(pixel, color, strict=True))
    )


async def test_the_pdf_report_carries_the_same_figures_and_a_chart_per_focus_area(api: Api):
    from service.reports.outcomes_pdf import BAR, WITHHELD, percent, two

    work = await delivered(
        api, sessions=6, days_ago=6, participants=6, attendance=5, title="Calm classroom 7B"
    )
    secret = "Pupil cried at the drum; do not share"
    await rate_all(api, work, [{"stress_anxiety": r, "wellbeing": 4} for r in (2, 3, 3, 4, 5)])
    await observe(api, work.sessions[5], api.admin, {"stress_anxiety": 4}, secret)
    found = await outcomes_of(api, work.program)

    response = await api.client.get(
        f"/v1/programs/{work.program['id']}/outcomes.pdf", headers=api.admin
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    text, image, pages = pdf_text_and_image(response.content)

    assert pages == 1
    flat = " ".join(text.split())
    period = found["period"]
    for expected in (
        work.org["name"],
        "Calm classroom 7B",
        work.therapist["name"],
        f"{period['from']} to {period['to']}",
        "6 delivered of 6 planned (cancelled 0, late cancelled 0, no-show 0)",
        f"average {two(found['attendance']['average'])} of 6.00 expected per session, rate "
        f"{percent(found['attendance']['rate'])}",
        "Stress and anxiety",
        "Wellbeing",
    ):
        assert expected in flat, (expected, flat)
    for area in found["focus_areas"]:
        assert f"average {two(area['average'])} over {area['observations']} observations" in flat, (
            flat
        )
    assert found["focus_areas"][0]["average"] == 3.5  # 2, 3, 3, 4, 5, 4
    assert "average 3.50 over 6 observations" in flat
    assert "83.3%" in flat
    assert "drum" not in flat and "cried" not in flat
    # The charts are drawn: bars in the chart colour (no month withheld here, or grey if the
    # sessions straddle a month's end).
    drawn = pixels_near(image, BAR) + pixels_near(image, WITHHELD)
    assert drawn > 1000


async def test_the_pdf_of_an_individual_program_withholds_every_average(api: Api):
    from service.reports.outcomes_pdf import BAR, WITHHELD

    work = await delivered(api, sessions=3, days_ago=4, participants=1)
    await rate_all(api, work, [{"wellbeing": 5}] * 3)
    response = await api.client.get(
        f"/v1/programs/{work.program['id']}/outcomes.pdf", headers=api.admin
    )
    text, image, _ = pdf_text_and_image(response.content)
    flat = " ".join(text.split())
    assert "average withheld over 3 observations" in flat
    assert "the program has 1, so every rating average is withheld" in flat
    assert pixels_near(image, WITHHELD) > 500
    assert pixels_near(image, BAR) == 0


async def test_an_organizations_rollup_never_singles_out_the_one_program_rated_on_an_area(
    api: Api,
):
    """Seven participants in all, but wellbeing is rated in the individual program alone: its
    five ratings describe one person, so that average is withheld; stress (rated in the group
    of six) is shown."""
    org = await api.make_org()
    solo = await delivered(api, org=org, sessions=5, days_ago=6, participants=1)
    group = await delivered(api, org=org, sessions=5, days_ago=6, participants=6, attendance=6)
    await rate_all(api, solo, [{"wellbeing": 5}] * 5)
    await rate_all(api, group, [{"stress_anxiety": 3}] * 5)
    today = datetime.now(UTC).date()

    found = ok(
        await api.client.get(
            f"/v1/organizations/{org['id']}/outcomes",
            params={"from": str(today - timedelta(days=30)), "to": str(today)},
            headers=api.admin,
        )
    )

    by_area = {a["focus_area"]: a for a in found["focus_areas"]}
    assert (by_area["wellbeing"]["observations"], by_area["wellbeing"]["average"]) == (5, None)
    assert (by_area["stress_anxiety"]["observations"], by_area["stress_anxiety"]["average"]) == (
        5,
        3.0,
    )
    assert found["suppressed"] is True
    assert found["suppression_reason"].startswith(
        "Ratings are averaged only over at least 5 participants; averages whose ratings come "
        "from programs with fewer participants in all are withheld"
    )
