"""FHIR search parameter parsing: dates with prefixes, tokens, references, paging.

Pure functions over the query as a list of (name, value) pairs. Every refusal is a
`FhirInvalid` naming the parameter, never echoing its value.
"""

from __future__ import annotations

import base64
import calendar
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

from registry.fhir.mapping import FhirInvalid

_DATE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_SUPPORTED_PREFIXES = ("eq", "gt", "lt", "ge", "le")
# parameters every search accepts and ignores (FHIR says: ignore unknown `_format` etc.)
RESULT_PARAMS = {"_count", "_cursor", "_format", "_pretty", "_summary", "_total"}


@dataclass
class DateRange:
    """Inclusive bounds; None is unbounded. Several parameters intersect."""

    low: date | None = None
    high: date | None = None

    def narrow(self, low: date | None, high: date | None) -> None:
        if low is not None and (self.low is None or low > self.low):
            self.low = low
        if high is not None and (self.high is None or high < self.high):
            self.high = high

    def contains(self, d: date) -> bool:
        return (self.low is None or d >= self.low) and (self.high is None or d <= self.high)

    @property
    def empty(self) -> bool:
        return self.low is not None and self.high is not None and self.low > self.high


def parse_date(value: str, name: str, into: DateRange) -> None:
    m = _DATE.match(value.strip())
    if not m:
        raise FhirInvalid(name, "must be a date YYYY, YYYY-MM or YYYY-MM-DD with an optional prefix eq, gt, lt, ge or le",
                          status=400)
    prefix = m.group(1) or "eq"
    if prefix not in _SUPPORTED_PREFIXES:
        raise FhirInvalid(name, "supported prefixes are eq, gt, lt, ge and le", status=400)
    try:
        year, month, day = int(m.group(2)), m.group(3), m.group(4)
        if day:
            start = end = date(year, int(month), int(day))
        elif month:
            start = date(year, int(month), 1)
            end = date(year, int(month), calendar.monthrange(year, int(month))[1])
        else:
            start, end = date(year, 1, 1), date(year, 12, 31)
    except ValueError:
        raise FhirInvalid(name, "is not a calendar date", status=400) from None
    bounds = {"eq": (start, end), "ge": (start, None), "gt": (end + timedelta(days=1), None),
              "le": (None, end), "lt": (None, start - timedelta(days=1))}[prefix]
    into.narrow(*bounds)


def split_token(value: str) -> tuple[str | None, str]:
    """`system|code` -> (system, code); `code` -> (None, code); `|code` -> ('', code)."""
    if "|" in value:
        system, code = value.split("|", 1)
        return system, code
    return None, value


def reference_id(value: str, name: str, resource_type: str = "Patient") -> uuid.UUID:
    tail = value.strip().rsplit("/", 1)
    if len(tail) == 2 and not tail[0].endswith(resource_type):
        raise FhirInvalid(name, f"must reference a {resource_type}", status=400)
    try:
        return uuid.UUID(tail[-1])
    except ValueError:
        raise FhirInvalid(name, f"must be a {resource_type} id", status=400) from None


@dataclass
class Query:
    """The parsed query: repeated parameters kept in order; `_count` bounded."""

    params: dict[str, list[str]] = field(default_factory=dict)
    count: int = 20
    cursor: str | None = None

    def one(self, name: str) -> str | None:
        values = self.params.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise FhirInvalid(name, "may be given once", status=400)
        return values[0]

    def all(self, name: str) -> list[str]:
        return self.params.get(name, [])


def parse_query(pairs: list[tuple[str, str]], allowed: set[str], *, default_count: int, max_count: int) -> Query:
    q = Query(count=default_count)
    for name, value in pairs:
        base = name.split(":", 1)[0]
        if base in RESULT_PARAMS:
            if base == "_count":
                try:
                    q.count = max(1, min(int(value), max_count))
                except ValueError:
                    raise FhirInvalid("_count", "must be a number", status=400) from None
            elif base == "_cursor":
                q.cursor = value
            continue
        if name not in allowed:
            raise FhirInvalid(name, "is not a supported search parameter (see /fhir/R4/metadata)", status=400)
        q.params.setdefault(name, []).append(value)
    return q


def encode_offset(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode_offset(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["o"]
        if not isinstance(offset, int) or offset < 0:
            raise ValueError
        return offset
    except Exception:
        raise FhirInvalid("_cursor", "is not a valid paging cursor", status=400) from None
