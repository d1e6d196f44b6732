"""Refusals and missed opportunities (issue 12, item 4): children of a birth cohort with a dose
recorded *not given*, per reason group and jurisdiction, small cells suppressed.

Definitions:
- A dose not given is an immunization row with status `not-done` (a voided one no longer is);
  its reason code belongs to one group of the value set (registry/immunizations/not_done.py):
  `refusal` (the caregiver refused), and the missed opportunities: `medical`, `supply`,
  `absent`, `service`, `other`.
- Each cell counts *children* (distinct patients) of the cohort with at least one such record in
  the group; `any` counts children with any not-done record; `children` the registered children
  of the cohort (the denominator of `refusal_pct`). A child is placed where it lives, as in the
  coverage report: its home facility's jurisdiction (or its district when that facility lies
  in another district).
- Every column is suppressed with suppression.suppress_column (fewer than the threshold,
  complementary cells), and a share derived from a suppressed count is suppressed.

Computed live from the dose and patient tables (clear columns only: status, reason code, birth
date, residence, home facility); nothing is decrypted. Not-done records are a small fraction
of the doses, and the query is one grouped statement per column family.
"""

from __future__ import annotations

from calendar import monthrange
from datetime import date

from sqlalchemy import case, distinct, func, literal, select
from sqlalchemy.orm import Session

from registry.facilities.models import Facility
from registry.immunizations import not_done
from registry.immunizations.models import Immunization
from registry.patients.models import Patient
from registry.reports.coverage import Cohort
from registry.reports.units import TOTAL, Units, pct, suppress

P, D, F = Patient.__table__, Immunization.__table__, Facility.__table__
COLUMNS = ("children", "any", *not_done.groups())


def cohort_dates(cohort: Cohort) -> tuple[date, date]:
    y1, m1 = divmod(cohort.first, 100)
    y2, m2 = divmod(cohort.last, 100)
    return date(y1, m1, 1), date(y2, m2, monthrange(y2, m2)[1])


def _group_expr():
    return case({code: r["group"] for code, r in not_done.reasons().items()}, value=D.c.not_done_reason, else_=literal("other"))


def _place_rows(session: Session, units: Units, extra_cols, where, joined_doses: bool):
    """Grouped counts of distinct children per place (and `extra_cols`)."""
    place = (P.c.province, P.c.district, F.c.jurisdiction_code, F.c.district.label("fdistrict"), F.c.code)
    source = P.join(F, F.c.code == P.c.home_facility)
    if joined_doses:
        source = D.join(source, P.c.id == D.c.patient_id)
    q = (select(*place, *extra_cols, func.count(distinct(P.c.id)).label("n")).select_from(source)
         .where(units.where(P.c.province, P.c.district), *where).group_by(*place, *extra_cols))
    return session.execute(q).all()


def _unit(units: Units, r) -> str | None:
    leaf = r.jurisdiction_code if r.fdistrict == r.district else r.district
    return units.unit_of(r.province, r.district, leaf, r.code)


def build(session: Session, node, tree, cohort: Cohort, threshold: int) -> dict:
    first, last = cohort_dates(cohort)
    units = Units(session, node, tree)
    in_cohort = (P.c.birth_date >= first, P.c.birth_date <= last)
    not_given = (*in_cohort, D.c.status == not_done.STATUS)
    columns: dict[str, dict[str, int]] = {c: {} for c in COLUMNS}

    def add(column: str, unit: str | None, n: int) -> None:
        if unit is not None:
            columns[column][unit] = columns[column].get(unit, 0) + n

    for r in _place_rows(session, units, (), in_cohort, False):
        add("children", _unit(units, r), r.n)
    for r in _place_rows(session, units, (), not_given, True):
        add("any", _unit(units, r), r.n)
    group = _group_expr().label("grp")
    for r in _place_rows(session, units, (group,), not_given, True):
        add(r.grp if r.grp in columns else "other", _unit(units, r), r.n)
    codes = sorted(units.codes)
    values, hidden = suppress(codes, columns, threshold)

    def row(code: str) -> dict:
        shown = {c: None if c in hidden[code] else values[code].get(c, 0) for c in COLUMNS}
        return {"code": node.code if code == TOTAL else code, "name": units.names.get(node.code if code == TOTAL else code),
                "children": shown["children"], "children_not_vaccinated": shown["any"],
                "groups": {g: shown[g] for g in not_done.groups()},
                "refusal_pct": pct(shown["refusal"], shown["children"]),
                "suppressed": sorted(hidden[code])}

    return {"jurisdiction": {"code": node.code, "name": node.name, "level": node.level}, "cohort": cohort.label,
            "suppression_threshold": threshold, "value_set": f"{not_done.current()['code']}@{not_done.VERSION}",
            "groups": not_done.groups(), "rows": [row(u) for u in codes], "total": row(TOTAL)}
