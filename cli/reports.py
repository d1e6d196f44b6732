"""`nhr reports ...`: rebuild the coverage aggregates, load target populations and DHIS2
mappings, print a coverage table. Loads are audited as `system:cli` actions like API calls."""

from __future__ import annotations

import getpass
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli import progress

from registry.errors import DomainError
from registry.reports import aggregate, check, coverage, dhis2, population
from registry.runtime import Runtime
from registry.settings import get_settings
from security.access.principal import AccessContext
from security.audit import trail as audit
from security.audit.trail import AuditTrail

app = typer.Typer(help="Coverage reports: aggregates, target populations, DHIS2 mappings", no_args_is_help=True)
population_app = typer.Typer(help="Target population figures (denominators)", no_args_is_help=True)
app.add_typer(population_app, name="population")
console = Console()


def _trail() -> AuditTrail:
    return AuditTrail(AccessContext(None, "HSYSADMIN", f"cli-{uuid.uuid4().hex[:12]}", f"cli:{getpass.getuser()}"))


def _refused(exc: DomainError) -> None:
    console.print(f"[red]refused[/]: {exc.field}: {exc.message}")
    raise typer.Exit(1)


@app.command("rebuild")
def rebuild():
    """Recompute every aggregate from the patients and doses (set-based; run after bulk loads)."""
    rt = Runtime.build(get_settings())
    started = time.perf_counter()
    with progress.working(console, "rebuilding the coverage aggregates..."), rt.sessions.begin() as s:
        facts = aggregate.rebuild(s, datetime.now(UTC).date())
    console.print(f"rebuilt coverage aggregates for {facts['children']} children in {time.perf_counter() - started:.2f} s")


@app.command("check")
def check_aggregates(jurisdiction: str = typer.Option(None, help="check only this jurisdiction (any level; default all)"),
                     sample: int = typer.Option(None, min=1, help="check N children picked at random (default every child)")):
    """Recompute the aggregates with the schedule engine and list every difference (places,
    birth months, items and the two counts; never a patient). Exit 1 on any difference."""
    rt = Runtime.build(get_settings())
    with rt.sessions.begin() as s:
        if jurisdiction is not None and jurisdiction not in coverage.Tree.load(s).nodes:
            console.print("[red]unknown jurisdiction[/]")
            raise typer.Exit(2)
        checked, diffs = check.differences(s, datetime.now(UTC).date(), jurisdiction=jurisdiction, sample=sample)
        by_engine = check.engine_judged(s)
        _trail().record(s, "report.check", audit.SUCCESS, resource_type="Report", resource_id=jurisdiction,
                        detail={"via": "cli", "children": checked, "differences": len(diffs), "sample": sample})
    console.print(f"checked {checked} children against the schedule engine ({by_engine} judged by the engine in the aggregates)")
    if not diffs:
        console.print("no differences")
        return
    table = Table(title=f"{len(diffs)} difference(s): aggregates vs engine")
    for col in ("leaf", "birth month", "item", "measure", "aggregates", "engine"):
        table.add_column(col)
    for d in diffs:
        table.add_row(d.leaf, str(d.cohort_month), d.item, d.measure, str(d.stored), str(d.engine))
    console.print(table)
    raise typer.Exit(1)


@population_app.command("load")
def population_load(file: Path = typer.Argument(..., help="CSV with the header jurisdiction_code,year,population")):
    """Load (or replace) target population figures per jurisdiction and year; all or nothing."""
    rt = Runtime.build(get_settings())
    try:
        with rt.sessions.begin() as s:
            rows = population.parse(file.read_text(encoding="utf-8"), coverage.Tree.load(s).nodes)
            count = population.store(s, rows, "system:cli")
            _trail().record(s, "report.population_load", audit.SUCCESS, resource_type="Report", detail={"rows": count, "via": "cli"})
    except DomainError as exc:
        _refused(exc)
    console.print(f"loaded {count} target population figure(s)")


def load_mapping(file: Path, kind, detail: dict) -> dict:
    """Read, validate and store a DHIS2 mapping file with `kind`'s validate and store (the coverage
    mapping, registry/reports/dhis2.py, or another made the same way); audited; exits 1 when refused."""
    rt = Runtime.build(get_settings())
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        console.print("[red]refused[/]: file: not valid JSON")
        raise typer.Exit(1)
    try:
        with rt.sessions.begin() as s:
            doc = kind.validate(document, coverage.Tree.load(s))
            kind.store(s, doc, "system:cli")
            _trail().record(s, "report.dhis2_mapping", audit.SUCCESS, resource_type="Report", resource_id=doc["jurisdiction"],
                            detail={"via": "cli", **detail})
    except DomainError as exc:
        _refused(exc)
    return doc


@app.command("dhis2-mapping")
def dhis2_mapping(file: Path = typer.Argument(..., help="mapping JSON (see docs/reports.md)")):
    """Load a province's (or the country's) mapping to DHIS2 data elements and organisation units."""
    doc = load_mapping(file, dhis2, {})
    console.print(f"loaded the DHIS2 mapping of {doc['jurisdiction']}: {len(doc['data_elements'])} data elements, "
                  f"{len(doc['org_units'])} organisation units")


@app.command("coverage")
def coverage_table(cohort: str = typer.Option(..., help="birth year (2025) or month (2025-03)"),
                   jurisdiction: str = typer.Option("PK", help="jurisdiction code at any level"),
                   item: str = typer.Option("PENTA-3", help="antigen-dose to show")):
    """Print a suppressed coverage table (the operator's view; the same numbers as the API)."""
    rt = Runtime.build(get_settings())
    try:
        with rt.sessions.begin() as s:
            tree = coverage.Tree.load(s)
            node = tree.nodes.get(jurisdiction)
            if node is None:
                console.print("[red]unknown jurisdiction[/]")
                raise typer.Exit(1)
            today = datetime.now(UTC).date()
            aggregate.refresh(s, today, rt.settings.reports.refresh_max or 1_000_000)
            report = coverage.build(s, node, tree, coverage.parse_cohort(cohort), today, "registered", rt.settings.reports.min_cell)
            _trail().record(s, "report.coverage", audit.SUCCESS, resource_type="Report", resource_id=node.code,
                            detail={"jurisdiction": node.code, "cohort": cohort, "via": "cli"})
    except DomainError as exc:
        _refused(exc)
    table = Table(title=f"{item} coverage, {node.name}, cohort {cohort} (suppressed cells: -)")
    for col in ("jurisdiction", "children", "any", "any %", "valid", "valid %", "dropout P1>P3 %", "zero-dose"):
        table.add_column(col)
    for row in report["rows"] + [report["total"]]:
        c = row["items"].get(item, {})
        show = lambda v: "-" if v is None else str(v)  # noqa: E731
        table.add_row(row["name"], show(row["children"]), show(c.get("any")), show(c.get("any_pct")), show(c.get("valid")),
                      show(c.get("valid_pct")), show(row["dropout_pct"]["PENTA-1>PENTA-3"]), show(row["zero_dose"]["count"]))
    console.print(table)
