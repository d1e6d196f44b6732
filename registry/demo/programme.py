"""The demo's programme data: target populations per jurisdiction and a DHIS2 coverage mapping,
so that coverage against target-population denominators and the DHIS2 export answer in the demo.

Demo only (`nhr demo` refuses production before it gets here). Both are invented, like the
children: the figures are derived from the synthetic children themselves and the DHIS2 UIDs
are made up (derived from the codes, so a rerun gives the same ones).

- Target populations: for every jurisdiction whose own facilities have demo children, the annual
  figure is the children born there per year (the demo spreads births over three years) divided
  by a registration share between 85 and 97% (fixed per code), so that registered children are
  a little below the target as in a real programme; every ancestor's figure is the sum of the
  figures below it. One figure per year for the years the demo's births cover.
- The DHIS2 mapping is the country's (the fallback for every province): every antigen-dose of
  the report catalogue to a data element, every jurisdiction to an organisation unit.
"""

from __future__ import annotations

import hashlib
import string
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry.facilities.models import Facility
from registry.patients.models import Patient
from registry.reports import catalogue, dhis2, population
from registry.reports.coverage import Tree
from registry.reports.models import Dhis2Mapping, TargetPopulation

BIRTH_YEARS = 3  # registry/demo/generator.py: births within the last three years
LOADED_BY = "system:demo-loader"
_ALNUM = string.ascii_letters + string.digits


def _fraction(code: str) -> float:
    return int.from_bytes(hashlib.sha256(f"nhr-demo-share:{code}".encode()).digest()[:4], "big") / 2**32


def demo_uid(kind: str, key: str) -> str:
    """An invented DHIS2 UID (a letter and ten letters or digits), the same for the same key."""
    digest = hashlib.sha256(f"nhr-demo-dhis2:{kind}:{key}".encode()).digest()
    return string.ascii_letters[digest[0] % 52] + "".join(_ALNUM[b % 62] for b in digest[1:11])


def target_rows(session: Session, today: date) -> list[dict]:
    """Rows for registry/reports/population.store, derived from the demo children."""
    tree = Tree.load(session)
    here = session.execute(select(Facility.jurisdiction_code, func.count()).join(Patient, Patient.home_facility == Facility.code)
                           .where(Patient.merged_into.is_(None)).group_by(Facility.jurisdiction_code)).all()
    annual: dict[str, float] = {}
    for code, children in here:
        own = children / BIRTH_YEARS / (0.85 + 0.12 * _fraction(code))
        node = tree.nodes.get(code)
        while node is not None:
            annual[node.code] = annual.get(node.code, 0) + own
            node = tree.nodes.get(node.parent_code) if node.parent_code else None
    years = range(today.year - BIRTH_YEARS, today.year + 1)
    return [{"jurisdiction_code": code, "year": year, "population": max(1, round(figure))}
            for code, figure in sorted(annual.items()) for year in years]


def mapping(session: Session) -> dict:
    """The country's DHIS2 mapping for the demo, validated like a loaded file."""
    tree = Tree.load(session)
    country = next(code for code, node in tree.nodes.items() if node.level == "country")
    document = {"jurisdiction": country, "measure": "any",
                "data_elements": {item: {"dataElement": demo_uid("de", item)} for item in catalogue.ITEMS},
                "org_units": {code: demo_uid("ou", code) for code in sorted(tree.below(country))}}
    return dhis2.validate(document, tree)


def missing(session: Session) -> bool:
    """True when the demo database has no target population or no DHIS2 mapping yet."""
    return not (session.scalar(select(func.count()).select_from(TargetPopulation))
                and session.scalar(select(func.count()).select_from(Dhis2Mapping)))


def load(session: Session, today: date) -> dict:
    """Store the demo's target populations and DHIS2 mapping; returns what was loaded (counts)."""
    rows = target_rows(session, today)
    figures = population.store(session, rows, LOADED_BY) if rows else 0
    doc = mapping(session)
    dhis2.store(session, doc, LOADED_BY)
    return {"figures": figures, "places": len({r["jurisdiction_code"] for r in rows}), "mapping": doc["jurisdiction"],
            "data_elements": len(doc["data_elements"]), "org_units": len(doc["org_units"])}
