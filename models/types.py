"""Field types that carry meaning, shared by every resource schema."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from enum import StrEnum
from functools import lru_cache
from typing import Annotated
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

# ISO 4217 codes with two minor-unit digits that Stripe accepts. Zero- and three-decimal
# currencies (JPY, KWD, ...) are refused: money is integer cents everywhere.
TWO_DECIMAL_CURRENCIES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BWP BYN BZD CAD
    CDF CHF CNY COP CRC CVE CZK DKK DOP DZD EGP ETB EUR FJD FKP GBP GEL GIP GMD GTQ GYD HKD HNL
    HTG HUF IDR ILS INR ISK JMD KES KGS KHR KYD KZT LAK LBP LKR LRD LSL MAD MDL MKD MMK MNT MOP
    MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR
    SBD SCR SEK SGD SHP SLE SOS SRD STD SZL THB TJS TOP TRY TTD TWD TZS UAH UYU UZS WST XCD YER
    ZAR ZMW USD
    """.split()  # noqa: SIM905 (a table is easier to read as words)
)


# Values checked against a registry (zoneinfo, ISO 4217, the `holidays` package) are named in
# the OpenAPI document by these formats: too many to list, and each says where its values come
# from. Clock times are "HH:MM".
TIME_ZONE_FORMAT = "iana-time-zone"
CURRENCY_FORMAT = "iso-4217-two-decimal-currency"
HOLIDAY_REGION_FORMAT = "holiday-region"
CLOCK_TIME_PATTERN = "^([01][0-9]|2[0-3]):[0-5][0-9]$"


class Weekday(StrEnum):
    MO = "MO"
    TU = "TU"
    WE = "WE"
    TH = "TH"
    FR = "FR"
    SA = "SA"
    SU = "SU"


class Role(StrEnum):
    admin = "admin"
    coordinator = "coordinator"
    therapist = "therapist"
    finance = "finance"


class OrganizationKind(StrEnum):
    school = "school"
    clinic = "clinic"
    workplace = "workplace"
    community = "community"
    other = "other"


class OfferingFormat(StrEnum):
    individual = "individual"
    group = "group"


class FocusArea(StrEnum):
    stress_anxiety = "stress_anxiety"
    focus_attention = "focus_attention"
    social_confidence = "social_confidence"
    emotional_processing = "emotional_processing"
    wellbeing = "wellbeing"


def _reject_nul(value: str) -> str:
    # PostgreSQL text cannot store NUL; refuse it at the edge instead of failing in the driver.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_reject_nul),
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_reject_nul),
]
LongText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=2000),
    AfterValidator(_reject_nul),
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an email address like name@example.org")
    return value.lower()


Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=254, pattern=_EMAIL.pattern),
    AfterValidator(_reject_nul),
    AfterValidator(_email),
]


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    # The IANA names only: not the host's "localtime" or zic's "posixrules", not directories.
    return frozenset(available_timezones()) - {"localtime", "posixrules", "Factory"}


def _timezone(value: str) -> str:
    if value not in _zones():
        raise ValueError(f"must be an IANA time zone such as America/Edmonton; got {value!r}")
    return value


TimeZoneName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    AfterValidator(_timezone),
    Field(json_schema_extra={"format": TIME_ZONE_FORMAT}),
]


def _currency(value: str) -> str:
    code = value.upper()
    if code not in TWO_DECIMAL_CURRENCIES:
        raise ValueError("must be an ISO 4217 currency with two decimals, such as CAD or USD")
    return code


CurrencyCode = Annotated[
    str,
    StringConstraints(min_length=3, max_length=3),
    AfterValidator(_currency),
    Field(json_schema_extra={"format": CURRENCY_FORMAT}),
]


def _holiday_region(value: str) -> str:
    # Local import: `holidays` is large and only needed to validate this one field.
    import holidays

    country, _, subdivision = value.upper().partition("-")
    supported = holidays.list_supported_countries()
    if country not in supported:
        raise ValueError(f"unknown holiday country {country!r}; use e.g. CA-AB or US-NY")
    if subdivision and subdivision not in supported[country]:
        raise ValueError(f"{country} has no holiday subdivision {subdivision!r}")
    return f"{country}-{subdivision}" if subdivision else country


HolidayRegion = Annotated[
    str,
    StringConstraints(min_length=2, max_length=16),
    AfterValidator(_holiday_region),
    Field(json_schema_extra={"format": HOLIDAY_REGION_FORMAT}),
]

Cents = Annotated[int, Field(ge=0, le=100_000_000_00)]
"""Money as integer minor units; never negative, bounded far below bigint."""

BasisPoints = Annotated[int, Field(ge=0, le=10_000)]
Percent = Annotated[int, Field(ge=0, le=100)]


def _hhmm(value: object) -> object:
    if isinstance(value, time) and value.tzinfo is None:
        return value  # already parsed, e.g. read back from the database
    if isinstance(value, str) and re.fullmatch(CLOCK_TIME_PATTERN, value):
        return value
    raise ValueError("must be a time of day as HH:MM, 00:00 to 23:59")


ClockTime = Annotated[
    time,
    BeforeValidator(_hhmm),
    WithJsonSchema({"type": "string", "pattern": CLOCK_TIME_PATTERN}),
    PlainSerializer(lambda t: t.strftime("%H:%M"), return_type=str, when_used="json"),
]
"""A wall-clock time of day, written "HH:MM" both ways."""


def _in_utc(moment: datetime) -> datetime:
    if not 1900 <= moment.year <= 2200:
        raise ValueError("must be between the years 1900 and 2200")
    return moment.astimezone(UTC)


Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def _in_years(day: date) -> date:
    if not 1900 <= day.year <= 2200:
        raise ValueError("must be between the years 1900 and 2200")
    return day


Day = Annotated[date, AfterValidator(_in_years)]
"""A calendar date in the years 1900 to 2200."""


def _date_or_instant(value: object) -> object:
    if not isinstance(value, str):
        return value
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return _in_years(date.fromisoformat(value))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError("must be a date (2030-01-31) or a date-time with an offset") from exc
    if moment.tzinfo is None:
        raise ValueError("a date-time needs a UTC offset (or give a date)")
    return _in_utc(moment)


DateOrInstant = Annotated[date | datetime, BeforeValidator(_date_or_instant)]
"""A window bound: a calendar date, or an instant with an offset (never a bare number), in the
years 1900 to 2200."""


Tag = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=40),
    AfterValidator(_reject_nul),
]
Tags = Annotated[list[Tag], Field(max_length=20)]
