"""`nhr audit`: seal the audit log, verify it (from the database or offline from an export),
export it, and print the checkpoint verification key.

Exit codes of `verify`: 0 when the log is intact; 1 with the first discrepancy, or every damaged
row, printed (positions and column names, never a stored value); 3 when the log is intact but
holds quarantined events (sealed without the registry vouching for them: written into the
database by something other than the registry, or back-dated; see security/audit/sealer.py),
each listed by position and event id: investigate them.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from cli import progress

from registry.runtime import Runtime
from registry.settings import get_settings

app = typer.Typer(help="Tamper-evident audit log: seal, verify, export", no_args_is_help=True)
console = Console(highlight=False)


def _runtime() -> Runtime:
    return Runtime.build(get_settings())


def _trusted(path: Path | None):
    if path is None:
        return None
    from security.audit.verify import trusted_from_json

    return trusted_from_json(json.loads(path.read_text()))


@app.command()
def seal():
    """Seal every committed event not yet sealed and sign a checkpoint (also runs in the API)."""
    from registry.audit_log import sealing

    rt = _runtime()
    quarantined: list = []
    with progress.working(console, "sealing the audit log..."):
        n = sealing.seal_all(rt, quarantined=quarantined)
    with rt.sessions() as s:
        from security.audit.sealer import latest_checkpoint

        cp = latest_checkpoint(s)
    console.print(f"sealed {n} events; latest checkpoint: size {cp.tree_size if cp else 0}")
    for position, reason in quarantined:
        console.print(f"[yellow]quarantined[/]: position {position} ({reason}): not vouched for by the registry")


@app.command("verify")
def verify_cmd(
    export: Path = typer.Option(None, "--export", help="verify this export file offline instead of the database (default: none, verify the database)"),
    public_key: Path = typer.Option(None, "--public-key", help="PEM public key (default: this registry's keyring)"),
    trusted: Path = typer.Option(None, "--trusted-checkpoint",
                                 help="a checkpoint JSON you kept earlier: the log must extend it (default: none, the log alone)"),
):
    """Recompute every leaf, root and signature; report the first place where they disagree."""
    from security.audit.checkpoint import load_public_key
    from security.audit.verify import Discrepancy, verify_export

    try:
        if export is not None:
            if public_key is not None:
                key = load_public_key(public_key.read_bytes())
            else:
                from registry.audit_log import sealing

                key = sealing.public_key(_runtime())
            report = verify_export(export, key, trusted=_trusted(trusted))
        else:
            from registry.audit_log import sealing

            rt = _runtime()
            if public_key is not None:
                from security.audit import verify as v

                with rt.sessions() as s:
                    report = v.verify_database(s, sealing.origin(rt), load_public_key(public_key.read_bytes()),
                                               trusted=_trusted(trusted))
            else:
                with progress.working(console, "recomputing every leaf, root and signature..."):
                    report = sealing.verify_database(rt, _trusted(trusted))
    except Discrepancy as exc:
        console.print(f"[red]NOT INTACT[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1)
    if report.quarantined:
        console.print(f"[yellow]{report.summary()}[/]", soft_wrap=True)
        for line in report.findings():
            console.print(f"[yellow]QUARANTINED[/]: {line}", soft_wrap=True)
        raise typer.Exit(3)
    console.print(f"[green]{report.summary()}[/]", soft_wrap=True)


@app.command()
def export(file: Path = typer.Argument(..., help="NDJSON file to write (mode 0600)")):
    """Export the sealed log (events, leaves, checkpoints, public key) for offline verification."""
    from registry.audit_log import sealing
    from security.audit.verify import Discrepancy

    try:
        size = sealing.export(_runtime(), file)
    except Discrepancy as exc:
        file.unlink(missing_ok=True)
        console.print(f"[red]NOT EXPORTED[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"exported {size} sealed events to {file}")


@app.command("public-key")
def public_key_cmd():
    """Print the checkpoint verification key (PEM). Creates the signing key if it is missing:
    this is the provisioning step, as `nhr keys init` is for data keys."""
    from registry.audit_log import sealing
    from security.audit.checkpoint import public_key_pem

    rt = Runtime.build(get_settings(), provisioning=True)
    typer.echo(public_key_pem(sealing.public_key(rt)), nl=False)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        typer.echo(f"cannot read {path}: {type(exc).__name__}", err=True)
        raise typer.Exit(2) from None


@app.command("check-proof")
def check_proof_cmd(
    proof: Path = typer.Argument(..., help="JSON of GET /api/v1/audit/events/{id}/proof"),
    public_key: Path = typer.Option(..., help="the log's public key (PEM, from `nhr audit public-key` or the API)"),
    event: Path = typer.Option(None, help="the event's record from `nhr audit export` (one JSON line), to tie the proof to its content (default: none, the proof only)"),
):
    """Check an inclusion proof offline: signed checkpoint, audit path, and optionally the event's content."""
    from security.audit.checkpoint import load_public_key
    from security.audit.proof_check import ProofRejected, check_inclusion

    try:
        typer.echo("valid: " + check_inclusion(_json(proof), load_public_key(public_key.read_bytes()),
                                              _json(event) if event else None))
    except ProofRejected as exc:
        typer.echo(f"REJECTED: {exc}")
        raise typer.Exit(1) from None


@app.command("check-consistency")
def check_consistency_cmd(
    proof: Path = typer.Argument(..., help="JSON of GET /api/v1/audit/consistency?first=M&second=N"),
    public_key: Path = typer.Option(..., help="the log's public key (PEM)"),
):
    """Check offline that a later signed checkpoint extends an earlier one (append-only)."""
    from security.audit.checkpoint import load_public_key
    from security.audit.proof_check import ProofRejected, check_consistency

    try:
        typer.echo("valid: " + check_consistency(_json(proof), load_public_key(public_key.read_bytes())))
    except ProofRejected as exc:
        typer.echo(f"REJECTED: {exc}")
        raise typer.Exit(1) from None
