"""`nhr backup` and `nhr restore` (registry/backups.py): the database and the key directory,
the keys encrypted under a passphrase, and a restore that proves itself."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli import progress

console = Console()


def _passphrase(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt("passphrase for the key backup", hide_input=True, confirmation_prompt=confirm)


def backup(out_dir: Path = typer.Argument(..., help="folder to write the backup into (created if missing)"),
           passphrase_stdin: bool = typer.Option(False, help="read the passphrase from standard input instead of a prompt")):
    """Back up the database and the key directory (the keys encrypted under a passphrase).

    Writes nhr-<time>.db, nhr-<time>.keys and nhr-<time>.json into OUT_DIR. Store the .keys file
    apart from the .db file (docs/operators.md)."""
    from registry import backups
    from registry.settings import get_settings

    s = get_settings()
    try:
        passphrase = _passphrase(passphrase_stdin, confirm=True)
        with progress.working(console, "dumping the database and encrypting the keys..."):
            manifest = backups.backup(s.database_url, Path(s.key_dir), out_dir, passphrase)
    except backups.BackupError as exc:
        console.print(f"[red]backup failed[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"[green]backup written[/]: {manifest} (and the .db and .keys files beside it)", soft_wrap=True)
    console.print("store the .keys file apart from the .db file; without the passphrase it cannot be opened", soft_wrap=True)


def restore(manifest: Path = typer.Argument(..., help="the backup's nhr-<time>.json"),
            passphrase_stdin: bool = typer.Option(False, help="read the passphrase from standard input instead of a prompt"),
            force: bool = typer.Option(False, help="overwrite a non-empty database and key directory")):
    """Restore a backup into NHR_DATABASE_URL and NHR_KEY_DIR, then prove it: the schema matches,
    every patient record decrypts, and the audit log verifies. Exits 1 if any check fails."""
    from registry import backups
    from registry.runtime import Runtime
    from registry.settings import get_settings

    s = get_settings()
    try:
        passphrase = _passphrase(passphrase_stdin, confirm=False)
        with progress.working(console, "restoring the database and the keys..."):
            backups.restore(manifest, s.database_url, Path(s.key_dir), passphrase, force=force)
    except backups.BackupError as exc:
        console.print(f"[red]restore failed[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1)
    rt = Runtime.build(s)
    rt.load_keys()
    with progress.working(console, "proving the restore: decrypting every record, verifying the audit log..."):
        proof = backups.verify_restored(rt)
    table = Table(title="restored")
    table.add_column("check")
    table.add_column("result")
    table.add_row("schema matches the code", "yes" if proof.schema_matches else "[red]no[/]")
    table.add_row("patient records decrypt", f"{proof.patients_decrypted} of {proof.patients}")
    table.add_row("audit log", proof.audit_summary or f"[red]NOT INTACT[/]: {proof.audit_problem}")
    console.print(table)
    raise typer.Exit(0 if proof.ok else 1)
