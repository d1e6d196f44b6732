"""DHIS2 export: a province's mapping file, and a report as a `dataValueSets` payload.

Mapping file (JSON), one per province or for the country (the fallback):

    {"jurisdiction": "PK-PB",
     "measure": "any",
     "data_elements": {"PENTA-1": {"dataElement": "fClA2Erf6IO", "categoryOptionCombo": "HllvX50cXC0"},
                       "MR-1": {"dataElement": "YtbsuPPo010"}},
     "org_units": {"PK-PB": "ImspTQPwCqd", "PK-PB-LAH": "O6uvpzGd5pu"}}

- `measure` (optional, default `any`): which count is sent, any-dose or valid-dose.
- `data_elements`: antigen-dose (catalogue.ITEMS) -> DHIS2 data element UID and optional
  category option combo UID. `org_units`: jurisdiction code -> organisation unit UID; every code
  must lie within the mapping's jurisdiction. UIDs are DHIS2's 11-character identifiers.
- Export: exactly one data value per data element, period, organisation unit and category
  option combo. The report's own jurisdiction sends its total; the row of its own facilities
  (children whose home facility is registered at its level, shown beside its sub-units) is
  part of that total and is not sent under the same organisation unit. A mapping that sends two
  jurisdictions to one organisation unit, or two antigen-doses to one data element and category
  option combo, is refused when loaded. The period is the birth cohort (`2025` or `202503`);
  the value is the count of children, as a string. Suppressed cells are never sent, and
  unmapped units or items are skipped (counted).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from registry.errors import InvalidInput
from registry.reports import catalogue as cat
from registry.reports.coverage import Tree
from registry.reports.models import Dhis2Mapping

UID = re.compile(r"^[A-Za-z][A-Za-z0-9]{10}$")


def validate(document: object, tree: Tree) -> dict:
    if not isinstance(document, dict):
        raise InvalidInput("the mapping must be a JSON object", field="document")
    code = document.get("jurisdiction")
    node = tree.nodes.get(code) if isinstance(code, str) else None
    if node is None or node.level not in ("country", "province"):
        raise InvalidInput("jurisdiction must be the code of the country or a province", field="jurisdiction")
    measure = document.get("measure", "any")
    if measure not in ("any", "valid"):
        raise InvalidInput("measure must be 'any' or 'valid'", field="measure")
    elements = document.get("data_elements")
    if not isinstance(elements, dict) or not elements:
        raise InvalidInput("data_elements must map antigen-doses to data elements", field="data_elements")
    for item, target in elements.items():
        if item not in cat.ITEMS:
            raise InvalidInput(f"data_elements: unknown antigen-dose {str(item)[:16]!r} (known: {', '.join(cat.ITEMS)})",
                               field="data_elements")
        if not isinstance(target, dict) or not UID.match(str(target.get("dataElement", ""))):
            raise InvalidInput(f"data_elements.{item}.dataElement must be a DHIS2 UID (11 characters)", field="data_elements")
        coc = target.get("categoryOptionCombo")
        if coc is not None and not UID.match(str(coc)):
            raise InvalidInput(f"data_elements.{item}.categoryOptionCombo must be a DHIS2 UID", field="data_elements")
    units = document.get("org_units")
    if not isinstance(units, dict) or not units:
        raise InvalidInput("org_units must map jurisdiction codes to organisation units", field="org_units")
    for unit, uid in units.items():
        if unit not in tree.below(code):
            raise InvalidInput(f"org_units: {str(unit)[:32]!r} is not a jurisdiction within {code}", field="org_units")
        if not UID.match(str(uid)):
            raise InvalidInput(f"org_units.{unit} must be a DHIS2 UID (11 characters)", field="org_units")
    if len(set(units.values())) != len(units):
        raise InvalidInput("org_units: two jurisdictions map to one organisation unit", field="org_units")
    targets = [(t["dataElement"], t.get("categoryOptionCombo")) for t in elements.values()]
    if len(set(targets)) != len(targets):
        raise InvalidInput("data_elements: two antigen-doses map to one data element and category option combo",
                           field="data_elements")
    return {"jurisdiction": code, "measure": measure, "data_elements": elements, "org_units": units}


def store(session: Session, document: dict, loaded_by: str, table=None) -> None:
    """Replace the jurisdiction's mapping (in `table`: the coverage mappings unless another is given)."""
    t = table if table is not None else Dhis2Mapping.__table__
    session.execute(delete(t).where(t.c.jurisdiction_code == document["jurisdiction"]))
    session.execute(insert(t).values(jurisdiction_code=document["jurisdiction"], document=document,
                                     loaded_at=datetime.now(UTC), loaded_by=loaded_by[:64]))


def mapping_for(session: Session, tree: Tree, code: str, table=None) -> dict | None:
    """The mapping of the jurisdiction's province, else of the country (in `table`, as `store`)."""
    node = tree.nodes.get(code)
    candidates = [node.province] if node is not None and node.province else []
    while node is not None and node.parent_code is not None:
        node = tree.nodes.get(node.parent_code)
    if node is not None:
        candidates.append(node.code)
    t = table if table is not None else Dhis2Mapping.__table__
    for candidate in candidates:
        doc = session.execute(select(t.c.document).where(t.c.jurisdiction_code == candidate)).scalar_one_or_none()
        if doc is not None:
            return doc
    return None


def period(cohort_label: str) -> str:
    return cohort_label.replace("-", "")


def data_value_set(report: dict, mapping: dict) -> tuple[dict, int]:
    """(payload, skipped): skipped counts unmapped units and suppressed cells."""
    values, skipped, sent = [], 0, set()
    measure = mapping.get("measure", "any")
    own = report["jurisdiction"]["code"]
    # the report's own facilities (a row coded as the jurisdiction itself) are within its total
    rows = [r for r in report["rows"] if r["code"] != own] + [report["total"]]
    skipped += len(report["rows"]) + 1 - len(rows)
    for row in rows:
        org_unit = mapping["org_units"].get(row["code"])
        if org_unit is None:
            skipped += 1
            continue
        for item, target in mapping["data_elements"].items():
            count = row["items"].get(item, {}).get(measure)
            if count is None:
                skipped += 1
                continue
            key = (target["dataElement"], period(report["cohort"]), org_unit, target.get("categoryOptionCombo"))
            if key in sent:  # never two values for one key (validate refuses mappings that would)
                skipped += 1
                continue
            sent.add(key)
            value = {"dataElement": key[0], "period": key[1], "orgUnit": org_unit}
            if key[3]:
                value["categoryOptionCombo"] = key[3]
            value["value"] = str(count)
            values.append(value)
    return {"dataValues": values}, skipped
