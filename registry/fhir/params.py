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
# result parameters: each is honoured or refused with an OperationOutcome naming it, never ignored
RESULT_PARAMS = {"_count", "_cursor", "_format", "_pretty", "_summary", "_total"}
TOTAL_MODES = ("none", "estimate", "accurate")
SUMMARY_MODES = ("count", "false")
FHIR_JSON = "application/fhir+json"
JSON_FORMATS = {"json", "application/json", FHIR_JSON}  # `_format` values that mean FHIR JSON
FHIR_VERSIONS = ("4.0", "4.0.1")  # the `fhirVersion` media type parameter NHR serves (R4)


class NotAcceptable(FhirInvalid):
    """406: the client accepts no format NHR serves (JSON only)."""

    issue_code = "not-supported"

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(expression, message, status=406)


class UnsupportedMediaType(FhirInvalid):
    """415: the request body is in a media type NHR does not read."""

    issue_code = "not-supported"

    def __init__(self, expression: str, message: str) -> None:
        super().__init__(expression, message, status=415)


def media_params(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; k=v; ...` -> ("type/subtype" lower-cased, {k lower-cased: v unquoted})."""
    kind, *rest = value.split(";")
    params = {}
    for item in rest:
        name, _, v = item.partition("=")
        params[name.strip().lower()] = v.strip().strip('"')
    return kind.strip().lower(), params


def check_format(value: str) -> None:
    """`_format` (FHIR R4 http.html#parameters): json, application/json or application/fhir+json."""
    kind, params = media_params(value)
    if kind not in JSON_FORMATS or params.get("fhirversion", FHIR_VERSIONS[0]) not in FHIR_VERSIONS:
        raise NotAcceptable("_format", "only JSON is served: json, application/json or application/fhir+json (FHIR 4.0)")


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
    count_only: bool = False  # `_count=0` or `_summary=count`: the total and no entries
    total: str | None = None  # `_total`: none, estimate or accurate (None: the server's default)

    @property
    def wants_total(self) -> bool:
        """Whether a total must be computed even where it is not free."""
        return self.count_only or self.total in ("estimate", "accurate")

    def shows_total(self, total: int | None) -> bool:
        return total is not None and (self.count_only or self.total != "none")

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
        if name in RESULT_PARAMS:
            _result_param(q, name, value.strip(), max_count)
            continue
        if name not in allowed:
            raise FhirInvalid(name, "is not a supported search parameter (see /fhir/R4/metadata)", status=400)
        q.params.setdefault(name, []).append(value)
    return q


def _result_param(q: Query, name: str, value: str, max_count: int) -> None:
    if name == "_count":
        try:
            count = int(value)
        except ValueError:
            raise FhirInvalid("_count", "must be a whole number", status=400) from None
        if count < 0:
            raise FhirInvalid("_count", "must be 0 (the total only) or more", status=400)
        q.count_only = q.count_only or count == 0
        q.count = min(max(count, 1), max_count)
    elif name == "_cursor":
        q.cursor = value
    elif name == "_summary":
        if value not in SUMMARY_MODES:
            raise FhirInvalid("_summary", "supported values are count (the total only) and false", status=400)
        q.count_only = q.count_only or value == "count"
    elif name == "_total":
        if value not in TOTAL_MODES:
            raise FhirInvalid("_total", "must be none, estimate or accurate", status=400)
        q.total = value
    elif name == "_format":
        check_format(value)
    elif name == "_pretty" and value not in ("true", "false"):
        raise FhirInvalid("_pretty", "must be true or false", status=400)


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
