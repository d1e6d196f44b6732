"""`nhr keys rotate | reencrypt | status | retire | rotate-kek`: rotation that finishes (issue 16).

Every command that changes keys is audited (`keys.*`, operator `system:cli`) with counts and
version numbers only. See docs/custody.md for the procedure.
"""

from __future__ import annotations

import getpass
import uuid

import typer
from rich.console import Console
from rich.table import Table

from cli import progress
from registry.errors import DomainError
from security.crypto.errors import CryptoError

console = Console()
CUSTODIAN = typer.Option(..., help="province code, e.g. PK-PB")


def _runtime():
    from registry.runtime import Runtime
    from registry.settings import get_settings

    return Runtime.build(get_settings())


def _audit(rt, action: str, custodian: str, detail: dict) -> None:
    from security.access.principal import AccessContext
    from security.audit import trail as audit
    from security.audit.trail import AuditTrail

    trail = AuditTrail(AccessContext(None, "HSYSADMIN", f"cli-{uuid.uuid4().hex[:12]}", f"cli:{getpass.getuser()}"))
    with rt.sessions.begin() as s:
        trail.record(s, action, audit.SUCCESS, resource_type="DataKey", resource_id=custodian, detail={"via": "cli", **detail})


def _refused(exc: Exception) -> typer.Exit:
    console.print(f"[red]refused[/]: {getattr(exc, 'message', None) or exc}", soft_wrap=True)
    return typer.Exit(1)


def rotate(custodian: str = CUSTODIAN):
    """Add a new field-key version for a province; new writes use it (every running process within
    a minute), old data stays readable until `nhr keys reencrypt` moves it."""
    rt = _runtime()
    rt.load_keys()
    if custodian not in rt.keys.custodians():
        raise _refused(f"{custodian} is not a province with keys (nhr keys status lists them)")
    with rt.engine.begin() as conn:
        version = rt.keys.rotate(conn, custodian)
    _audit(rt, "keys.rotate", custodian, {"version": version})
    console.print(f"{custodian}: field key v{version} is now active; next: nhr keys reencrypt --custodian {custodian}")


def reencrypt(custodian: str = CUSTODIAN,
              batch_size: int = typer.Option(500, min=1, max=50_000, help="rows per transaction")):
    """Move every encrypted value of a province to its newest field-key version, in short
    transactions, while the registry keeps serving. Interrupted, it continues where it stopped."""
    from registry.keys import reencrypt as job

    rt = _runtime()
    try:
        rt.load_keys()
        target = rt.keys.active(custodian, "field").version
    except CryptoError as exc:
        raise _refused(exc) from None
    with progress.bar(console) as bar:
        task = bar.add_task(f"{custodian} to v{target}", total=job.pending_rows(rt, custodian, target))
        out = job.reencrypt(rt, custodian, batch_size=batch_size, progress=lambda n: bar.advance(task, n))
    _audit(rt, "keys.reencrypt", custodian, {"version": out.target, "rows": out.moved, "values": out.values,
                                             "remaining": out.remaining})
    tables = ", ".join(f"{t} {n}" for t, n in sorted(out.per_table.items())) or "nothing to move"
    console.print(f"{custodian}: {out.moved} rows ({out.values} values) moved to v{out.target}: {tables}", soft_wrap=True)
    if out.remaining:
        console.print(f"[yellow]{out.remaining} rows are still under an older version[/] (written by a process that had "
                      "not seen the rotation yet): run the command again", soft_wrap=True)
        raise typer.Exit(1)


def status():
    """Encrypted values and rows per field-key version per province (read from the ciphertext
    headers; nothing is decrypted)."""
    from registry.keys.status import status as versions

    table = Table(title="field keys in use")
    for col in ("province", "version", "state", "KEK", "values", "rows"):
        table.add_column(col, justify="right" if col in ("version", "values", "rows") else "left")
    for u in versions(_runtime()):
        table.add_row(u.custodian, f"v{u.version}", u.state, u.kek, str(u.values), str(u.rows))
    console.print(table)


def retire(custodian: str = CUSTODIAN, version: int = typer.Option(..., min=1, help="the field-key version to retire"),
           delete: bool = typer.Option(False, help="also delete the wrapped key (irreversible)")):
    """Retire a field-key version no row uses any more: it is refused for decryption from then on
    (by every running process within a minute). Refused while any row still uses it."""
    from registry.keys.status import retire as retire_version

    rt = _runtime()
    try:
        rt.load_keys()
        retire_version(rt, custodian, version, delete=delete)
    except (DomainError, CryptoError) as exc:
        raise _refused(exc) from None
    _audit(rt, "keys.retire", custodian, {"version": version, "deleted": delete})
    console.print(f"{custodian}: field key v{version} retired{' and deleted' if delete else ''}")


def rotate_kek(custodian: str = CUSTODIAN,
               destroy_old: bool = typer.Option(False, help="destroy the old KEK afterwards (backups taken before "
                                                              "then need it to open their data keys)")):
    """Create a new KEK for a province in its configured backend (NHR_KEY_BACKENDS: files or the HSM)
    and re-wrap every data key of the province under it, in one transaction. Also moves a province
    from files to the HSM, or back."""
    rt = _runtime()
    try:
        rt.load_keys()
        with rt.engine.begin() as conn:
            new, unused = rt.keys.rewrap(conn, custodian)
        if destroy_old:
            for backend, generation in unused:
                rt.keys.kek.destroy_kek(custodian, generation, backend)
    except CryptoError as exc:
        raise _refused(exc) from None
    _audit(rt, "keys.rotate_kek", custodian, {"kek_version": new, "backend": rt.keys.kek.backend_name(custodian),
                                              "destroyed": [f"{b} v{g}" for b, g in unused] if destroy_old else []})
    old = ", ".join(f"{b} v{g}" for b, g in unused) or "none"
    console.print(f"{custodian}: data keys re-wrapped under KEK v{new} ({rt.keys.kek.backend_name(custodian)}); "
                  f"old KEK(s) {old} {'destroyed' if destroy_old else 'kept (destroy with --destroy-old)'}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("rotate")(rotate)
    app.command("reencrypt")(reencrypt)
    app.command("status")(status)
    app.command("retire")(retire)
    app.command("rotate-kek")(rotate_kek)
