"""Ranking therapists for a whole program: hard filters first (the staffing rules), then a
score. Pure: the problems and the load and continuity facts are computed beforehand."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from models.programs import Program, TherapistSuggestion
from models.therapists import Therapist
from service.scheduling.staffing import Problem

SPECIALTY_POINTS = 50  # all focus areas covered
BALANCE_POINTS = 30  # no load at all over the next four weeks
CONTINUITY_POINTS = 20  # has worked with the organization before
LOAD_WEEKS = 4
STANDING_REASONS = frozenset({"missing_credentials", "inactive"})


@dataclass(frozen=True)
class Standing:
    """A therapist's booked minutes over the next LOAD_WEEKS and their live sessions with the
    program's organization (other programs)."""

    upcoming_minutes: int = 0
    sessions_with_organization: int = 0


def suggest(
    therapist: Therapist, program: Program, problems: list[Problem], standing: Standing
) -> TherapistSuggestion:
    reasons: list[str] = []
    focus = set(program.focus_areas)
    matched = sorted(focus & set(therapist.specialties))
    specialty = SPECIALTY_POINTS * len(matched) / len(focus) if focus else 0.0
    if matched:
        reasons.append(f"specialties match the program's focus: {', '.join(matched)}")
    elif focus:
        reasons.append("no specialty matches the program's focus areas")
    capacity = max(therapist.max_weekly_minutes * LOAD_WEEKS, 1)
    load = min(standing.upcoming_minutes / capacity, 1.0)
    reasons.append(f"booked {round(load * 100)}% of their maximum over the next {LOAD_WEEKS} weeks")
    together = standing.sessions_with_organization
    if together:
        reasons.append(f"continuity: {together} session(s) with this organization")
    score = specialty + BALANCE_POINTS * (1 - load) + (CONTINUITY_POINTS if together else 0)
    return TherapistSuggestion(
        therapist_id=therapist.id,
        name=therapist.name,
        eligible=not problems,
        score=round(score, 1),
        reasons=[*_refusals(problems), *reasons],
    )


def _refusals(problems: list[Problem]) -> list[str]:
    counts = Counter(p.reason for p in problems)
    return [
        next(p.detail for p in problems if p.reason == reason)
        if reason in STANDING_REASONS
        else f"{reason}: {n} session(s)"
        for reason, n in sorted(counts.items())
    ]


def ranked(suggestions: Iterable[TherapistSuggestion]) -> list[TherapistSuggestion]:
    """Eligible first, by score, then by name."""
    return sorted(suggestions, key=lambda s: (not s.eligible, -s.score, s.name))
