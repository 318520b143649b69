"""The rules a program's fields must follow, each failure a FieldError naming the field (one
422 lists them all). Pure: whatever a rule needs from the database is loaded by its caller."""

from __future__ import annotations

import uuid
from datetime import date

from models.offerings import Offering
from models.organizations import Location
from models.programs import Modality, Program, Schedule
from models.types import OfferingFormat
from service.core.clock import local_today
from service.core.errors import FieldError, ValidationFailed
from service.scheduling import plan, recurrence


def participant_errors(offering: Offering, participants: int) -> list[FieldError]:
    limit = 1 if offering.format == OfferingFormat.individual else offering.max_participants
    if participants <= limit:
        return []
    return [
        FieldError(
            "participants",
            f"{offering.name} takes at most {limit} participant(s)",
            "too_many_participants",
        )
    ]


def place_errors(
    modality: Modality,
    *,
    organization_id: uuid.UUID,
    location_id: uuid.UUID | None,
    location: Location | None,
    video_url: str | None,
) -> list[FieldError]:
    """An online program needs a video link; an in-person one a location of its organization
    (`location` is the row `location_id` names, if any)."""
    if modality == Modality.online:
        if video_url:
            return []
        return [FieldError("video_url", "an online program needs an https video link", "required")]
    if location_id is None:
        return [FieldError("location_id", "an in-person program needs a location", "required")]
    if location is None or location.organization_id != organization_id:
        return [FieldError("location_id", "no such location in this organization", "not_found")]
    return []


def schedule_errors(
    schedule: Schedule, *, duration: int, earliest: date | None, holiday_region: str | None
) -> list[FieldError]:
    errors = [
        FieldError(f, m, "schedule")
        for f, m in recurrence.validate_schedule(
            plan.engine_schedule(schedule, duration), holiday_region=holiday_region
        )
    ]
    if earliest is not None and schedule.start_date < earliest:
        errors.append(
            FieldError("schedule.start_date", f"must be today ({earliest}) or later", "past_start")
        )
    return errors


def apply_schedule(program: Program, schedule: Schedule) -> None:
    program.timezone = schedule.timezone
    program.start_date = schedule.start_date
    program.start_time = schedule.start_time
    program.duration_minutes = schedule.duration_minutes or program.duration_minutes
    program.rrule = schedule.rrule
    program.exdates = sorted(set(schedule.exdates))
    program.skip_holidays = schedule.skip_holidays


def effective_date(program: Program, given: date | None, *, required: bool) -> date:
    """The local date a change to a confirmed program takes effect: today or later."""
    today = local_today(program.timezone)
    if given is None:
        if required:
            raise ValidationFailed(
                [
                    FieldError(
                        "effective_date",
                        "is required to change a confirmed program's schedule, rate or therapist",
                        "required",
                    )
                ]
            )
        return today
    if given < today:
        raise ValidationFailed(
            [FieldError("effective_date", f"must be today ({today}) or later", "past_date")]
        )
    return given
