"""`nhr jurisdictions` and `nhr facilities`: list, load from a CSV file, add one, retire one
(registry/reference_data.py checks a file whole before writing anything and says what retiring means)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from registry.errors import InvalidInput
from security.audit import trail as audit

console = Console()
jurisdictions_app = typer.Typer(help="The jurisdiction hierarchy (country, provinces, districts, tehsils, union councils)",
                                no_args_is_help=True)
facilities_app = typer.Typer(help="Health facilities", no_args_is_help=True)


def _runtime():
    from registry.runtime import Runtime
    from registry.settings import get_settings

    return Runtime.build(get_settings())


def changes_table(title: str, changes) -> Table:
    table = Table(title=title)
    for col in ("added", "renamed", "reactivated", "unchanged"):
        table.add_column(col, justify="right")
    table.add_row(str(len(changes.added)), str(len(changes.renamed)), str(len(changes.reactivated)), str(changes.unchanged))
    return table


def _apply(kind: str, rows: list[dict], what: str) -> None:
    from registry import reference_data

    rt = _runtime()
    apply = reference_data.apply_jurisdictions if kind == "jurisdictions" else reference_data.apply_facilities
    try:
        with rt.sessions.begin() as s:
            changes = apply(s, rows, what)
    except InvalidInput as exc:
        console.print(f"[red]refused, nothing written[/]: {exc.message}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(changes_table(kind, changes))


@jurisdictions_app.command("list")
def jurisdictions_list(level: str = typer.Option(None, help="only this level, e.g. province or district (default: all)"),
                       under: str = typer.Option(None, help="only nodes in this province or district (default: all)"),
                       retired: bool = typer.Option(False, help="include retired nodes")):
    """List the hierarchy's nodes."""
    from registry.jurisdictions.models import Jurisdiction

    rt = _runtime()
    q = select(Jurisdiction).order_by(Jurisdiction.code)
    if level:
        q = q.where(Jurisdiction.level == level)
    if under:
        q = q.where((Jurisdiction.province == under) | (Jurisdiction.district == under))
    if not retired:
        q = q.where(Jurisdiction.active.is_(True))
    table = Table()
    for col in ("code", "name", "level", "parent", "status"):
        table.add_column(col)
    with rt.sessions() as s:
        for j in s.scalars(q):
            table.add_row(j.code, j.name, j.level, j.parent_code or "", "active" if j.active else "retired")
    console.print(table)


@jurisdictions_app.command("load")
def jurisdictions_load(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV: code,name,level,parent_code")):
    """Add the file's nodes and rename changed ones (checked whole first; moving a node is refused)."""
    from registry import reference_data

    _apply("jurisdictions", reference_data.read_file(file, reference_data.JURISDICTION_COLUMNS, file.name), file.name)


@jurisdictions_app.command("add")
def jurisdictions_add(code: str = typer.Option(..., help="e.g. PK-PB-LAH-T01-UC07"), name: str = typer.Option(..., help="the node's name"),
                      level: str = typer.Option(..., help="province, district, tehsil or union_council"),
                      parent: str = typer.Option(..., help="code of the parent node")):
    """Add one node."""
    _apply("jurisdictions", [{"code": code, "name": name, "level": level, "parent_code": parent}], "jurisdiction")


@jurisdictions_app.command("retire")
def jurisdictions_retire(code: str = typer.Argument(..., help="jurisdiction code, e.g. PK-PB-LAH-T04"),
                         cascade: bool = typer.Option(False, help="also retire every place and facility below it")):
    """Retire a node: no new registrations, moves, accounts, facilities or places there; its records stay
    readable and reports still count them. Refused while places or facilities below it are active,
    unless --cascade. Audited. Reactivate by loading it again (`nhr jurisdictions load`)."""
    from registry import reference_data

    rt = _runtime()
    try:
        with rt.sessions.begin() as s:
            places, facilities = reference_data.retire_jurisdiction(s, code, cascade=cascade)
            if places:
                _trail().record(s, "jurisdiction.retire", audit.SUCCESS, resource_type="Jurisdiction", resource_id=code,
                                detail={"via": "cli", "places": len(places), "facilities": len(facilities), "cascade": cascade})
    except InvalidInput as exc:
        console.print(f"[red]refused, nothing retired[/]: {exc.message}", soft_wrap=True)
        raise typer.Exit(1)
    if not places:
        console.print(f"{code}: was already retired")
        return
    console.print(f"{code}: retired ({len(places)} place(s) and {len(facilities)} facilities)", soft_wrap=True)


def _trail():
    import getpass
    import uuid

    from security.access.principal import AccessContext
    from security.audit.trail import AuditTrail

    return AuditTrail(AccessContext(None, "HSYSADMIN", f"cli-{uuid.uuid4().hex[:12]}", f"cli:{getpass.getuser()}"))


@facilities_app.command("list")
def facilities_list(under: str = typer.Option(None, help="only facilities in this province or district (default: all)"),
                    retired: bool = typer.Option(False, help="include retired facilities")):
    """List facilities."""
    from registry.facilities.models import Facility

    rt = _runtime()
    q = select(Facility).order_by(Facility.code)
    if under:
        q = q.where((Facility.province == under) | (Facility.district == under))
    if not retired:
        q = q.where(Facility.active.is_(True))
    table = Table()
    for col in ("code", "name", "kind", "place", "status"):
        table.add_column(col)
    with rt.sessions() as s:
        for f in s.scalars(q):
            table.add_row(f.code, f.name, f.kind, f.jurisdiction_code, "active" if f.active else "retired")
    console.print(table)


@facilities_app.command("load")
def facilities_load(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV: code,name,kind,jurisdiction_code")):
    """Add the file's facilities, update changed names and kinds, reactivate retired ones listed again."""
    from registry import reference_data

    _apply("facilities", reference_data.read_file(file, reference_data.FACILITY_COLUMNS, file.name), file.name)


@facilities_app.command("add")
def facilities_add(code: str = typer.Option(..., help="new facility code, e.g. F-LAH-07"),
                   name: str = typer.Option(..., help="the facility's name"),
                   kind: str = typer.Option(..., help="bhu, rhc, thq, dhq, epi_centre, teaching_hospital, private_clinic or outreach"),
                   place: str = typer.Option(..., "--jurisdiction", help="district, tehsil or union council code")):
    """Add one facility."""
    _apply("facilities", [{"code": code, "name": name, "kind": kind, "jurisdiction_code": place}], "facility")


@facilities_app.command("retire")
def facilities_retire(code: str = typer.Argument(..., help="facility code")):
    """Retire a facility: no new staff accounts are bound to it; its records stay where they are."""
    from registry import reference_data

    rt = _runtime()
    try:
        with rt.sessions.begin() as s:
            changed = reference_data.retire_facility(s, code)
            if changed:
                _trail().record(s, "facility.retire", audit.SUCCESS, resource_type="Facility", resource_id=code, detail={"via": "cli"})
    except InvalidInput as exc:
        console.print(f"[red]refused[/]: {exc.message}")
        raise typer.Exit(1)
    console.print(f"{code}: {'retired' if changed else 'was already retired'}")
