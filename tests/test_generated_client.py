"""The committed OpenAPI document serves a client: `openapi-python-client` generates a Python
package from openapi/openapi.json, and a short story runs through it against the live server
(create an organization, book a program, page through its sessions, read a 409 problem's fields
as typed objects). Every call is the generated code's own, and so is every parsed answer."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "ensemble_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    where = tmp_path_factory.mktemp("client")
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [
            str(bin_dir / "openapi-python-client"),
            "generate",
            "--path",
            str(ROOT / "openapi" / "openapi.json"),
            "--meta",
            "none",
            "--output-path",
            str(where / PACKAGE),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def op(name: str) -> Any:
    """A generated operation module, e.g. `programs.create_program`."""
    return _module(f"api.{name}")


async def test_a_generated_client_books_pages_and_reads_a_conflict(
    generated: ModuleType, live_server: LiveServer
):
    m = _module("models")
    admin = (await live_server.admin_key())["Authorization"].removeprefix("Bearer ")
    client = generated.AuthenticatedClient(base_url=live_server.url, token=admin)

    org = op("organizations.create_organization").sync(
        client=client,
        body=m.OrganizationCreate(
            name="Client Story School",
            kind=m.OrganizationKind.SCHOOL,
            timezone="America/Edmonton",
            currency="CAD",
        ),
    )
    assert isinstance(org, m.OrganizationRead)
    assert (org.name, org.kind, org.timezone) == (
        "Client Story School",
        m.OrganizationKind.SCHOOL,
        "America/Edmonton",
    )
    offering = op("offerings.create_offering").sync(
        client=client,
        body=m.OfferingCreate(
            name="Group drumming",
            format_=m.OfferingFormat.GROUP,
            duration_minutes=60,
            rate_cents=20000,
            max_participants=10,
        ),
    )
    assert isinstance(offering, m.OfferingRead)
    therapist = op("therapists.create_therapist").sync(
        client=client,
        body=m.TherapistCreate(
            name="Client Story Therapist",
            email="client.story@ensemble.example",
            timezone="America/Edmonton",
            credentials=["MTA"],
        ),
    )
    assert isinstance(therapist, m.TherapistRead)
    windows = op("therapists.replace_availability").sync(
        therapist.id,
        client=client,
        body=[m.AvailabilityWindow(weekday=day, start="00:00", end="23:59") for day in m.Weekday],
    )
    assert len(windows.data) == 7

    start = date.today() + timedelta(days=14)

    def book() -> Any:
        return op("programs.create_program").sync(
            client=client,
            body=m.ProgramCreate(
                organization_id=org.id,
                offering_id=offering.id,
                title="Calm classroom",
                modality=m.Modality.ONLINE,
                video_url="https://meet.example.org/calm",
                participants=4,
                schedule=m.Schedule(
                    timezone="America/Edmonton",
                    start_date=start,
                    start_time="10:00",
                    rrule="FREQ=DAILY;COUNT=5",
                ),
            ),
        )

    program = book()
    assert isinstance(program, m.ProgramRead)
    assert program.status == m.ProgramStatus.REQUESTED
    assigned = op("programs.assign_therapist").sync(
        program.id, client=client, body=m.AssignTherapist(therapist_id=therapist.id)
    )
    assert assigned.therapist_id == therapist.id
    # An optional body is sent explicitly: the generator cannot leave it out (its Unset).
    confirmed = op("programs.confirm_program").sync(
        program.id, client=client, body=m.ConfirmProgram()
    )
    assert confirmed.status == m.ProgramStatus.CONFIRMED

    starts: list[date] = []
    cursor: Any = generated.types.UNSET
    pages = 0
    while True:
        page = op("sessions.list_sessions").sync(
            client=client, program_id=program.id, limit=2, cursor=cursor
        )
        assert isinstance(page, m.PageSessionRead)
        pages += 1
        starts += [s.starts_at.date() for s in page.data]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert starts == [start + timedelta(days=n) for n in range(5)]

    # The same therapist cannot take a second program at the same hours: a typed 409.
    clash = book()
    response = op("programs.assign_therapist").sync_detailed(
        clash.id, client=client, body=m.AssignTherapist(therapist_id=therapist.id)
    )
    assert response.status_code == 409
    problem = response.parsed
    assert isinstance(problem, m.ConflictProblem)
    assert problem.type_ == "https://ensemble.dev/problems/conflict"
    assert problem.status == 409
    assert problem.detail == "The therapist cannot take 5 of the 5 session(s) proposed"
    assert len(problem.conflicts) == 5
    first = problem.conflicts[0]
    assert isinstance(first, m.ProblemConflict)
    assert first.reason == "overlap"
    assert first.program_id == str(program.id)
    assert first.therapist_id == str(therapist.id)
