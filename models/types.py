"""Field types that carry meaning, shared by every resource schema."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from enum import StrEnum
from functools import lru_cache
from typing import Annotated
from urllib.parse import urlsplit
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


# Input text rules (docs/api.md, "Input rules"). Every pattern is written for both engines that
# read it — pydantic's validator and a client's JSON Schema (ECMA-262) — and is checked on the
# raw value, before surrounding spaces are stripped, so the spec and the server agree.
_CONTROLS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
SINGLE_LINE_PATTERN = rf"^[^{_CONTROLS}]*$"
"""No control character at all (C0, DEL, C1, Unicode line and paragraph separators)."""
SOME_TEXT_PATTERN = rf"^[^{_CONTROLS}]*[^\s{_CONTROLS}][^{_CONTROLS}]*$"
"""As SINGLE_LINE_PATTERN, and at least one character that is not a space."""
MULTILINE_PATTERN = r"^(?:[^\x00-\x08\x0b-\x1f\x7f-\x9f]|\r\n)*$"
"""Printable text, tabs and line breaks (LF or CR LF); no other control character, no NUL
(which PostgreSQL text cannot store either)."""


PATTERN_MESSAGES: dict[str, str] = {
    SINGLE_LINE_PATTERN: "must be one line of text without control characters",
    SOME_TEXT_PATTERN: "must be one line of text, not blank, without control characters",
    MULTILINE_PATTERN: "must be text without control characters (tabs and line breaks allowed)",
}
"""What a broken pattern means, in words, for the 422 (the pattern itself is in the spec)."""


def _strip(value: str) -> str:
    return value.strip()


def single_line(*, min_length: int = 0, max_length: int) -> StringConstraints:
    """Constraints of a one-line text field: no control character; with `min_length`, at least
    one character that is not a space. Types that trim add `AfterValidator(_strip)` after it."""
    return StringConstraints(
        min_length=min_length or None,
        max_length=max_length,
        pattern=SOME_TEXT_PATTERN if min_length else SINGLE_LINE_PATTERN,
    )


Name = Annotated[str, single_line(min_length=1, max_length=200), AfterValidator(_strip)]
"""One line of text, 1 to 200 characters: names and titles."""
ShortText = Annotated[str, single_line(min_length=1, max_length=100), AfterValidator(_strip)]
"""One line of text, 1 to 100 characters: labels and references."""
LongText = Annotated[
    str,
    StringConstraints(max_length=2000, pattern=MULTILINE_PATTERN),
    AfterValidator(_strip),
]
"""Free text of several lines, up to 2000 characters: addresses, reasons, descriptions. Tabs
and line breaks (LF or CR LF) are allowed; no other control character."""
FilterText = Annotated[str, single_line(max_length=40)]
"""A one-line filter value in a query string."""

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# What _email checks, on the raw value (spaces around it are stripped after): one line.
EMAIL_PATTERN = rf"^ *[^@\s{_CONTROLS}]+@[^@\s{_CONTROLS}]+\.[^@\s{_CONTROLS}]+ *$"
PATTERN_MESSAGES[EMAIL_PATTERN] = "must be an email address like name@example.org"


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("must be an email address like name@example.org")
    return value.lower()


Email = Annotated[
    str,
    StringConstraints(min_length=3, max_length=254, pattern=EMAIL_PATTERN),
    AfterValidator(_strip),
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
    StringConstraints(min_length=1, max_length=64, pattern=SINGLE_LINE_PATTERN),
    AfterValidator(_timezone),
    Field(json_schema_extra={"format": TIME_ZONE_FORMAT}),
]


def _currency(value: str) -> str:
    code = value.upper()
    if code not in TWO_DECIMAL_CURRENCIES:
        raise ValueError("must be an ISO 4217 currency with two decimals, such as CAD or USD")
    return code


CURRENCY_PATTERN = r"^[A-Za-z]{3}$"
PATTERN_MESSAGES[CURRENCY_PATTERN] = "must be three letters, such as CAD"
CurrencyCode = Annotated[
    str,
    StringConstraints(min_length=3, max_length=3, pattern=CURRENCY_PATTERN),
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
    StringConstraints(min_length=2, max_length=16, pattern=SINGLE_LINE_PATTERN),
    AfterValidator(_holiday_region),
    Field(json_schema_extra={"format": HOLIDAY_REGION_FORMAT}),
]


URL_MAX_LENGTH = 2000
# Absolute http(s): a scheme, a host (a name, or an IP literal in brackets), an optional port,
# then anything printable without spaces. The scheme is matched in any case, as RFC 3986 says.
_URL_CHARS = rf"[^\s{_CONTROLS}]"
_URL_REST = (
    rf"://(?:[^\s/?#@{_CONTROLS}]+@)?"
    rf"(?:\[[0-9A-Fa-f:.]+\]|[^\s/?#@:\[\]{_CONTROLS}]+)"
    r"(?::[0-9]{1,5})?"
    rf"(?:[/?#]{_URL_CHARS}*)?$"
)
URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?" + _URL_REST
HTTPS_URL_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]" + _URL_REST
PATTERN_MESSAGES[URL_PATTERN] = (
    "must be an absolute http(s) URL with a host, without spaces or control characters"
)
PATTERN_MESSAGES[HTTPS_URL_PATTERN] = (
    "must be an absolute https:// URL with a host, without spaces or control characters"
)


def _absolute_http_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if not parts.hostname or port == -1 or (port is not None and not 0 < port <= 65535):
        raise ValueError("must be an absolute http(s) URL with a host (and a valid port)")
    return value


def _url(pattern: str) -> tuple[object, ...]:
    schema = {
        "type": "string",
        "format": "uri",
        "minLength": 1,
        "maxLength": URL_MAX_LENGTH,
        "pattern": pattern,
    }
    return (
        StringConstraints(min_length=1, max_length=URL_MAX_LENGTH, pattern=pattern),
        AfterValidator(_absolute_http_url),
        WithJsonSchema(schema),
    )


WebUrl = Annotated[str, *_url(URL_PATTERN)]
"""An absolute http:// or https:// URL with a host, at most 2000 characters, with no space
and no control character."""
HttpsUrl = Annotated[str, *_url(HTTPS_URL_PATTERN)]
"""As WebUrl, https:// only."""

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

MINUTES_PER_DAY = 24 * 60
WINDOW_START_PATTERN = CLOCK_TIME_PATTERN
WINDOW_END_PATTERN = "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


def _day_time(pattern: str, latest: str) -> tuple[BeforeValidator, WithJsonSchema]:
    def check(value: object) -> object:
        if isinstance(value, str) and re.fullmatch(pattern, value):
            return value
        raise ValueError(f"must be a time of day as HH:MM, 00:00 to {latest}")

    return BeforeValidator(check), WithJsonSchema({"type": "string", "pattern": pattern})


WindowStart = Annotated[str, *_day_time(WINDOW_START_PATTERN, "23:59")]
"""Where a weekly window opens: "HH:MM", 00:00 to 23:59, kept as written."""
WindowEnd = Annotated[str, *_day_time(WINDOW_END_PATTERN, "24:00")]
"""Where a weekly window closes: "HH:MM", 00:00 to 24:00 (the end of the day), kept as
written."""


def day_minute(hhmm: str) -> int:
    """Minutes since the start of the day of "HH:MM" ("24:00" is the whole day, 1440)."""
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def hhmm(minute: int) -> str:
    """The "HH:MM" of a minute of the day (1440 is "24:00")."""
    return f"{minute // 60:02d}:{minute % 60:02d}"


YEARS = (1900, 2200)
# The year range as a JSON Schema pattern, so a client knows the bounds before it asks.
YEAR_PATTERN = r"^(?:19[0-9]{2}|2[01][0-9]{2}|2200)-"
_IN_YEARS = Field(json_schema_extra={"pattern": YEAR_PATTERN})


def _text_only(value: object) -> object:
    # JSON carries dates and instants as strings (the spec says so); pydantic would also read a
    # number as seconds since 1970, which no client means.
    if isinstance(value, int | float):
        raise ValueError("must be written as a string (ISO 8601), not a number")
    return value


def _in_utc(moment: datetime) -> datetime:
    if not YEARS[0] <= moment.year <= YEARS[1]:
        raise ValueError("must be between the years 1900 and 2200")
    return moment.astimezone(UTC)


Instant = Annotated[AwareDatetime, BeforeValidator(_text_only), AfterValidator(_in_utc), _IN_YEARS]
"""A moment with a UTC offset in the years 1900 to 2200, kept in UTC."""


def _in_years(day: date) -> date:
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise ValueError("must be between the years 1900 and 2200")
    return day


Day = Annotated[date, BeforeValidator(_text_only), AfterValidator(_in_years), _IN_YEARS]
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


DateOrInstant = Annotated[date | datetime, BeforeValidator(_date_or_instant), _IN_YEARS]
"""A window bound: a calendar date, or an instant with an offset (never a bare number), in the
years 1900 to 2200."""


Tag = Annotated[str, single_line(min_length=1, max_length=40), AfterValidator(_strip)]
Tags = Annotated[list[Tag], Field(max_length=20)]
