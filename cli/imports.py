"""`nhr import FILE --user USERNAME`: patients or doses from CSV, FHIR NDJSON or a FHIR Bundle.

Prints counts and the path of the error report (row, field, reason code); never a value.
Exit codes: 0 imported (rejected rows are listed in the report), 1 refused or unreadable file.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import TextColumn, TimeRemainingColumn

from cli import progress

from registry.runtime import Runtime
from registry.settings import get_settings

console = Console(highlight=False)


def import_file(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="CSV, NDJSON (.ndjson) or Bundle (.json)"),
    user: str = typer.Option(..., "--user", help="the clinic account the records are recorded by (its facility is the import's)"),
    facility: str = typer.Option(None, "--facility", help="facility code; must be the account's own (a safety check; default: not checked, the account's facility is used)"),
    fmt: str = typer.Option(None, "--format", help="csv-patients | csv-doses | fhir-ndjson | fhir-bundle (default: detected)"),
    chunk_size: int = typer.Option(5000, "--chunk-size", min=1, help="rows per committed chunk"),
    errors: Path = typer.Option(None, "--errors", help="error report path (default: FILE.errors.csv)"),
    workers: int = typer.Option(1, "--workers", min=1, max=16, help="processes validating FHIR resources"),
):
    """Import a file; rerun the same command after an interruption to continue where it stopped."""
    from registry.bulk import importer
    from registry.bulk.sources import UnreadableFile
    from registry.errors import DomainError

    rt = Runtime.build(get_settings())
    report = errors or file.with_name(file.name + ".errors.csv")
    try:
        total = importer.count_rows(file, fmt)
        with progress.bar(console, TextColumn("{task.fields[imported]} imported, {task.fields[rejected]} rejected"),
                          TimeRemainingColumn()) as bar:
            task = bar.add_task(file.name, total=total, imported=0, rejected=0)
            result = importer.run(rt, file, username=user, fmt=fmt, facility=facility, chunk_size=chunk_size, workers=workers,
                                  on_chunk=lambda p: bar.update(task, completed=p.rows_done, imported=p.imported,
                                                                rejected=p.rejected))
            bar.update(task, completed=total)
    except UnreadableFile as exc:
        console.print(f"[red]cannot import[/]: {exc}")
        raise typer.Exit(1)
    except DomainError as exc:
        console.print(f"[red]refused[/]: {exc.field or ''} {exc.message}")
        raise typer.Exit(1)
    finally:
        rt.engine.dispose()
    n_errors = importer.write_error_report(rt, result.run_id, report)
    resumed = f" (resumed after row {result.resumed_from})" if result.resumed_from else ""
    console.print(f"run {result.run_id} [{result.file_format}]{resumed}: {result.imported} imported, "
                  f"{result.rejected} rows rejected; error report: {report} ({n_errors} lines)")
