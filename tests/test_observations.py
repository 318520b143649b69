"""Observations: the delivering therapist (or an admin) rates a completed session on the
program's focus areas and may keep a clinical note. The note is encrypted at rest, readable only
by them, and every read of it is in the audit trail; nobody else learns that it exists."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from service.core import encryption
from service.core.settings import Settings
from service.programs import observations
from tests.conftest import AppFor
from tests.outcomes_support import delivered, observe
from tests.programs_support import sessions_of
from tests.support import Api, invalid_fields, ok, problem

NOTE = "Group settled quickly.\nDrumming circle: calmer after 10 minutes.\tFollow up next week."


async def audit_rows(db: AsyncSession, session_id: str) -> list[dict[str, Any]]:
    """The observation's audit rows, oldest first (found through its session)."""
    rows = await db.execute(
        text(
            "SELECT a.action, a.actor_key_id, a.actor_role, a.before, a.after "
            "FROM audit_events a JOIN observations o ON o.id = a.entity_id "
            "WHERE o.session_id = :session ORDER BY a.created_at, a.action"
        ),
        {"session": session_id},
    )
    return [dict(row._mapping) for row in rows]


async def key_id(api: Api, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID(ok(await api.client.get("/v1/me", headers=headers))["api_key_id"])


async def test_the_delivering_therapist_records_an_observation_and_reads_it_back(
    api: Api, db: AsyncSession
):
    work = await delivered(api)
    session = work.sessions[0]

    recorded = await observe(
        api, session, work.therapist_key, {"stress_anxiety": 2, "wellbeing": 4}, NOTE
    )
    read = ok(
        await api.client.get(
            f"/v1/sessions/{session['id']}/observation", headers=work.therapist_key
        )
    )

    assert recorded == read
    assert read["ratings"] == {"stress_anxiety": 2, "wellbeing": 4}
    assert read["note"] == NOTE
    assert (read["session_id"], read["program_id"], read["therapist_id"]) == (
        session["id"],
        work.program["id"],
        work.therapist["id"],
    )


async def test_each_write_is_audited_with_the_previous_ratings_and_never_the_note(
    api: Api, db: AsyncSession
):
    work = await delivered(api)
    session = work.sessions[0]
    await observe(api, session, work.therapist_key, {"stress_anxiety": 2}, NOTE)
    await observe(
        api, session, work.therapist_key, {"stress_anxiety": 3, "wellbeing": 5}, NOTE, status=200
    )
    await observe(api, session, api.admin, {"stress_anxiety": 3, "wellbeing": 5}, status=200)

    rows = await audit_rows(db, session["id"])
    assert [r["action"] for r in rows] == [
        "observation.recorded",
        "observation.updated",
        "observation.updated",
    ]
    first, second, third = rows
    assert first["before"] is None
    assert first["after"]["ratings"] == {"stress_anxiety": 2}
    assert first["after"]["note_present"] is True
    assert second["before"]["ratings"] == {"stress_anxiety": 2}
    assert second["after"]["ratings"] == {"stress_anxiety": 3, "wellbeing": 5}
    # The note did not change: its timestamp neither.
    assert second["before"]["note_changed_at"] == second["after"]["note_changed_at"]
    # The admin removed the note: audited as such, by the admin.
    assert (
        third["actor_role"],
        third["before"]["note_present"],
        third["after"]["note_present"],
    ) == (
        "admin",
        True,
        False,
    )
    assert third["after"]["note_changed_at"] != third["before"]["note_changed_at"]
    everything = str(rows)
    assert "Drumming" not in everything and "settled" not in everything


async def test_every_read_of_an_observation_is_audited_with_who_read_it(api: Api, db: AsyncSession):
    work = await delivered(api)
    session = work.sessions[0]
    await observe(api, session, work.therapist_key, {"wellbeing": 4}, NOTE)
    for headers in (work.therapist_key, api.admin, work.therapist_key):
        ok(await api.client.get(f"/v1/sessions/{session['id']}/observation", headers=headers))

    reads = [r for r in await audit_rows(db, session["id"]) if r["action"] == "observation.read"]
    therapist, admin = await key_id(api, work.therapist_key), await key_id(api, api.admin)
    assert [(r["actor_key_id"], r["actor_role"]) for r in reads] == [
        (therapist, "therapist"),
        (admin, "admin"),
        (therapist, "therapist"),
    ]
    assert [r["after"] for r in reads] == [{"session_id": session["id"], "note_present": True}] * 3


async def test_ratings_must_be_one_to_five_for_the_programs_own_focus_areas(api: Api):
    work = await delivered(api)
    path = f"/v1/sessions/{work.sessions[0]['id']}/observation"

    async def fields(body: dict[str, Any]) -> list[str]:
        return invalid_fields(await api.client.put(path, json=body, headers=work.therapist_key))

    assert await fields({"ratings": {"stress_anxiety": 0}}) == ["ratings.stress_anxiety"]
    assert await fields({"ratings": {"wellbeing": 6}}) == ["ratings.wellbeing"]
    assert await fields({"ratings": {"happiness": 3}}) == ["ratings.happiness.[key]"]
    # A focus area that exists, but not in this program.
    assert await fields({"ratings": {"focus_attention": 3, "social_confidence": 2}}) == [
        "ratings.focus_attention",
        "ratings.social_confidence",
    ]
    assert await fields({"ratings": {"wellbeing": 3}, "note": "x" * 10_001}) == ["note"]
    assert await fields({"ratings": {"wellbeing": 3}, "note": "bell\x07"}) == ["note"]
    assert await fields({"ratings": {"wellbeing": 3}, "mood": "good"}) == ["mood"]
    ok(
        await api.client.put(
            path,
            json={"ratings": {"wellbeing": 3}, "note": "y" * 10_000},
            headers=work.therapist_key,
        ),
        201,
    )


async def test_only_a_completed_session_has_an_observation(api: Api):
    work = await delivered(api, complete=False)
    scheduled, no_show = work.sessions
    ok(await api.client.post(f"/v1/sessions/{no_show['id']}/no-show", headers=api.admin))
    for session, status in ((scheduled, "scheduled"), (no_show, "no_show")):
        for headers in (work.therapist_key, api.admin):
            body = problem(
                await api.client.put(
                    f"/v1/sessions/{session['id']}/observation",
                    json={"ratings": {"wellbeing": 3}},
                    headers=headers,
                ),
                409,
            )
            assert body["session_status"] == status


async def test_the_therapist_records_within_the_window_and_an_admin_any_time_after(api: Api):
    work = await delivered(api, days_ago=20)  # ended 19 and 20 days ago; the window is 14
    late = work.sessions[0]
    body = problem(
        await api.client.put(
            f"/v1/sessions/{late['id']}/observation",
            json={"ratings": {"wellbeing": 3}},
            headers=work.therapist_key,
        ),
        409,
    )
    assert "within 14 days" in body["detail"]
    await observe(api, late, api.admin, {"wellbeing": 3}, NOTE)
    # ... and the therapist still reads it back.
    read = ok(
        await api.client.get(f"/v1/sessions/{late['id']}/observation", headers=work.therapist_key)
    )
    assert read["note"] == NOTE


async def test_nobody_else_learns_of_an_observation_or_may_write_one(api: Api):
    work = await delivered(api)
    session = work.sessions[0]
    await observe(api, session, work.therapist_key, {"wellbeing": 4}, NOTE)
    other_therapist = await api.therapist_key((await api.make_therapist())["id"])
    outsiders = {
        "coordinator of the organization": await api.coordinator(work.org["id"]),
        "finance": await api.key("finance"),
        "another therapist": other_therapist,
    }
    path = f"/v1/sessions/{session['id']}/observation"
    for who, headers in outsiders.items():
        got = await api.client.get(path, headers=headers)
        put = await api.client.put(path, json={"ratings": {"wellbeing": 1}}, headers=headers)
        assert (who, got.status_code, put.status_code) == (who, 404, 404)
        assert "Drumming" not in got.text + put.text
    # An unknown session, and a session without an observation yet, are 404 too.
    assert (
        await api.client.get(f"/v1/sessions/{uuid.uuid4()}/observation", headers=api.admin)
    ).status_code == 404
    assert (
        await api.client.get(
            f"/v1/sessions/{work.sessions[1]['id']}/observation", headers=api.admin
        )
    ).status_code == 404
    unchanged = ok(await api.client.get(path, headers=api.admin))
    assert unchanged["ratings"] == {"wellbeing": 4}


async def test_a_substitute_observes_the_sessions_they_delivered_and_only_those(api: Api):
    work = await delivered(api, complete=False)
    first, second = work.sessions
    substitute = await api.make_therapist()
    substitute_key = await api.therapist_key(substitute["id"])
    # Sessions in the past cannot be substituted through the API: the admin gives the second
    # session to the substitute in the database, as happened on the day.
    # (Substitution is for scheduled sessions; the record is what matters here.)
    await _hand_over(api, second, substitute["id"])
    for session, key in ((first, work.therapist_key), (second, substitute_key)):
        ok(
            await api.client.post(
                f"/v1/sessions/{session['id']}/complete", json={"attendance": 1}, headers=key
            )
        )
    await observe(api, first, work.therapist_key, {"wellbeing": 2}, "first note")
    await observe(api, second, substitute_key, {"wellbeing": 5}, "second note")

    assert (
        ok(
            await api.client.get(f"/v1/sessions/{second['id']}/observation", headers=substitute_key)
        )["note"]
        == "second note"
    )
    for session, key in ((first, substitute_key), (second, work.therapist_key)):
        assert (
            await api.client.get(f"/v1/sessions/{session['id']}/observation", headers=key)
        ).status_code == 404


async def _hand_over(api: Api, session: dict[str, Any], therapist_id: str) -> None:
    response = await api.client.post(
        f"/v1/sessions/{session['id']}/substitute",
        json={"therapist_id": therapist_id, "override": True},
        headers=api.admin,
    )
    assert response.status_code == 200, response.text


async def test_the_note_is_stored_encrypted_and_no_column_of_any_table_shows_it(
    api: Api, db: AsyncSession
):
    work = await delivered(api)
    marker = f"note-marker-{uuid.uuid4().hex}"
    await observe(api, work.sessions[0], work.therapist_key, {"wellbeing": 4}, marker)
    ok(
        await api.client.get(
            f"/v1/sessions/{work.sessions[0]['id']}/observation", headers=work.therapist_key
        )
    )

    stored = (
        await db.execute(
            text("SELECT id, note_ciphertext FROM observations WHERE session_id = :s"),
            {"s": work.sessions[0]["id"]},
        )
    ).one()
    assert stored.note_ciphertext.startswith("enc1:")
    assert await tables_containing(db, marker) == []
    keyring = encryption.keyring(Settings(database_url="postgresql://unused"))
    assert observations.open_note(keyring, stored.id, stored.note_ciphertext) == marker


async def tables_containing(db: AsyncSession, needle: str) -> list[str]:
    """Every table of the database whose rows, as text (every column), contain `needle`: what
    a search of a dump would find."""
    tables = (
        await db.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        )
    ).scalars()
    found = []
    for table in list(tables):
        hit = await db.execute(
            text(
                f'SELECT 1 FROM public."{table}" AS t WHERE strpos(CAST(t AS text), :n) > 0 LIMIT 1'
            ),
            {"n": needle},
        )
        if hit.first() is not None:
            found.append(table)
    return found


async def test_notes_still_open_after_the_key_is_rotated_and_are_resealed_on_write(
    api: Api, settings: Settings, connection: AsyncConnection, app_for: AppFor, db: AsyncSession
):
    work = await delivered(api)
    session = work.sessions[0]
    await observe(api, session, work.therapist_key, {"wellbeing": 4}, NOTE)
    old = encryption.DEVELOPMENT_ONLY_KEY  # the suite's settings set no key
    new = "a-new-key-for-rotation-0123456789-abcdefghij"
    rotated = settings.model_copy(update={"secret_key": SecretStr(f"{new},{old}")})
    factory = async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    transport = httpx.ASGITransport(app=app_for(rotated, factory), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble.test") as client:
        path = f"/v1/sessions/{session['id']}/observation"
        assert ok(await client.get(path, headers=work.therapist_key))["note"] == NOTE
        changed = f"{NOTE}\nAdded after the rotation."
        ok(
            await client.put(
                path, json={"ratings": {"wellbeing": 4}, "note": changed}, headers=api.admin
            )
        )
        assert ok(await client.get(path, headers=api.admin))["note"] == changed

    ciphertext = (
        await db.execute(
            text("SELECT note_ciphertext FROM observations WHERE session_id = :s"),
            {"s": session["id"]},
        )
    ).scalar_one()
    assert encryption.Keyring((new, old)).is_primary(ciphertext)
    # Without the new key, the resealed note does not open (nothing else can read it either).
    assert ciphertext.split(":")[1] == encryption.key_id(new)


async def test_a_completed_sessions_observation_goes_with_its_session_list_untouched(api: Api):
    """Sessions and their lists never carry the note or the ratings."""
    work = await delivered(api)
    marker = f"note-marker-{uuid.uuid4().hex}"
    await observe(api, work.sessions[0], work.therapist_key, {"wellbeing": 4}, marker)
    for response in (
        await api.client.get(f"/v1/sessions/{work.sessions[0]['id']}", headers=api.admin),
        await api.client.get(
            "/v1/sessions", params={"program_id": work.program["id"]}, headers=api.admin
        ),
        await api.client.get("/v1/me/sessions", headers=work.therapist_key),
        await api.client.get("/v1/audit-events", params={"limit": "200"}, headers=api.admin),
    ):
        assert response.status_code == 200
        assert marker not in response.text
    assert len(await sessions_of(api, work.program["id"])) == 2


async def test_a_therapists_sessions_say_whether_their_observation_is_recorded(api: Api):
    work = await delivered(api)
    await observe(api, work.sessions[0], work.therapist_key, {"wellbeing": 4})
    page = ok(await api.client.get("/v1/me/sessions", headers=work.therapist_key))
    assert [(s["id"], s["observation_recorded"]) for s in page["data"]] == [
        (work.sessions[0]["id"], True),
        (work.sessions[1]["id"], False),
    ]


async def test_observations_due_are_completed_unobserved_sessions_inside_the_window(api: Api):
    from datetime import datetime, timedelta

    org = await api.make_org()
    # Every other day from 17 days ago (17, 15, 13, 11 and 9 days ago): the first two ended
    # more than 14 days ago and the others less, whatever the time of day (a session exactly
    # 14 days ago would leave its window at its own end time, later today).
    work = await delivered(
        api, org=org, sessions=5, days_ago=17, rrule="FREQ=DAILY;INTERVAL=2;COUNT=5"
    )
    recent = await delivered(api, org=org, sessions=3, days_ago=3, complete=False)
    # The same therapist also delivers `recent`: hand its sessions over, then record two of
    # them (one completed, one a no-show); the third stays scheduled.
    for session in recent.sessions:
        response = await api.client.post(
            f"/v1/sessions/{session['id']}/substitute",
            json={"therapist_id": work.therapist["id"], "override": True},
            headers=api.admin,
        )
        assert response.status_code == 200, response.text
    ok(
        await api.client.post(
            f"/v1/sessions/{recent.sessions[0]['id']}/complete",
            json={"attendance": 1},
            headers=work.therapist_key,
        )
    )
    ok(
        await api.client.post(
            f"/v1/sessions/{recent.sessions[1]['id']}/no-show", headers=work.therapist_key
        )
    )
    await observe(api, work.sessions[2], work.therapist_key, {"wellbeing": 3})

    due = ok(await api.client.get("/v1/me/observations-due", headers=work.therapist_key))

    expected = [work.sessions[3], work.sessions[4], recent.sessions[0]]
    assert [s["id"] for s in due["data"]] == [s["id"] for s in expected]
    assert {s["observation_recorded"] for s in due["data"]} == {False}
    for listed, session in zip(due["data"], expected, strict=True):
        ends = datetime.fromisoformat(session["ends_at"].replace("Z", "+00:00"))
        listed_due = datetime.fromisoformat(listed["observation_due_by"].replace("Z", "+00:00"))
        assert listed_due == ends + timedelta(days=14)
    # Paged like every list.
    first = ok(
        await api.client.get(
            "/v1/me/observations-due", params={"limit": "2"}, headers=work.therapist_key
        )
    )
    rest = ok(
        await api.client.get(
            "/v1/me/observations-due",
            params={"limit": "2", "cursor": first["next_cursor"]},
            headers=work.therapist_key,
        )
    )
    assert [s["id"] for s in first["data"] + rest["data"]] == [s["id"] for s in expected]
    assert rest["next_cursor"] is None
    for headers in (api.admin, await api.coordinator(org["id"])):
        assert (await api.client.get("/v1/me/observations-due", headers=headers)).status_code == 403


async def test_ending_a_rotation_reseals_every_note_under_the_new_key(api: Api, db: AsyncSession):
    work = await delivered(api, sessions=3)
    for n, session in enumerate(work.sessions):
        await observe(api, session, work.therapist_key, {"wellbeing": 3}, f"{NOTE} {n}")
    await observe(api, work.sessions[2], work.therapist_key, {"wellbeing": 3}, None, status=200)
    old = encryption.DEVELOPMENT_ONLY_KEY
    new = "the-next-key-after-rotation-0123456789-abcdef"

    resealed = await observations.reseal_notes(db, encryption.Keyring((new, old)))
    again = await observations.reseal_notes(db, encryption.Keyring((new, old)))

    assert (resealed, again) == (2, 0)
    only_new = encryption.Keyring((new,))
    rows = (
        await db.execute(
            text(
                "SELECT o.id, o.note_ciphertext FROM observations o "
                "JOIN sessions s ON s.id = o.session_id "
                "WHERE o.program_id = :p ORDER BY s.starts_at"
            ),
            {"p": work.program["id"]},
        )
    ).all()
    assert [
        None
        if r.note_ciphertext is None
        else observations.open_note(only_new, r.id, r.note_ciphertext)
        for r in rows
    ] == [f"{NOTE} 0", f"{NOTE} 1", None]


async def test_finance_reads_the_audit_trail_without_the_clinical_records(api: Api):
    work = await delivered(api)
    await observe(api, work.sessions[0], work.therapist_key, {"wellbeing": 2}, NOTE)
    ok(
        await api.client.get(
            f"/v1/sessions/{work.sessions[0]['id']}/observation", headers=api.admin
        )
    )
    params = {"entity_type": "observation", "limit": "200"}
    finance = ok(
        await api.client.get("/v1/audit-events", params=params, headers=await api.key("finance"))
    )
    admin = ok(await api.client.get("/v1/audit-events", params=params, headers=api.admin))
    assert finance["data"] == []
    assert sorted(e["action"] for e in admin["data"]) == [
        "observation.read",
        "observation.recorded",
    ]
