"""First-run chores for the CLI: minting keys before any key exists, and the demo data set."""

from __future__ import annotations

import uuid
from datetime import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from models.api_keys import ApiKeyCreate
from models.offerings import OfferingCreate
from models.organizations import LocationCreate, Organization, OrganizationCreate
from models.therapists import AvailabilityWindow, TherapistCreate
from models.types import FocusArea, OfferingFormat, OrganizationKind, Role, Weekday
from service.catalog import api_keys, offerings, organizations, therapists
from service.core.auth import SYSTEM
from service.core.db import make_async_engine, make_session_factory, transaction
from service.core.settings import Settings

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
    return [
        AvailabilityWindow(
            weekday=Weekday(d), start=time.fromisoformat(start), end=time.fromisoformat(end)
        )
        for d in days.split(",")
    ]


async def load_demo_if_empty(settings: Settings) -> bool:
    """A school, a clinic and a workplace in Alberta and New York, three therapists and two
    offerings. Returns False (and writes nothing) when any organization already exists."""
    assert settings.database_url
    engine = make_async_engine(settings.database_url, pool_size=1)
    try:
        async with transaction(make_session_factory(engine)) as db:
            if (await db.execute(select(func.count()).select_from(Organization))).scalar_one():
                return False
            await _load_demo(db)
            return True
    finally:
        await engine.dispose()


DEMO_ORGANIZATIONS = (
    (
        OrganizationCreate(
            name="Riverside Elementary School",
            kind=OrganizationKind.school,
            timezone="America/Edmonton",
            currency="CAD",
            billing_email="accounts@riverside.example.org",
            tax_rate_bps=500,
            tax_label="GST",
            holiday_region="CA-AB",
            address="1200 Riverside Dr NW, Calgary AB",
        ),
        "Music room 104",
    ),
    (
        OrganizationCreate(
            name="Bow Valley Family Clinic",
            kind=OrganizationKind.clinic,
            timezone="America/Edmonton",
            currency="CAD",
            billing_email="billing@bowvalley.example.org",
            tax_rate_bps=500,
            tax_label="GST",
            holiday_region="CA-AB",
            address="88 Main St, Canmore AB",
        ),
        "Group therapy suite",
    ),
    (
        OrganizationCreate(
            name="Hudson Yards Design Studio",
            kind=OrganizationKind.workplace,
            timezone="America/New_York",
            currency="USD",
            billing_email="ap@hudsondesign.example.com",
            tax_rate_bps=0,
            holiday_region="US-NY",
            address="500 W 33rd St, New York NY",
        ),
        "Wellness room, 12th floor",
    ),
)
DEMO_THERAPISTS = (
    (
        TherapistCreate(
            name="Amara Okafor",
            email="amara@ensemble.example",
            credentials=["MTA"],
            specialties=[FocusArea.stress_anxiety, FocusArea.emotional_processing],
            languages=["en", "fr"],
            timezone="America/Edmonton",
            max_weekly_minutes=1800,
        ),
        _windows("MO,TU,WE,TH", "08:30", "16:30"),
    ),
    (
        TherapistCreate(
            name="Liam Tremblay",
            email="liam@ensemble.example",
            credentials=["MTA", "NMT"],
            specialties=[FocusArea.focus_attention, FocusArea.social_confidence],
            languages=["en"],
            timezone="America/Edmonton",
            max_weekly_minutes=1500,
        ),
        _windows("TU,WE,TH,FR", "09:00", "17:00"),
    ),
    (
        TherapistCreate(
            name="Sofia Ramirez",
            email="sofia@ensemble.example",
            credentials=["MT-BC"],
            specialties=[FocusArea.wellbeing, FocusArea.stress_anxiety],
            languages=["en", "es"],
            timezone="America/New_York",
            max_weekly_minutes=1200,
        ),
        _windows("MO,WE,FR", "10:00", "18:00"),
    ),
)
DEMO_OFFERINGS = (
    OfferingCreate(
        name="Individual music therapy (50 min)",
        format=OfferingFormat.individual,
        duration_minutes=50,
        rate_cents=12500,
        currency="CAD",
        max_participants=1,
        cancellation_notice_hours=48,
        late_cancel_fee_percent=100,
        required_credentials=[],
    ),
    OfferingCreate(
        name="Group drumming and wellbeing circle (60 min)",
        format=OfferingFormat.group,
        duration_minutes=60,
        rate_cents=22000,
        currency="CAD",
        max_participants=12,
        cancellation_notice_hours=72,
        late_cancel_fee_percent=50,
        required_credentials=[],
    ),
)


async def _load_demo(db: AsyncSession) -> None:
    for org_data, location in DEMO_ORGANIZATIONS:
        org = await organizations.create(db, SYSTEM, org_data)
        await organizations.add_location(
            db,
            SYSTEM,
            await organizations.get_visible(db, SYSTEM, org.id),
            LocationCreate(name=location, address=org.address, timezone=org.timezone),
        )
    for therapist_data, windows in DEMO_THERAPISTS:
        therapist = await therapists.create(db, SYSTEM, therapist_data)
        row = await therapists.get_visible(db, SYSTEM, therapist.id)
        await therapists.replace_availability(db, SYSTEM, row, windows)
    for offering_data in DEMO_OFFERINGS:
        await offerings.create(db, SYSTEM, offering_data)
