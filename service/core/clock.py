"""Local time: the one place that turns local dates and wall-clock times in an IANA zone into
instants, and instants into local dates. The rules come from the pinned `tzdata` package (see
`service/__init__.py`), never from the host or the database server."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from models.base import utcnow


def zone_of(name: str | ZoneInfo) -> ZoneInfo:
    return name if isinstance(name, ZoneInfo) else ZoneInfo(name)


def local_start(day: date, start_time: time, zone: str | ZoneInfo) -> datetime:
    """The instant (aware, UTC) at which local wall-clock `start_time` on `day` happens.

    RFC 5545 §3.3.5 (FORM #3, DATE WITH LOCAL TIME AND TIME ZONE REFERENCE): a local time that
    occurs twice (fall back) "refers to the first occurrence"; one that does not occur (spring
    forward) "is interpreted using the UTC offset before the gap", so America/New_York 02:30 on
    2027-03-14 is 07:30 UTC, i.e. 03:30 EDT. The session is kept that day, not dropped (as the
    RECUR rule of §3.3.10 would drop it). PEP 495 gives exactly these readings for fold=0:
    an ambiguous time takes the earlier offset, a missing time the offset before the gap.
    """
    wall = datetime.combine(day, start_time.replace(tzinfo=None, fold=0), tzinfo=zone_of(zone))
    return wall.astimezone(UTC)


def local_minute(day: date, minute: int, zone: str | ZoneInfo) -> datetime:
    """The instant of wall-clock minute `minute` of `day` (1440, "24:00", is the next day's
    midnight), read as `local_start` reads a time."""
    days, rest = divmod(minute, 24 * 60)
    return local_start(day + timedelta(days=days), time(rest // 60, rest % 60), zone)


def local_midnight(day: date, zone: str | ZoneInfo) -> datetime:
    """The first instant of `day` in `zone` (for "from this date on" cut-offs)."""
    return local_start(day, time(), zone)


def local_date(moment: datetime, zone: str | ZoneInfo) -> date:
    return moment.astimezone(zone_of(zone)).date()


def local_today(zone: str | ZoneInfo, now: datetime | None = None) -> date:
    return local_date(now or utcnow(), zone)
