"""`nhr reports refusals` and `nhr reports data-quality`: the field-work reports as tables (the
same builders and numbers as the API; audited as `system:cli` reads, like `nhr reports coverage`)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import typer
from rich.table import Table

from cli.reports import _refused, _trail, app, console, load_mapping
from registry.clock import local_today
from registry.errors import DomainError, InvalidInput
from registry.immunizations import not_done
from registry.reports import coverage, dhis2_quality, quality, refusals
from registry.runtime import Runtime
from registry.settings import get_settings
from security.audit import trail as audit


def _show(v) -> str:
    return "-" if v is None else str(v)


def _node(s, code: str):
    tree = coverage.Tree.load(s)
    node = tree.nodes.get(code)
    if node is None:
        console.print("[red]unknown jurisdiction[/]")
        raise typer.Exit(1)
    return tree, node


@app.command("refusals")
def refusals_table(cohort: str = typer.Option(..., help="birth year (2025) or month (2025-03)"),
                   jurisdiction: str = typer.Option("PK", help="jurisdiction code at any level")):
    """Children not vaccinated per reason group (refusal first), suppressed like the API."""
    rt = Runtime.build(get_settings())
    try:
        with rt.sessions.begin() as s:
            tree, node = _node(s, jurisdiction)
            report = refusals.build(s, node, tree, coverage.parse_cohort(cohort), rt.settings.reports.min_cell)
            _trail().record(s, "report.refusals", audit.SUCCESS, resource_type="Report", resource_id=node.code,
                            detail={"jurisdiction": node.code, "cohort": cohort, "via": "cli"})
    except DomainError as exc:
        _refused(exc)
    table = Table(title=f"Refusals and missed opportunities, {node.name}, cohort {cohort} (suppressed cells: -)")
    groups = list(not_done.groups())
    for col in ("jurisdiction", "children", "not vaccinated", *groups, "refusal %"):
        table.add_column(col)
    for row in report["rows"] + [report["total"]]:
        table.add_row(row["name"] or row["code"], _show(row["children"]), _show(row["children_not_vaccinated"]),
                      *(_show(row["groups"][g]) for g in groups), _show(row["refusal_pct"]))
    console.print(table)


@app.command("data-quality")
def data_quality_table(jurisdiction: str = typer.Option("PK", help="jurisdiction code at any level"),
                       start: str = typer.Option(None, "--from", help="first day (YYYY-MM-DD; default 30 days ago)"),
                       end: str = typer.Option(None, "--to", help="last day (YYYY-MM-DD; default today)")):
    """Completeness, timeliness, invalid doses and unknown codes per unit (WHO DQR dimensions)."""
    rt = Runtime.build(get_settings())
    try:
        try:
            last = date.fromisoformat(end) if end else local_today()
            first = date.fromisoformat(start) if start else last - timedelta(days=29)
        except ValueError:
            raise InvalidInput("dates are YYYY-MM-DD", field="from/to") from None
        if last < first:
            raise InvalidInput("must not be before --from", field="to")
        with rt.sessions.begin() as s:
            tree, node = _node(s, jurisdiction)
            report = quality.build(s, node, tree, first, last, rt.settings.reports.min_cell)
            _trail().record(s, "report.data_quality", audit.SUCCESS, resource_type="Report", resource_id=node.code,
                            detail={"jurisdiction": node.code, "from": first.isoformat(), "to": last.isoformat(), "via": "cli"})
    except DomainError as exc:
        _refused(exc)
    table = Table(title=f"Data quality, {node.name}, {first} to {last} (suppressed cells: -)")
    cols = ["unit", "patients", "B-form %", "guardian CNIC %", "phone %", "doses", "lot %", "median days", "<=7 d %",
            "<=30 d %", "invalid %", "unknown codes"] + (["reported %"] if report["provenance_available"] else [])
    for col in cols:
        table.add_column(col)
    for row in report["rows"] + [report["total"]]:
        c, t = row["completeness"], row["timeliness"]
        cells = [row["name"] or row["code"], c["patients_registered"], c["bform_pct"], c["guardian_cnic_pct"], c["phone_pct"],
                 c["doses"], c["lot_number_pct"], t["median_days"], t["within_7_days_pct"], t["within_30_days_pct"],
                 row["consistency"]["invalid_pct"], row["unknown_vaccine_codes"]["count"]]
        if report["provenance_available"]:
            cells.append(row["provenance"]["reported_pct"])
        table.add_row(*(_show(v) for v in cells))
    console.print(table)


@app.command("dhis2-quality-mapping")
def dhis2_quality_mapping(file: Path = typer.Argument(..., help="mapping JSON (see docs/reports.md)")):
    """Load a province's (or the country's) DHIS2 data elements for the data-quality metrics."""
    doc = load_mapping(file, dhis2_quality, {"report": "data-quality"})
    console.print(f"loaded the DHIS2 data-quality mapping of {doc['jurisdiction']}: {len(doc['data_elements'])} data elements")
