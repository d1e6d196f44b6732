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
    witnesses: int = typer.Option(0, "--witnesses", min=0,
                                  help="require a checkpoint cosigned by at least this many witnesses of NHR_AUDIT_WITNESSES_FILE "
                                       "(default: 0, no witness required)"),
    witnesses_file: Path = typer.Option(None, "--witnesses-file",
                                        help="the witnesses' verifier keys, one per line (default: NHR_AUDIT_WITNESSES_FILE)"),
):
    """Recompute every leaf, root and signature; report the first place where they disagree."""
    from security.audit.checkpoint import load_public_key
    from security.audit.verify import Discrepancy, verify_export

    try:
        witnessing = _witnessing(witnesses, witnesses_file)
        if export is not None:
            if public_key is not None:
                key = load_public_key(public_key.read_bytes())
            else:
                from registry.audit_log import sealing

                key = sealing.public_key(_runtime())
            report = verify_export(export, key, trusted=_trusted(trusted), **witnessing)
        else:
            from registry.audit_log import sealing

            rt = _runtime()
            if public_key is not None:
                from security.audit import verify as v

                with rt.sessions() as s:
                    report = v.verify_database(s, sealing.origin(rt), load_public_key(public_key.read_bytes()),
                                               trusted=_trusted(trusted), **witnessing)
            else:
                with progress.working(console, "recomputing every leaf, root and signature..."):
                    with rt.sessions() as s:
                        from security.audit import verify as v

                        report = v.verify_database(s, sealing.origin(rt), sealing.public_key(rt),
                                                   trusted=_trusted(trusted), **witnessing)
    except Discrepancy as exc:
        console.print(f"[red]NOT INTACT[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1)
    if report.quarantined:
        console.print(f"[yellow]{report.summary()}[/]", soft_wrap=True)
        for line in report.findings():
            console.print(f"[yellow]QUARANTINED[/]: {line}", soft_wrap=True)
        raise typer.Exit(3)
    console.print(f"[green]{report.summary()}[/]", soft_wrap=True)


def _witnessing(required: int, path: Path | None) -> dict:
    """The witness keys `verify` counts (from --witnesses-file or NHR_AUDIT_WITNESSES_FILE)."""
    if not required:
        return {}
    from registry.audit_log.transparency import read_witnesses

    path = path or get_settings().audit.witnesses_file
    if path is None:
        console.print("[red]NOT VERIFIED[/]: --witnesses needs the witnesses' keys (--witnesses-file or "
                      "NHR_AUDIT_WITNESSES_FILE)", soft_wrap=True)
        raise typer.Exit(2)
    try:
        keys = read_witnesses(path)
    except (OSError, ValueError) as exc:
        console.print(f"[red]NOT VERIFIED[/]: cannot read the witnesses' keys: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    return {"witnesses": keys, "required_witnesses": required}


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


# --- witnesses and the signing key (issue 16; docs/custody.md#witnesses-of-the-audit-log) -------

@app.command("witness-key")
def witness_key_cmd(
    name: str = typer.Option(..., "--name", help="the witness's name, e.g. witness.punjab.gov.pk/nhr (no spaces, no '+')"),
    out: Path = typer.Option(..., "--out", help="file for the private key (created with mode 0600, never overwritten)"),
):
    """Generate a witness key pair: the private key goes to --out, the verifier key (give it to the
    registry's operators for NHR_AUDIT_WITNESSES_FILE) is printed."""
    import os

    from security.audit import note

    try:
        key = note.generate(name, note.COSIGNATURE_V1)
    except note.NoteError as exc:
        typer.echo(f"invalid --name: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        typer.echo(f"{out} exists: refusing to overwrite a key", err=True)
        raise typer.Exit(2) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key.encode() + "\n")
    typer.echo(key.verifier.vkey())


@app.command("witness")
def witness_cmd(
    url: str = typer.Option(..., "--url", help="the registry's base URL, e.g. https://nhr.example.gov.pk"),
    key: Path = typer.Option(..., "--key", help="this witness's private key (from `nhr audit witness-key`)"),
    state: Path = typer.Option(..., "--state", help="this witness's state file (created on the first run)"),
    log_key: str = typer.Option(None, "--log-key",
                                help="the registry's checkpoint verifier key (name+hash+key), needed on the first run only "
                                     "(default: the one in the state file)"),
    post: bool = typer.Option(True, "--post/--no-post", help="post the cosignature to the registry (default: post)"),
):
    """Check the registry's latest checkpoint against the last one this witness cosigned (signature,
    consistency proof, never backwards, never two roots for one size) and cosign it.

    Exit codes: 0 cosigned; 1 refused (unreachable, bad signature, malformed answer); 2 SPLIT VIEW
    or a log that went backwards: keep the state file and the output, and report it."""
    import time

    from cli.witness_http import FetchError, HttpSource
    from security.audit import note
    from security.audit.witness import SplitView, State, WitnessRefused, witness

    try:
        skey = note.parse_signer_key(key.read_text(encoding="utf-8"))
    except (OSError, note.NoteError) as exc:
        typer.echo(f"cannot read the witness key: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    if state.exists():
        try:
            current = State.load(state)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            typer.echo(f"cannot read the state file: {type(exc).__name__}", err=True)
            raise typer.Exit(1) from None
    elif log_key:
        try:
            v = note.parse_vkey(log_key)
        except note.NoteError as exc:
            typer.echo(f"invalid --log-key: {exc}", err=True)
            raise typer.Exit(1) from None
        current = State(v.name, v.vkey())
    else:
        typer.echo("first run: give the registry's checkpoint key with --log-key (GET /api/v1/transparency/key-handovers, "
                   "compared with the key published out of band)", err=True)
        raise typer.Exit(1)
    source = HttpSource(url)
    try:
        new, result = witness(current, source, skey, int(time.time()))
    except SplitView as exc:
        console.print(f"[red]SPLIT VIEW[/]: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (WitnessRefused, FetchError) as exc:
        console.print(f"[red]REFUSED[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    new.save(state)  # before the cosignature leaves this machine
    if result.key_changed:
        console.print(f"the registry's checkpoint key was handed over; now trusting {note.parse_vkey(new.log_key).key_id}")
    if post:
        try:
            source.post_cosignature(result.cosigned_note)
        except FetchError as exc:
            console.print(f"[red]cosigned size {result.tree_size} but could not post it[/]: {exc}", soft_wrap=True)
            typer.echo(result.cosigned_note, nl=False)
            raise typer.Exit(1) from None
    console.print(f"cosigned size {result.tree_size} (previously {result.previous_size})")


@app.command("rotate-signing-key")
def rotate_signing_key_cmd():
    """Replace the checkpoint-signing key: seal what is pending, then sign a hand-over statement
    with the old key naming the new one (published at /api/v1/transparency/key-handovers). The old
    public key still verifies every checkpoint up to the hand-over; the old private key is destroyed."""
    from registry.audit_log import rotation

    rt = Runtime.build(get_settings(), provisioning=True)
    try:
        with progress.working(console, "sealing and handing over the checkpoint key..."):
            done = rotation.rotate(rt)
    except rotation.RotationError as exc:
        console.print(f"[red]NOT ROTATED[/]: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"checkpoint key {done.old.key_id} handed over to {done.new.key_id} at tree size {done.tree_size}; "
                  f"new verifier key: {done.new.vkey()}", soft_wrap=True)
    console.print("restart nothing: sealers pick the new key up before their next checkpoint")
