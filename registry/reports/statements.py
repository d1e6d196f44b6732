"""The set-based SQL behind the maintained aggregates: one statement computes the status rows of
any set of patients (all of them for a rebuild, a few for the refresher), one sums status rows
into counts. The rebuild and the refresher use the same statements, so incremental equals rebuilt.

Invariants:
- Reads only columns in clear (see models.py); decrypts nothing.
- Each patient is judged by the rules of the schedule group of its custodian province
  (`Group`); a custodian in no group counts as any-dose only (valid mask 0).
- Per-dose work (the bulk of a rebuild: every completed dose) is `dose_pivot`, one aggregate
  that PostgreSQL can run in parallel workers. Per-child work reads the age thresholds from one
  row per distinct birth date, computed once, not once per child, and judges every schedule
  group in the same pass.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.reports import catalogue as cat
from registry.schedules import engine

_UNITS = {"d": "days", "w": "weeks", "m": "months", "y": "years"}
STATUS_COLUMNS = "patient_id, province, district, leaf, cohort_month, any_mask, valid_mask, penta1_by_12m"


@dataclass(frozen=True)
class Group:
    """Custodian provinces that share a schedule, and that schedule's validity rules."""

    rules: dict[int, cat.Rule]
    custodians: tuple[str, ...]


def _add(pg: bool, col: str, duration: str) -> str:
    n, unit = engine.parse_duration(duration)
    if pg:
        if unit in "dw":
            return f"({col} + {n * (7 if unit == 'w' else 1)})"
        return f"CAST({col} + INTERVAL '{n} {_UNITS[unit]}' AS DATE)"
    if unit in "dw":
        return f"date({col}, '+{n * (7 if unit == 'w' else 1)} days')"
    return f"date({col}, '+{n} {_UNITS[unit]}')"


def _age(duration: str) -> str:
    """The column holding birth date + `duration` (one row per birth date, see `_ages`)."""
    n, unit = engine.parse_duration(duration)
    return f"t_{n}{unit}"


def _durations(groups: list[Group]) -> list[str]:
    rules = [r for g in groups for r in g.rules.values()]
    return sorted({cat.ZERO_DOSE_AGE} | {r.min_age for r in rules} | {r.max_age for r in rules if r.max_age})


def _ages(pg: bool, groups: list[Group], where: str) -> str:
    """One row per distinct birth date of the patients matching `where`: its cohort month and
    every age threshold the rules need (a few thousand rows for a million children)."""
    cols = ", ".join(f"{_add(pg, 'b', d)} AS {_age(d)}" for d in _durations(groups))
    cohort = "CAST(to_char(b, 'YYYYMM') AS INTEGER)" if pg else "CAST(strftime('%Y%m', b) AS INTEGER)"
    return f"SELECT b AS birth_date, {cohort} AS cohort_month, {cols} FROM (SELECT DISTINCT p.birth_date AS b FROM patients p WHERE {where}) x"


def _valid_conditions(pg: bool, rules: dict[int, cat.Rule]) -> dict[int, str]:
    conds: dict[int, str] = {}
    for i in range(len(cat.ITEMS)):
        rule = rules.get(i)
        if rule is None:
            continue
        parts = [f"d{i} >= {_age(rule.min_age)}"]
        if rule.max_age is not None:
            parts.append(f"d{i} <= {_age(rule.max_age)}")
        if rule.previous is not None:
            if rule.previous not in conds:
                continue  # the previous dose can never be valid, so neither can this one
            parts.append(conds[rule.previous])
            if rule.min_interval is not None:
                parts.append(f"d{i} >= {_add(pg, f'd{rule.previous}', rule.min_interval)}")
        conds[i] = "(" + " AND ".join(parts) + ")"
    return conds


def _valid_mask(pg: bool, rules: dict[int, cat.Rule]) -> str:
    valid = _valid_conditions(pg, rules)
    return " + ".join([f"(CASE WHEN {c} THEN {1 << k} ELSE 0 END)" for k, c in valid.items()] or ["0"])


def group_params(groups: list[Group]) -> dict[str, list[str]]:
    """The bind parameters of `status_select`'s custodian tests."""
    return {} if len(groups) == 1 else {f"custodians_{n}": list(g.custodians) for n, g in enumerate(groups)}


def _valid_by_group(pg: bool, groups: list[Group]) -> str:
    if len(groups) == 1:
        return _valid_mask(pg, groups[0].rules)
    branches = " ".join(f"WHEN custodian IN :custodians_{n} THEN {_valid_mask(pg, g.rules)}" for n, g in enumerate(groups))
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
    return (f"SELECT i.patient_id, {any_mask} AS any_mask, {pivots} FROM immunizations i "
            f"JOIN (VALUES {codes}) AS c ON c.column1 = i.vaccine AND c.column2 = i.dose_number "
            f"WHERE i.status = 'completed' AND {dose_where} GROUP BY i.patient_id")


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
    return f"""
SELECT patient_id, province, district, leaf, cohort_month, any_mask, {_valid_by_group(pg, groups)} AS valid_mask, {by_12m} AS penta1_by_12m
FROM (
  SELECT p.id AS patient_id, p.province AS province, p.district AS district, p.custodian AS custodian,
    CASE WHEN f.district = p.district THEN f.jurisdiction_code ELSE p.district END AS leaf,
    a.cohort_month AS cohort_month, {ages}, COALESCE(d.any_mask, 0) AS any_mask, {dates}
  FROM patients p JOIN facilities f ON f.code = p.home_facility
  JOIN ({_ages(pg, groups, where)}) a ON a.birth_date = p.birth_date
  LEFT JOIN {doses} d ON d.patient_id = p.id
  WHERE {where} AND p.merged_into IS NULL{" OFFSET 0" if pg else ""}
) s"""


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
