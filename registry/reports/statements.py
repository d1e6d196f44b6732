"""The set-based SQL behind the maintained aggregates: one statement computes the status rows of
any set of patients (all of them for a rebuild, a few for the refresher), one sums status rows
into counts. The rebuild and the refresher use the same statements, so incremental equals rebuilt.

Invariants:
- Reads only columns in clear (see models.py); decrypts nothing.
- Each patient is judged by the rules of the schedule group of its custodian province
  (`Group`); a custodian in no group counts as any-dose only (valid mask 0).
- The SQL verdict is the engine's loop unrolled (`_counted`: the doses of a series in date
  order fill its slots in turn, each judged against its slot and the previous counted dose),
  for every order the doses' dates can take (`_series_count`), and is used only where it
  provably equals the engine's (`_fast`): each catalogue item recorded at most once. Every
  other child (an item recorded twice, e.g. Penta-1 repeated after an early one) is flagged
  (`engine` = 1) and judged by the engine in Python (judge.py).
- What a judgement sees is stated once: `SELECTED_PATIENTS` (which patients are counted) and
  `DOSES_SEEN` (which dose rows a child's judgement sees); the engine path reads the same.
- Per-dose work (the bulk of a rebuild: every completed dose) is `dose_pivot`, one aggregate
  that PostgreSQL can run in parallel workers. Per-child work reads the age thresholds from one
  row per distinct birth date, computed once, not once per child, and judges every schedule
  group in the same pass.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from registry.reports import catalogue as cat
from registry.schedules import engine

_UNITS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}
STATUS_COLUMNS = "patient_id, province, district, leaf, cohort_month, any_mask, valid_mask, penta1_by_12m, engine"
# The patients the aggregates count (a condition over `patients p`); one place, so that a filter
# (e.g. merged records) is a one-line change for the rebuild, the refresher and the engine path.
SELECTED_PATIENTS = "p.merged_into IS NULL"  # a record merged into another counts through its survivor (issue 13)
# The dose rows a child's judgement sees (SQL pivot and engine alike): every completed dose row.
DOSES_SEEN = "SELECT patient_id, vaccine, dose_number, date_given FROM immunizations WHERE status = 'completed'"
# A child's leaf jurisdiction: the home facility's node when it lies in the child's district.
LEAF = "CASE WHEN f.district = p.district THEN f.jurisdiction_code ELSE p.district END"


@dataclass(frozen=True)
class Group:
    """Custodian provinces that share a schedule, and that schedule's validity rules."""

    rules: dict[int, cat.Rule]
    custodians: tuple[str, ...]
    schedule: engine.Schedule | None = None


def _add(pg: bool, col: str, duration: str) -> str:
    n, unit = engine.parse_duration(duration)
    if pg:
        if unit in "dw":
            return f"({col} + {n * (7 if unit == 'w' else 1)})"
        return f"CAST({col} + INTERVAL '{n} {_UNITS[unit]}' AS DATE)"
    if unit in "dw":
        return f"date({col}, '+{n * (7 if unit == 'w' else 1)} days')"
    # SQLite rolls 31 Jan + 1 month over to 2 or 3 March; the engine (and PostgreSQL) clamp to
    # the month's last day: the smaller of the rolled date and the last day of the target month
    months = n if unit == "m" else 12 * n
    return f"min(date({col}, '+{months} months'), date({col}, 'start of month', '+{months + 1} months', '-1 day'))"


def _age(duration: str) -> str:
    """The column holding birth date + `duration` (one row per birth date, see `_ages`)."""
    n, unit = engine.parse_duration(duration)
    return f"t_{n}{unit}"


def _durations(groups: list[Group]) -> list[str]:
    slots = [slot for g in groups for series in (_series_slots(g.schedule) or []) for _, slot in series]
    return sorted({cat.ZERO_DOSE_AGE} | {x.min_age for x in slots} | {x.max_age for x in slots if x.max_age})


def _ages(pg: bool, groups: list[Group], where: str) -> str:
    """One row per distinct birth date of the patients matching `where`: its cohort month and
    every age threshold the rules need (a few thousand rows for a million children)."""
    cols = ", ".join(f"{_add(pg, 'b', d)} AS {_age(d)}" for d in _durations(groups))
    cohort = "CAST(to_char(b, 'YYYYMM') AS INTEGER)" if pg else "CAST(strftime('%Y%m', b) AS INTEGER)"
    return (f"SELECT b AS birth_date, {cohort} AS cohort_month, {cols} "
            f"FROM (SELECT DISTINCT p.birth_date AS b FROM patients p WHERE ({where}) AND {SELECTED_PATIENTS}) x")


def _series_slots(schedule: engine.Schedule | None) -> list[list[tuple[int, engine.Slot]]] | None:
    """(catalogue item, slot) of each slot, per series (series wholly outside the catalogue left
    out); None when a series is only partly in the catalogue (then no child is provably equal)."""
    if schedule is None:
        return []
    position = {item: i for i, item in enumerate(cat.ITEMS)}
    out = []
    for series in schedule.series:
        items = [(position.get(f"{slot.vaccine}-{slot.dose}"), slot) for slot in series.slots]
        if all(i is None for i, _ in items):
            continue
        if any(i is None for i, _ in items):
            return None
        out.append(items)
    return out


MAX_PERMUTED = 3  # series up to this long are judged in SQL whatever their doses' date order


def _counted(pg: bool, series: list[tuple[int, engine.Slot]], order: tuple[int, ...], k: int = 0, slot: int = 0,
             prev: str | None = None) -> str:
    """How many slots of the series the engine fills when it meets the series' recorded items in
    `order` (its date order): the engine's loop unrolled. The k-th item in that order, if
    present, fills slot `slot` if it passes the slot's checks against `prev`, the previous
    counted dose (same day: a duplicate; too soon: the interval), else it is invalid."""
    if k == len(order) or slot == len(series):
        return "0"
    d, rule = f"d{series[order[k]][0]}", series[slot][1]
    checks = [f"{d} IS NOT NULL", f"{d} >= {_age(rule.min_age)}"]
    if rule.max_age is not None:
        checks.append(f"{d} <= {_age(rule.max_age)}")
    if prev is not None:
        checks.append(f"{d} <> {prev}")
        if rule.min_interval is not None:
            checks.append(f"{d} >= {_add(pg, prev, rule.min_interval)}")
    return (f"(CASE WHEN {' AND '.join(checks)} THEN 1 + {_counted(pg, series, order, k + 1, slot + 1, d)} "
            f"ELSE {_counted(pg, series, order, k + 1, slot, prev)} END)")


def _in_order(series: list[tuple[int, engine.Slot]], order: tuple[int, ...]) -> str:
    """True when the present items' engine order (date, then dose number) is `order`."""
    conds = []
    for x, a in enumerate(order):
        for b in order[x + 1:]:
            op = "<=" if series[a][1].dose < series[b][1].dose else "<"
            da, db = f"d{series[a][0]}", f"d{series[b][0]}"
            conds.append(f"({da} IS NULL OR {db} IS NULL OR {da} {op} {db})")
    return " AND ".join(conds) or "1 = 1"


def _series_count(pg: bool, series: list[tuple[int, engine.Slot]]) -> str:
    """`_counted` under whichever order the child's dates give (the slot order first, as most
    histories are in order; a longer series is judged in slot order only, see `_fast`)."""
    identity = tuple(sorted(range(len(series)), key=lambda j: series[j][1].dose))
    if len(series) > MAX_PERMUTED:
        return _counted(pg, series, identity)
    orders = [identity] + [o for o in itertools.permutations(range(len(series))) if o != identity]
    whens = " ".join(f"WHEN {_in_order(series, o)} THEN {_counted(pg, series, o)}" for o in orders[:-1])
    return f"(CASE {whens} ELSE {_counted(pg, series, orders[-1])} END)" if whens else _counted(pg, series, identity)


def _valid_mask(pg: bool, group: Group) -> str:
    """Bit i set when the engine fills item i's slot (the first `_counted` slots of each series)."""
    parts = []
    for series in _series_slots(group.schedule) or []:
        prefixes = [sum(1 << item for item, _ in series[:j]) for j in range(1, len(series) + 1)]
        whens = " ".join(f"WHEN {j} THEN {m}" for j, m in enumerate(prefixes, start=1))
        parts.append(f"(CASE {_series_count(pg, series)} {whens} ELSE 0 END)")
    return " + ".join(parts or ["0"])


def group_params(groups: list[Group]) -> dict[str, list[str]]:
    """The bind parameters of `status_select`'s custodian tests."""
    return {} if len(groups) == 1 else {f"custodians_{n}": list(g.custodians) for n, g in enumerate(groups)}


def _valid_by_group(pg: bool, groups: list[Group]) -> str:
    if len(groups) == 1:
        return _valid_mask(pg, groups[0])
    branches = " ".join(f"WHEN custodian IN :custodians_{n} THEN {_valid_mask(pg, g)}" for n, g in enumerate(groups))
    return f"CASE {branches} ELSE 0 END"


def _fast(group: Group) -> str:
    """True where the SQL verdict provably equals the engine's: each catalogue item recorded at
    most once (and, in a series longer than MAX_PERMUTED, the dates strictly increasing in dose
    order). Then within a series the engine meets one dose per slot item, in the order of
    their dates (ties by dose number), and `_series_count` is its loop unrolled for that order;
    a second dose on one day is its duplicate rule. Repeated records go to the engine."""
    series = _series_slots(group.schedule)
    if series is None:
        return "1 = 0"
    popcount = " + ".join(f"((any_mask >> {k}) & 1)" for k in range(len(cat.ITEMS)))
    parts = [f"n_doses = {popcount}"]
    for slots in series:
        if len(slots) > MAX_PERMUTED:
            items = [item for item, _ in sorted(slots, key=lambda x: x[1].dose)]
            for i, a in enumerate(items):
                for b in items[i + 1:]:
                    parts.append(f"(d{a} IS NULL OR d{b} IS NULL OR d{a} < d{b})")
    return " AND ".join(parts)


def _engine_by_group(groups: list[Group]) -> str:
    def flag(g: Group) -> str:
        return f"CASE WHEN {_fast(g)} THEN 0 ELSE 1 END"

    if len(groups) == 1:
        return flag(groups[0])
    branches = " ".join(f"WHEN custodian IN :custodians_{n} THEN {flag(g)}" for n, g in enumerate(groups))
    return f"CASE {branches} ELSE 0 END"


def dose_pivot(pg: bool, dose_where: str = "1 = 1") -> str:
    """Per patient with a counted dose matching `dose_where` (over `immunizations i`): the mask
    of items it has (`any_mask`) and the earliest date of each item (d0..dN). The item number
    comes from a join to a constant table, so each dose is compared once, not once per item;
    the per-item minimums then test a small integer. This is all the per-dose work of a
    rebuild, and PostgreSQL can share it between parallel workers."""
    codes = ", ".join(f"('{v}', {n}, {k})" for k, (v, n) in enumerate(cat.split(x) for x in cat.ITEMS))
    any_mask = "BIT_OR(CAST(1 AS BIGINT) << c.column3)" if pg else "SUM(DISTINCT 1 << c.column3)"
    pivots = ", ".join(f"MIN(i.date_given) FILTER (WHERE c.column3 = {k}) AS d{k}" for k in range(len(cat.ITEMS)))
    return (f"SELECT i.patient_id, {any_mask} AS any_mask, COUNT(*) AS n_doses, {pivots} FROM ({DOSES_SEEN}) i "
            f"JOIN (VALUES {codes}) AS c ON c.column1 = i.vaccine AND c.column2 = i.dose_number "
            f"WHERE {dose_where} GROUP BY i.patient_id")


def status_select(pg: bool, groups: list[Group], where: str, doses: str) -> str:
    """SELECT of `report_child_status` rows (columns `STATUS_COLUMNS`) for the patients matching
    `where` (over `patients p`), except records merged into another (issue 13: only the survivor
    counts, with the doses moved to it); `doses` is `dose_pivot(...)` as a subquery, or a table holding
    it. On PostgreSQL, `OFFSET 0` keeps the inner query from being flattened, which would copy
    each age threshold into every test that reads it."""
    p1 = cat.ITEMS.index(cat.ZERO_DOSE_ITEM)
    by_12m = f"(CASE WHEN d{p1} < {_age(cat.ZERO_DOSE_AGE)} THEN 1 ELSE 0 END)"
    ages = ", ".join(f"a.{_age(d)}" for d in _durations(groups))
    dates = ", ".join(f"d.d{k}" for k in range(len(cat.ITEMS)))
    carried = ", ".join(f"d{k}" for k in range(len(cat.ITEMS)))
    offset = " OFFSET 0" if pg else ""
    return f"""
SELECT patient_id, province, district, leaf, cohort_month, (any_mask | valid_mask) AS any_mask, valid_mask, penta1_by_12m,
  {_engine_by_group(groups)} AS engine
FROM (
  SELECT patient_id, province, district, custodian, leaf, cohort_month, any_mask, n_doses, {carried},
    {_valid_by_group(pg, groups)} AS valid_mask, {by_12m} AS penta1_by_12m
  FROM (
    SELECT p.id AS patient_id, p.province AS province, p.district AS district, p.custodian AS custodian,
      {LEAF} AS leaf, a.cohort_month AS cohort_month, {ages}, COALESCE(d.any_mask, 0) AS any_mask,
      COALESCE(d.n_doses, 0) AS n_doses, {dates}
    FROM patients p JOIN facilities f ON f.code = p.home_facility
    JOIN ({_ages(pg, groups, where)}) a ON a.birth_date = p.birth_date
    LEFT JOIN {doses} d ON d.patient_id = p.id
    WHERE ({where}) AND {SELECTED_PATIENTS}{offset}
  ) s{offset}
) v"""


def counts_insert(where: str) -> str:
    """INSERT ... SELECT of `report_coverage_counts` from the status rows matching `where`.
    Children with the same place, month and masks are counted together first (few distinct
    patterns), so the per-item sums run over patterns, not over children."""
    sums = ",\n".join(f"SUM(((any_mask >> {k}) & 1) * c) AS a{k}, SUM(((valid_mask >> {k}) & 1) * c) AS v{k}"
                      for k in range(len(cat.ITEMS)))
    selects = [f"SELECT leaf, cohort_month, '{cat.CHILDREN}', province, district, n, p1 FROM g"]
    selects += [f"SELECT leaf, cohort_month, '{item}', province, district, a{k}, v{k} FROM g WHERE a{k} > 0"
                for k, item in enumerate(cat.ITEMS)]
    return f"""
WITH patterns AS (
  SELECT leaf, cohort_month, MIN(province) AS province, MIN(district) AS district, any_mask, valid_mask, penta1_by_12m,
    COUNT(*) AS c
  FROM report_child_status WHERE {where} GROUP BY leaf, cohort_month, any_mask, valid_mask, penta1_by_12m),
g AS (
  SELECT leaf, cohort_month, MIN(province) AS province, MIN(district) AS district, SUM(c) AS n,
    SUM(penta1_by_12m * c) AS p1, {sums}
  FROM patterns GROUP BY leaf, cohort_month)
INSERT INTO report_coverage_counts (leaf, cohort_month, item, province, district, any_count, valid_count)
{" UNION ALL ".join(selects)}"""
