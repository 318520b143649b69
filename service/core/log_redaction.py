"""Logs never carry a credential: API keys (`ens_...`), webhook signing secrets (`whsec_...`),
calendar feed tokens (`cal_...`, also in the feed's path `/v1/calendar/<token>.ics` of the
access log), Stripe keys and the values of Authorization headers are replaced by `[REDACTED]`.

Redaction happens where each log record is made (a log record factory), so it holds for every
logger and every handler, whether configured before or after (uvicorn's access log, a test's
capture, a JSON formatter): the message, each argument (an object by its text, as `%s` would
show it) and the traceback are redacted. Numbers (a status code) are left as they are, so
formatters that expect them still work.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "[REDACTED]"
_TRACEBACKS = logging.Formatter()

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # An Authorization header's whole value (`Authorization: Bearer ...`, `'authorization': ...`).
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',;}\]\r\n]+"), rf"\1{MASK}"),
    # A credential after its scheme, wherever it appears on its own.
    (re.compile(r"(?i)\b(bearer\s+)(?!\[REDACTED\])[A-Za-z0-9._~+/=-]{8,}"), rf"\1{MASK}"),
    (re.compile(r"(?i)\b(basic\s+)[A-Za-z0-9+/=]{8,}"), rf"\1{MASK}"),
    # The feed's address: whatever the token looks like, the path carries it.
    (re.compile(r"(/calendar/)[^/\s?#\"']+?(\.ics\b|(?=[\s?#\"']|$))"), rf"\1{MASK}\2"),
    # The secrets by their prefixes (service/core/auth.py, service/programs/calendar_feeds.py,
    # service/integrations/webhook_endpoints.py; Stripe's documented key prefixes).
    (re.compile(r"\b(ens_|cal_)[A-Za-z0-9_-]{8,}"), rf"\1{MASK}"),
    (re.compile(r"\b(whsec_)[A-Za-z0-9+/=_-]{8,}"), rf"\1{MASK}"),
    (re.compile(r"\b((?:sk|rk)_(?:live|test)_)[A-Za-z0-9]{8,}"), rf"\1{MASK}"),
)


# Every pattern above needs one of these: most lines (an access log line) have none, and one
# scan of them spares the seven substitutions.
_MARKERS = re.compile(r"(?i)authorization|bearer|basic|/calendar/|ens_|cal_|whsec_|sk_|rk_")


def redact(text: str) -> str:
    if not _MARKERS.search(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float)):
        return value  # numbers carry no credential, and `%d` needs them as they are
    text = value if isinstance(value, str) else str(value)
    redacted = redact(text)
    # An object (httpx's URL, a header list) is replaced by its redacted text only when its
    # text carried a credential: `%s` of either reads the same.
    return redacted if redacted != text or isinstance(value, str) else value


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, dict):
        record.args = {k: _redact_value(v) for k, v in record.args.items()}
    elif isinstance(record.args, tuple):
        record.args = tuple(_redact_value(v) for v in record.args)
    if record.exc_info and not record.exc_text:
        # Formatters use exc_text when it is set: the traceback is written redacted.
        record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


class _RedactingFactory:
    """Wraps the record factory in place (keeping whatever another library installed)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(self.inner(*args, **kwargs))


def install() -> None:
    """Redact every log record of this process from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _RedactingFactory):
        logging.setLogRecordFactory(_RedactingFactory(current))
