"""`nhr schedules ...`: load an immunization schedule file (a new version, or a province's own)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from registry.errors import DomainError
from registry.runtime import Runtime
from registry.schedules import service
from registry.settings import get_settings

app = typer.Typer(help="Immunization schedules (versioned data)", no_args_is_help=True)
console = Console()


@app.command("load")
def load(file: Path = typer.Argument(..., help="schedule JSON, e.g. registry/schedules/data/pk-epi-2026.json"),
         jurisdiction: str = typer.Option(None, "--jurisdiction", help="country or province code, e.g. PK-PB; default the file's")):
    """Load a schedule for a country or a province (the same code, version and jurisdiction again changes nothing)."""
    rt = Runtime.build(get_settings())
    try:
        with rt.sessions.begin() as s:
            row, added = service.load(s, service.read_file(file), jurisdiction)
            summary = f"{row.code}@{row.version} for {row.jurisdiction_code} effective {row.effective_from}"
    except DomainError as exc:
        console.print(f"[red]refused[/]: {exc.field}: {exc.message}")
        raise typer.Exit(1)
    console.print(f"{'loaded' if added else 'already loaded'}: {summary}")
