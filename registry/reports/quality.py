"""Data quality, measured (issue 12, item 5): for a period, per facility, union council,
district and province, how complete, timely and plausible the records are. Nothing is
decrypted: completeness counts non-null ciphertext columns, everything else reads clear columns.

Metrics (named after the WHO Data Quality Review, "Module 1: Framework and metrics", WHO 2017,
where one applies; the DQR judges aggregate facility reports, NHR applies its dimensions to
individual records):
- Completeness (DQR dimension 1, "completeness of indicator data": missing values), of the
  patients registered in the period at each facility: B-form, guardian CNIC, phone (non-null
  `bform_ct`, `guardian_cnic_ct`, `phone_ct`); of the doses given in the period: lot number.
- Timeliness (DQR dimension 1, "timeliness": transposed from report deadlines to data entry):
  days from the date a dose was given to the local date it was recorded; the median and the
  share recorded within 7 and within 30 days. Reported doses (below) are left out: their delay
  measures the family's memory, not the facility's data entry.
- Internal consistency (DQR dimension 2): doses recorded against a schedule rule, by rule
  (`override_rule`), as a share of the period's doses.
- Provenance: the share of doses *reported* (not administered here) among the period's doses,
  read from `immunizations.administered_here` (false = reported; FHIR's `primarySource` alone
  does not say it: a partner's own record of a dose it gave is primary but not given here).
  Unknown vaccine codes: doses stored with vaccine `UNKNOWN` (the vocabulary of issue 12).
  Records, not components: the extra rows of a combination product (`component_of`) are
  left out of every dose count.
- Suspected duplicates (record linkage, issue 13): records that belong to a candidate pair
  proposed in the period, at their home facility, split into those whose pair is still open
  (open or unsure) and those whose pair a data steward decided (merged or not the same). A
  record counts once per state however many pairs it is in; a cross-place pair counts in both
  places. Nothing but ids and statuses is read.

Places: patients count at their home facility (the registering facility), doses at the
facility that recorded them; both by that facility's jurisdiction. The period is [from, to] in
local dates: registrations by `created_at`, doses by `date_given`; completed doses only.
Every count column is suppressed with suppression.suppress_column, and a share, median or
histogram derived from a suppressed count is suppressed with it.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from sqlalchemy import case, func, literal_column, select, union_all
from sqlalchemy.orm import Session

from registry.clock import LOCAL_TZ
from registry.facilities.models import Facility
from registry.immunizations.models import Immunization
from registry.linkage.models import LinkCandidate
from registry.patients.models import Patient
from registry.reports.units import TOTAL, Units, pct, suppress

P, D, F = Patient.__table__, Immunization.__table__, Facility.__table__
UNKNOWN_VACCINE = "UNKNOWN"
PATIENT_FIELDS = {"bform": P.c.bform_ct, "guardian_cnic": P.c.guardian_cnic_ct, "phone": P.c.phone_ct}
WITHIN = (7, 30)


def has_provenance() -> bool:
    return "administered_here" in D.c


def _lag_days(dialect: str):
    """Days from date_given to the local date of recorded_at, in SQL."""
    hours = int(LOCAL_TZ.utcoffset(None).total_seconds() // 3600)
    if dialect == "postgresql":
        return literal_column(f"(CAST(timezone('UTC', {D.name}.recorded_at) + interval '{hours} hours' AS date)"
                              f" - {D.name}.date_given)")
    return literal_column(f"CAST(julianday(date({D.name}.recorded_at, '{hours:+d} hours'))"
                          f" - julianday({D.name}.date_given) AS INTEGER)")


def _bounds(start: date, end: date) -> tuple[datetime, datetime]:
    return datetime.combine(start, time(0), LOCAL_TZ), datetime.combine(end + timedelta(days=1), time(0), LOCAL_TZ)


def _grouped(session: Session, units: Units, source, where, extra=(), measures=()):
    """Rows of (unit, extra..., measures...) summed per unit: [(unit, extra_values, counts)]."""
    place = (F.c.province, F.c.district, F.c.jurisdiction_code, F.c.code)
    q = (select(*place, *extra, *measures).select_from(source)
         .where(units.where(F.c.province, F.c.district), *where).group_by(*place, *extra))
    out = []
    for r in session.execute(q).all():
        unit = units.unit_of(r.province, r.district, r.jurisdiction_code, r.code)
        if unit is not None:
            out.append((unit, tuple(r[4:4 + len(extra)]), tuple(r[4 + len(extra):])))
    return out


def load(session: Session, units: Units, start: date, end: date) -> tuple[dict, dict]:
    """(columns, lags): count columns per unit, and per unit a histogram lag -> doses."""
    cols: dict[str, dict[str, int]] = {}

    def add(name: str, unit: str, n: int) -> None:
        cols.setdefault(name, {})
        cols[name][unit] = cols[name].get(unit, 0) + int(n or 0)

    lo, hi = _bounds(start, end)
    patients = P.join(F, F.c.code == P.c.home_facility)
    measures = (func.count(), *(func.count(c) for c in PATIENT_FIELDS.values()))  # count(x): non-null ciphertexts
    for unit, _, counts in _grouped(session, units, patients, (P.c.created_at >= lo, P.c.created_at < hi), measures=measures):
        add("patients", unit, counts[0])
        for name, n in zip(PATIENT_FIELDS, counts[1:]):
            add(f"with_{name}", unit, n)
    doses = D.join(F, F.c.code == D.c.facility)
    given = (D.c.status == "completed", D.c.date_given >= start, D.c.date_given <= end, D.c.component_of.is_(None))
    measures = [func.count(), func.count(D.c.lot_number), func.count(D.c.override_rule),
                func.sum(case((D.c.vaccine == UNKNOWN_VACCINE, 1), else_=0))]
    if has_provenance():
        measures.append(func.sum(case((D.c.administered_here == False, 1), else_=0)))  # noqa: E712
    for unit, _, counts in _grouped(session, units, doses, given, measures=measures):
        add("doses", unit, counts[0])
        add("with_lot_number", unit, counts[1])
        add("invalid", unit, counts[2])
        add("unknown_vaccine", unit, counts[3])
        if has_provenance():
            add("reported", unit, counts[4])
    for unit, (rule,), (n,) in _grouped(session, units, doses, (*given, D.c.override_rule.is_not(None)),
                                        extra=(D.c.override_rule,), measures=(func.count(),)):
        add(f"invalid:{rule}", unit, n)
    administered = (*given, D.c.administered_here == True) if has_provenance() else given  # noqa: E712
    C = LinkCandidate.__table__
    in_period = (C.c.created_at >= lo, C.c.created_at < hi)
    members = union_all(*(select(C.c[side].label("patient_id"),
                                 case((C.c.status.in_(("open", "unsure")), "open"), else_="resolved").label("state"))
                          .where(*in_period) for side in ("left_id", "right_id"))).subquery()
    paired = members.join(P, P.c.id == members.c.patient_id).join(F, F.c.code == P.c.home_facility)
    for unit, (state,), (n,) in _grouped(session, units, paired, (), extra=(members.c.state,),
                                         measures=(func.count(func.distinct(P.c.id)),)):
        add(f"duplicates_{state}", unit, n)
    lag = _lag_days(session.get_bind().dialect.name).label("lag")
    lags: dict[str, dict[int, int]] = {}
    for unit, (days,), (n,) in _grouped(session, units, doses, administered, extra=(lag,), measures=(func.count(),)):
        days = max(0, int(days or 0))
        lags.setdefault(unit, {})
        lags[unit][days] = lags[unit].get(days, 0) + n
        add("timed", unit, n)
        for k in WITHIN:
            add(f"within_{k}_days", unit, n if days <= k else 0)
    return cols, lags


def median(histogram: dict[int, int]) -> float | None:
    n = sum(histogram.values())
    if not n:
        return None
    ordered = sorted(histogram.items())

    def nth(k: int) -> int:
        seen = 0
        for value, count in ordered:
            seen += count
            if seen > k:
                return value
        return ordered[-1][0]  # pragma: no cover

    return nth(n // 2) if n % 2 else (nth(n // 2 - 1) + nth(n // 2)) / 2


def build(session: Session, node, tree, start: date, end: date, threshold: int) -> dict:
    units = Units(session, node, tree)
    cols, lags = load(session, units, start, end)
    base = ["patients", *(f"with_{f}" for f in PATIENT_FIELDS), "doses", "with_lot_number", "invalid", "unknown_vaccine",
            "timed", *(f"within_{k}_days" for k in WITHIN), "duplicates_open", "duplicates_resolved"] + \
        (["reported"] if has_provenance() else [])
    rules = sorted(c for c in cols if c.startswith("invalid:"))
    for name in base:
        cols.setdefault(name, {})
    codes = sorted(units.codes)
    values, hidden = suppress(codes, {c: cols[c] for c in base + rules}, threshold)
    lags[TOTAL] = {}
    for unit in codes:
        for days, n in lags.get(unit, {}).items():
            lags[TOTAL][days] = lags[TOTAL].get(days, 0) + n

    def row(code: str) -> dict:
        def shown(name: str) -> int | None:
            return None if name in hidden[code] else values[code].get(name, 0)

        patients, doses, timed = shown("patients"), shown("doses"), shown("timed")
        out = {
            "code": node.code if code == TOTAL else code, "name": units.names.get(node.code if code == TOTAL else code),
            "completeness": {
                "patients_registered": patients,
                **{f"{f}_pct": pct(shown(f"with_{f}"), patients) for f in PATIENT_FIELDS},
                "doses": doses, "lot_number_pct": pct(shown("with_lot_number"), doses)},
            "timeliness": {
                "doses_timed": timed,
                "median_days": median(lags.get(code, {})) if timed is not None else None,
                **{f"within_{k}_days_pct": pct(shown(f"within_{k}_days"), timed) for k in WITHIN}},
            "consistency": {
                "invalid_pct": pct(shown("invalid"), doses),
                "invalid_by_rule": {r.split(":", 1)[1]: {"count": shown(r), "pct": pct(shown(r), doses)} for r in rules}},
            "unknown_vaccine_codes": {"count": shown("unknown_vaccine"), "pct": pct(shown("unknown_vaccine"), doses)},
            "suspected_duplicates": {"records_open": shown("duplicates_open"), "records_resolved": shown("duplicates_resolved")},
            "suppressed": sorted(hidden[code]),
        }
        if has_provenance():
            out["provenance"] = {"reported": shown("reported"), "reported_pct": pct(shown("reported"), doses)}
        return out

    return {"jurisdiction": {"code": node.code, "name": node.name, "level": node.level},
            "period": {"from": start.isoformat(), "to": end.isoformat()}, "suppression_threshold": threshold,
            "rows_are": "facilities" if units.by_facility else "jurisdictions",
            "provenance_available": has_provenance(), "rows": [row(u) for u in codes], "total": row(TOTAL)}
