"""Local time inside SQL statements, by Python's time zone rules.

PostgreSQL's `timezone()` uses the database server's own copy of the IANA rules, which may lag
the pinned `tzdata` package the rest of Ensemble uses (Debian's PostgreSQL 15 still has
America/Edmonton on MST from November 2026; tzdata 2026f keeps Alberta on UTC-6). So no
statement calls it: a statement that needs local time joins the UTC offsets computed here, in
Python, for the zones and the window it reads (`OFFSETS_JOIN`, `local_time`), and every local
date, week and month comes from the same rules.

Offsets are exact inside the window they are computed for; outside it, the first and last
offsets extend to the beginning and the end of time, so a join never loses a row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

BEGINNING = datetime(1, 1, 2, tzinfo=UTC)
END = datetime(9999, 12, 30, tzinfo=UTC)
_DAY = timedelta(days=1)
# Every zone's UTC offset lies within this much of UTC; a UTC window widened by it holds every
# instant of the same local dates, in any zone (for index-friendly prefilters).
WIDEST_OFFSET = timedelta(hours=15)


@dataclass
class Offsets:
    """(zone, valid from, valid until, UTC offset in seconds) rows, as bind parameters."""

    zones: list[str] = field(default_factory=list)
    starts: list[datetime] = field(default_factory=list)
    ends: list[datetime] = field(default_factory=list)
    seconds: list[int] = field(default_factory=list)

    def params(self) -> dict[str, Any]:
        return {
            "tz_zone": self.zones,
            "tz_from": self.starts,
            "tz_until": self.ends,
            "tz_offset": self.seconds,
        }


def offsets(zones: Iterable[str], low: datetime, high: datetime) -> Offsets:
    """The UTC offsets of each zone from `low` to `high`, one row per stretch between
    transitions; the first stretch reaches back to the beginning of time, the last forward to
    its end."""
    found = Offsets()
    for zone in sorted(set(zones)):
        stretches = _stretches(zone, low, high)
        for index, (start, seconds) in enumerate(stretches):
            ends_at = stretches[index + 1][0] if index + 1 < len(stretches) else END
            found.zones.append(zone)
            found.starts.append(BEGINNING if index == 0 else start)
            found.ends.append(ends_at)
            found.seconds.append(seconds)
    return found


def _stretches(zone: str, low: datetime, high: datetime) -> list[tuple[datetime, int]]:
    """(start, offset) of each stretch of constant offset that touches [low, high]."""
    found: list[tuple[datetime, int]] = []
    for year in range(low.year, high.year + 1):
        for start, seconds in _year(zone, year):
            if found and found[-1][1] == seconds:
                continue
            if start > high and found:
                break
            if start <= low and found:
                found[-1] = (start, seconds)
                continue
            found.append((start, seconds))
    return found


@lru_cache(maxsize=4096)
def _year(zone: str, year: int) -> tuple[tuple[datetime, int], ...]:
    """The offset in force at the start of `year` (UTC) and each transition during it."""
    info = ZoneInfo(zone)
    moment = datetime(year, 1, 1, tzinfo=UTC)
    current = _offset(info, moment)
    found = [(moment, current)]
    while moment.year == year:
        following = moment + _DAY
        seconds = _offset(info, following)
        if seconds != current:
            found.append((_transition(info, moment, following, current), seconds))
            current = seconds
        moment = following
    return tuple(found)


def _offset(info: ZoneInfo, moment: datetime) -> int:
    offset = moment.astimezone(info).utcoffset()
    assert offset is not None
    return int(offset.total_seconds())


def _transition(info: ZoneInfo, before: datetime, after: datetime, seconds: int) -> datetime:
    """The first second in (before, after] whose offset is no longer `seconds`."""
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if _offset(info, middle) == seconds:
            before = middle
        else:
            after = middle
    return after


OFFSETS = (
    "unnest(CAST(:tz_zone AS text[]), CAST(:tz_from AS timestamptz[]), "
    "CAST(:tz_until AS timestamptz[]), CAST(:tz_offset AS int[])) "
    "AS {alias}(zone, valid_from, valid_until, utc_offset)"
)


def offsets_join(zone_column: str, instant: str, alias: str = "tz") -> str:
    """A JOIN of the offsets row in force at `instant` for the zone in `zone_column`."""
    return (
        f"JOIN {OFFSETS.format(alias=alias)} ON {alias}.zone = {zone_column} "
        f"AND {instant} >= {alias}.valid_from AND {instant} < {alias}.valid_until"
    )


def local_time(instant: str, alias: str = "tz") -> str:
    """`instant` as a local timestamp by the joined offsets row."""
    return f"(({instant}) AT TIME ZONE 'UTC' + make_interval(secs => {alias}.utc_offset))"


def utc_window(first: date, last: date) -> tuple[datetime, datetime]:
    """Instants that hold every moment of local dates `first`..`last` in any zone."""
    low = datetime.combine(first, datetime.min.time(), UTC) - WIDEST_OFFSET
    high = datetime.combine(last + _DAY, datetime.min.time(), UTC) + WIDEST_OFFSET
    return low, high
