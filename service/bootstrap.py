"""First-run chores for the CLI: minting keys before any key exists, and the demo data set."""

from __future__ import annotations

import uuid
from datetime import time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from models.api_keys import ApiKeyCreate
from models.base import utcnow
from models.offerings import OfferingCreate
from models.organizations import LocationCreate, Organization, OrganizationCreate
from models.programs import (
    AssignTherapist,
    ConfirmProgram,
    Modality,
    Program,
    ProgramCreate,
    Schedule,
)
from models.therapists import AvailabilityWindow, Therapist, TherapistCreate
from models.types import FocusArea, OfferingFormat, OrganizationKind, Role, Weekday
from service.catalog import api_keys, offerings, organizations, therapists
from service.core import encryption
from service.core.auth import SYSTEM
from service.core.db import make_async_engine, make_session_factory, transaction
from service.core.settings import Settings
from service.integrations import webhook_endpoints
from service.programs import booking, observations, staffing

LOCAL_ADMIN_KEY_FILE = "admin-key"


async def create_key(
    settings: Settings,
    *,
    role: str,
    name: str,
    organization_id: uuid.UUID | None = None,
    therapist_id: uuid.UUID | None = None,
) -> str:
    """Mint a key as the provider itself, so a new install can create its first admin."""
    assert settings.database_url
    engine = make_async_engine(settings.database_url, pool_size=1)
    try:
        async with transaction(make_session_factory(engine)) as db:
            data = ApiKeyCreate(
                name=name,
                role=Role(role),
                organization_id=organization_id,
                therapist_id=therapist_id,
            )
            created = await api_keys.create(db, SYSTEM, data)
            return created.key
    finally:
        await engine.dispose()


async def reencrypt_secrets(settings: Settings) -> dict[str, int]:
    """After putting a new key first in ENSEMBLE_SECRET_KEY: re-encrypt what the older keys
    encrypted (webhook signing secrets, clinical notes), so they can be removed. Stored replays
    are not touched: they expire in a day. Answers how many of each were re-encrypted."""
    assert settings.database_url
    engine = make_async_engine(settings.database_url, pool_size=1)
    keyring = encryption.keyring(settings)
    try:
        async with transaction(make_session_factory(engine)) as db:
            return {
                "reencrypted_webhook_endpoints": await webhook_endpoints.reseal_secrets(
                    db, keyring
                ),
                "reencrypted_observation_notes": await observations.reseal_notes(db, keyring),
            }
    finally:
        await engine.dispose()


async def local_admin_key(settings: Settings) -> str:
    """The development admin key kept in .ensemble/admin-key (mode 600), minted when missing
    or revoked, so `make run` can print a working key every time."""
    assert settings.database_url
    path = settings.data_dir / LOCAL_ADMIN_KEY_FILE
    engine = make_async_engine(settings.database_url, pool_size=1)
    try:
        async with transaction(make_session_factory(engine)) as db:
            if path.exists():
                secret = path.read_text().strip()
                if await api_keys.is_active(db, secret):
                    return secret
            created = await api_keys.create(
                db, SYSTEM, ApiKeyCreate(name="local admin (make run)", role=Role.admin)
            )
    finally:
        await engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(created.key + "\n")
    return created.key


def _windows(days: str, start: str, end: str) -> list[AvailabilityWindow]:
    return [AvailabilityWindow(weekday=Weekday(d), start=start, end=end) for d in days.split(",")]


async def load_demo_if_empty(settings: Settings) -> bool:
    """A school, a clinic and a workplace in Alberta and New York, three therapists, two
    offerings and two programs from next week (one confirmed, one waiting for a therapist).
    Returns False (and writes nothing) when any organization already exists."""
    assert settings.database_url
    engine = make_async_engine(settings.database_url, pool_size=1)
    try:
        async with transaction(make_session_factory(engine)) as db:
            if (await db.execute(select(func.count()).select_from(Organization))).scalar_one():
                return False
            await _load_demo(db, settings)
            return True
    finally:
        await engine.dispose()


async def holds_demo_data(settings: Settings) -> bool:
    """Whether any demo organization or demo therapist (by name or email) is in the database;
    False before the schema exists. Production refuses to start on such a database."""
    assert settings.database_url
    engine = make_async_engine(settings.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            if (await conn.execute(select(func.to_regclass("therapists")))).scalar_one() is None:
                return False
            found = await conn.execute(
                select(func.count())
                .select_from(Organization)
                .where(col(Organization.name).in_([row[0] for row in DEMO_ORGANIZATIONS]))
            )
            if found.scalar_one():
                return True
            staff = await conn.execute(
                select(func.count())
                .select_from(Therapist)
                .where(col(Therapist.email).in_([row[1] for row in DEMO_THERAPISTS]))
            )
            return bool(staff.scalar_one())
    finally:
        await engine.dispose()


# A school, a clinic and a workplace: name, kind, zone, currency, billing email, tax (bps and
# label), holiday region, address, and the room where sessions happen.
DEMO_ORGANIZATIONS = (
    ("Riverside Elementary School", OrganizationKind.school, "America/Edmonton", "CAD",
     "accounts@riverside.example.org", 500, "GST", "CA-AB", "1200 Riverside Dr NW, Calgary AB",
     "Music room 104"),
    ("Bow Valley Family Clinic", OrganizationKind.clinic, "America/Edmonton", "CAD",
     "billing@bowvalley.example.org", 500, "GST", "CA-AB", "88 Main St, Canmore AB",
     "Group therapy suite"),
    ("Hudson Yards Design Studio", OrganizationKind.workplace, "America/New_York", "USD",
     "ap@hudsondesign.example.com", 0, None, "US-NY", "500 W 33rd St, New York NY",
     "Wellness room, 12th floor"),
)  # fmt: skip
# Name, email, credentials, specialties, languages, zone, weekly maximum, availability.
DEMO_THERAPISTS = (
    ("Amara Okafor", "amara@ensemble.example", ["MTA"],
     [FocusArea.stress_anxiety, FocusArea.emotional_processing], ["en", "fr"],
     "America/Edmonton", 1800, _windows("MO,TU,WE,TH", "08:30", "16:30")),
    ("Liam Tremblay", "liam@ensemble.example", ["MTA", "NMT"],
     [FocusArea.focus_attention, FocusArea.social_confidence], ["en"],
     "America/Edmonton", 1500, _windows("TU,WE,TH,FR", "09:00", "17:00")),
    ("Sofia Ramirez", "sofia@ensemble.example", ["MT-BC"],
     [FocusArea.wellbeing, FocusArea.stress_anxiety], ["en", "es"],
     "America/New_York", 1200, _windows("MO,WE,FR", "10:00", "18:00")),
)  # fmt: skip
# Name, format, minutes, rate, max participants, notice hours, late-cancellation fee percent.
DEMO_OFFERINGS = (
    ("Individual music therapy (50 min)", OfferingFormat.individual, 50, 12500, 1, 48, 100),
    ("Group drumming and wellbeing circle (60 min)", OfferingFormat.group, 60, 22000, 12, 72, 50),
)


ORGANIZATION_FIELDS = (
    "name",
    "kind",
    "timezone",
    "currency",
    "billing_email",
    "tax_rate_bps",
    "tax_label",
    "holiday_region",
    "address",
)
THERAPIST_FIELDS = (
    "name",
    "email",
    "credentials",
    "specialties",
    "languages",
    "timezone",
    "max_weekly_minutes",
)
OFFERING_FIELDS = (
    "name",
    "format",
    "duration_minutes",
    "rate_cents",
    "max_participants",
    "cancellation_notice_hours",
    "late_cancel_fee_percent",
)


async def _load_demo(db: AsyncSession, settings: Settings) -> None:
    rooms: list[uuid.UUID] = []
    clients: list[Organization] = []
    for *org_row, room in DEMO_ORGANIZATIONS:
        org_data = OrganizationCreate.model_validate(
            dict(zip(ORGANIZATION_FIELDS, org_row, strict=True))
        )
        org = await organizations.create(db, SYSTEM, org_data)
        location = LocationCreate(name=room, address=org.address, timezone=org.timezone)
        client = await organizations.get_visible(db, SYSTEM, org.id)
        rooms.append((await organizations.add_location(db, SYSTEM, client, location)).id)
        clients.append(client)
    staff_ids: list[uuid.UUID] = []
    for *therapist_row, windows in DEMO_THERAPISTS:
        staff = TherapistCreate.model_validate(
            dict(zip(THERAPIST_FIELDS, therapist_row, strict=True))
        )
        therapist = await therapists.create(db, SYSTEM, staff)
        staffed = await therapists.get_visible(db, SYSTEM, therapist.id)
        await therapists.replace_availability(db, SYSTEM, staffed, windows)
        staff_ids.append(therapist.id)
    offering_ids: list[uuid.UUID] = []
    for offering_row in DEMO_OFFERINGS:
        offering = OfferingCreate.model_validate(
            {"currency": "CAD", **dict(zip(OFFERING_FIELDS, offering_row, strict=True))}
        )
        offering_ids.append((await offerings.create(db, SYSTEM, offering)).id)
    await _book_demo_programs(db, settings, clients, rooms, staff_ids, offering_ids)


async def _book_demo_programs(
    db: AsyncSession,
    settings: Settings,
    clients: list[Organization],
    rooms: list[uuid.UUID],
    staff_ids: list[uuid.UUID],
    offering_ids: list[uuid.UUID],
) -> None:
    """Two programs from next week, so that every role's pages show something: the school's
    weekly drumming circle, staffed and confirmed (its sessions on the calendar), and the
    clinic's individual online program still waiting for a therapist (with suggestions)."""
    today = utcnow().astimezone(ZoneInfo(clients[0].timezone)).date()
    next_tuesday = today + timedelta(days=(1 - today.weekday()) % 7 or 7)
    school, clinic = clients[0], clients[1]
    circle = await booking.book(
        db,
        SYSTEM,
        ProgramCreate(
            organization_id=school.id,
            offering_id=offering_ids[1],
            title="Drumming circle for calm",
            focus_areas=[FocusArea.stress_anxiety, FocusArea.social_confidence],
            modality=Modality.in_person,
            location_id=rooms[0],
            participants=8,
            schedule=Schedule(
                timezone=school.timezone,
                start_date=next_tuesday,
                start_time=time(10, 0),
                rrule="FREQ=WEEKLY;BYDAY=TU;COUNT=10",
                skip_holidays=True,
            ),
        ),
    )
    program = await db.get(Program, circle.id)
    assert program is not None
    await staffing.assign(
        db, SYSTEM, program, AssignTherapist(therapist_id=staff_ids[0]), settings=settings
    )
    await staffing.confirm(db, SYSTEM, program, ConfirmProgram(), settings=settings)
    await booking.book(
        db,
        SYSTEM,
        ProgramCreate(
            organization_id=clinic.id,
            offering_id=offering_ids[0],
            title="Focus and attention, one to one",
            focus_areas=[FocusArea.focus_attention],
            modality=Modality.online,
            video_url="https://meet.example.org/bow-valley",
            participants=1,
            schedule=Schedule(
                timezone=clinic.timezone,
                start_date=next_tuesday + timedelta(days=2),
                start_time=time(14, 0),
                rrule="FREQ=WEEKLY;BYDAY=TH;COUNT=8",
            ),
        ),
    )
