"""`nhr jurisdictions` and `nhr facilities`: list, load from a CSV file, add one, retire a facility
(registry/reference_data.py checks a file whole before writing anything)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from registry.errors import InvalidInput

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
                       under: str = typer.Option(None, help="only nodes in this province or district (default: all)")):
    """List the hierarchy's nodes."""
    from registry.jurisdictions.models import Jurisdiction

    rt = _runtime()
    q = select(Jurisdiction).order_by(Jurisdiction.code)
    if level:
        q = q.where(Jurisdiction.level == level)
    if under:
        q = q.where((Jurisdiction.province == under) | (Jurisdiction.district == under))
    table = Table()
    for col in ("code", "name", "level", "parent"):
        table.add_column(col)
    with rt.sessions() as s:
        for j in s.scalars(q):
            table.add_row(j.code, j.name, j.level, j.parent_code or "")
    console.print(table)


@jurisdictions_app.command("load")
def jurisdictions_load(file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV: code,name,level,parent_code")):
    """Add the file's nodes and rename changed ones (checked whole first; moving a node is refused)."""
    from registry import reference_data

    _apply("jurisdictions", reference_data.read_file(file, reference_data.JURISDICTION_COLUMNS, file.name), file.name)


@jurisdictions_app.command("add")
def jurisdictions_add(code: str = typer.Option(..., help="e.g. PK-PB-LAH-T01-UC07"), name: str = typer.Option(...),
                      level: str = typer.Option(..., help="province, district, tehsil or union_council"),
                      parent: str = typer.Option(..., help="code of the parent node")):
    """Add one node."""
    _apply("jurisdictions", [{"code": code, "name": name, "level": level, "parent_code": parent}], "jurisdiction")


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
def facilities_add(code: str = typer.Option(...), name: str = typer.Option(...),
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
    except InvalidInput as exc:
        console.print(f"[red]refused[/]: {exc.message}")
        raise typer.Exit(1)
    console.print(f"{code}: {'retired' if changed else 'was already retired'}")
