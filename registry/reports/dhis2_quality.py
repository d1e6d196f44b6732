"""Data quality as DHIS2 data values (issue 12, item 5), beside the coverage export (dhis2.py,
whose mapping format and organisation units this module reuses, without changing it).

Mapping file (JSON), one per province or for the country (the fallback), loaded with
`nhr reports dhis2-quality-mapping FILE` or PUT /api/v1/reports/dhis2-quality-mapping:

    {"jurisdiction": "PK-PB",
     "data_elements": {"bform_pct": {"dataElement": "dqBformPct1"},
                       "median_days": {"dataElement": "dqMedianDy1", "categoryOptionCombo": "HllvX50cXC0"}}}

- `data_elements`: metric (one of METRICS) -> DHIS2 data element UID and optional category
  option combo. Organisation units are the ones of the province's coverage mapping (dhis2.py):
  the export needs both.
- The period must be a DHIS2 period: a calendar month (YYYYMM) or a calendar year (YYYY).
- One data value per mapped unit (and the total) and mapped metric; suppressed cells and
  metrics the report does not have (e.g. `reported_pct` before provenance exists) are skipped
  and counted.
"""

from __future__ import annotations

from calendar import monthrange
from datetime import date

from sqlalchemy.orm import Session

from registry.errors import InvalidInput
from registry.reports import dhis2
from registry.reports.dhis2 import UID
from registry.reports.models import Dhis2QualityMapping

# metric -> where it is in a report row (registry/reports/quality.py)
METRICS = {
    "patients_registered": ("completeness", "patients_registered"),
    "bform_pct": ("completeness", "bform_pct"),
    "guardian_cnic_pct": ("completeness", "guardian_cnic_pct"),
    "phone_pct": ("completeness", "phone_pct"),
    "doses": ("completeness", "doses"),
    "lot_number_pct": ("completeness", "lot_number_pct"),
    "median_days": ("timeliness", "median_days"),
    "within_7_days_pct": ("timeliness", "within_7_days_pct"),
    "within_30_days_pct": ("timeliness", "within_30_days_pct"),
    "invalid_pct": ("consistency", "invalid_pct"),
    "unknown_vaccine_codes": ("unknown_vaccine_codes", "count"),
    "reported_pct": ("provenance", "reported_pct"),
    "suspected_duplicates_open": ("suspected_duplicates", "records_open"),
    "suspected_duplicates_resolved": ("suspected_duplicates", "records_resolved"),
}


def validate(document: object, tree) -> dict:
    if not isinstance(document, dict):
        raise InvalidInput("the mapping must be a JSON object", field="document")
    code = document.get("jurisdiction")
    node = tree.nodes.get(code) if isinstance(code, str) else None
    if node is None or node.level not in ("country", "province"):
        raise InvalidInput("jurisdiction must be the code of the country or a province", field="jurisdiction")
    elements = document.get("data_elements")
    if not isinstance(elements, dict) or not elements:
        raise InvalidInput("data_elements must map data-quality metrics to data elements", field="data_elements")
    for metric, target in elements.items():
        if metric not in METRICS:
            raise InvalidInput(f"data_elements: unknown metric (known: {', '.join(METRICS)})", field="data_elements")
        if not isinstance(target, dict) or not UID.match(str(target.get("dataElement", ""))):
            raise InvalidInput(f"data_elements.{metric}.dataElement must be a DHIS2 UID (11 characters)", field="data_elements")
        coc = target.get("categoryOptionCombo")
        if coc is not None and not UID.match(str(coc)):
            raise InvalidInput(f"data_elements.{metric}.categoryOptionCombo must be a DHIS2 UID", field="data_elements")
    return {"jurisdiction": code, "data_elements": elements}


def store(session: Session, document: dict, loaded_by: str) -> None:
    dhis2.store(session, document, loaded_by, Dhis2QualityMapping.__table__)


def mapping_for(session: Session, tree, code: str) -> dict | None:
    """The mapping of the jurisdiction's province, else of the country (as the coverage mapping)."""
    return dhis2.mapping_for(session, tree, code, Dhis2QualityMapping.__table__)


def period(start: date, end: date) -> str:
    """The DHIS2 period of [start, end]: a calendar month or year, else InvalidInput."""
    if start.day == 1 and start.year == end.year:
        if start.month == end.month and end.day == monthrange(end.year, end.month)[1]:
            return f"{start.year}{start.month:02d}"
        if start.month == 1 and (end.month, end.day) == (12, 31):
            return str(start.year)
    raise InvalidInput("a DHIS2 export covers a calendar month or a calendar year", field="from")


def data_value_set(report: dict, elements: dict, org_units: dict) -> tuple[dict, int]:
    """(payload, skipped): skipped counts unmapped units, suppressed cells and absent metrics."""
    pe = period(date.fromisoformat(report["period"]["from"]), date.fromisoformat(report["period"]["to"]))
    values, skipped = [], 0
    for row in report["rows"] + [report["total"]]:
        org_unit = org_units.get(row["code"])
        if org_unit is None:
            skipped += 1
            continue
        for metric, target in elements.items():
            section, key = METRICS[metric]
            value = (row.get(section) or {}).get(key)
            if value is None:
                skipped += 1
                continue
            out = {"dataElement": target["dataElement"], "period": pe, "orgUnit": org_unit}
            if target.get("categoryOptionCombo"):
                out["categoryOptionCombo"] = target["categoryOptionCombo"]
            out["value"] = str(value)
            values.append(out)
    return {"dataValues": values}, skipped
