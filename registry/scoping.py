"""Jurisdiction scope as SQL and as a test on one row: the only place scope is decided.

Every repository query that reads patient data takes the acting principal and applies one of
these. `capture` is where a principal may browse, read and change; `search` is where it may
find a patient by an exact identifier (see security/access/principal.py).

Rows must expose `home_facility`, `district` and `province` (patients do; immunizations expose
`facility` as the recording facility, which `facility_column` selects).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, false, true
from sqlalchemy.sql.schema import Table

from security.access.principal import Principal, Scope


def _clause(scope: Scope, table: Table, facility_column: str) -> ColumnElement[bool]:
    if scope.level == "national":
        return true()
    if scope.level == "province":
        return table.c.province == scope.province
    if scope.level == "district":
        return table.c.district == scope.district
    if scope.level == "facility":
        return table.c[facility_column] == scope.code
    return false()  # unknown level: fail closed


def _contains(scope: Scope, province: str, district: str, facility: str) -> bool:
    if scope.level == "national":
        return True
    if scope.level == "province":
        return province == scope.province
    if scope.level == "district":
        return district == scope.district
    if scope.level == "facility":
        return facility == scope.code
    return False


def capture_clause(principal: Principal, table: Table, facility_column: str = "home_facility") -> ColumnElement[bool]:
    return _clause(principal.scope, table, facility_column)


def scope_clause(scope: Scope, table: Table) -> ColumnElement[bool]:
    """A scope's clause over patients (home facility), for a caller that caches statements per
    scope (registry/linkage/repository.by_keys): capture_clause/search_clause take the scope."""
    return _clause(scope, table, "home_facility")


def search_clause(principal: Principal, table: Table) -> ColumnElement[bool]:
    return _clause(principal.search_scope, table, "home_facility")


def in_capture(principal: Principal, *, province: str, district: str, facility: str) -> bool:
    return _contains(principal.scope, province, district, facility)


def in_search(principal: Principal, *, province: str, district: str, facility: str) -> bool:
    return _contains(principal.search_scope, province, district, facility)


def jurisdiction_in_capture(principal: Principal, *, level: str, province: str | None, district: str | None) -> bool:
    """Whether a jurisdiction node (for an aggregate report) lies in the principal's capture
    scope. A facility-bound principal reaches no jurisdiction; the country only the nation."""
    scope = principal.scope
    if scope.level == "national":
        return True
    if level == "country" or scope.level == "facility":
        return False
    return _contains(scope, province or "", district or "", "")
