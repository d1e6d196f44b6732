"""The `nhr` command line: init, serve, worker, demo, db, users, keys.

Commands that change accounts are audited like API calls, with the operator recorded as
`system:cli` (there is no exemption for administrators).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sys
import uuid
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cli import audit as audit_cli
from cli import progress
from cli import backup as backup_cli
from cli import certificates as certificates_cli
from cli import reference as reference_cli
from cli import dedupe as dedupe_cli
from cli import reports as reports_cli
from cli import field_reports as _field_reports  # noqa: F401  (registers `reports refusals`, `reports data-quality`)
from cli import imports as imports_cli
from cli import keys as keys_cli
from cli import node as node_cli
from cli import schedules as schedules_cli
from cli import worker as worker_cli
from registry import bootstrap
from registry.runtime import Runtime
from registry.settings import get_settings
from security.access.permissions import Role

app = typer.Typer(help="NHR — National Health Registry", no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema (Alembic migrations)", no_args_is_help=True)
users_app = typer.Typer(help="Staff accounts", no_args_is_help=True)
keys_app = typer.Typer(help="Encryption keys", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
keys_cli.register(keys_app)  # rotate, reencrypt, status, retire, rotate-kek
app.add_typer(audit_cli.app, name="audit")
app.add_typer(certificates_cli.app, name="certificate")
app.add_typer(schedules_cli.app, name="schedules")
app.add_typer(reports_cli.app, name="reports")
app.add_typer(reference_cli.jurisdictions_app, name="jurisdictions")
app.add_typer(reference_cli.facilities_app, name="facilities")
app.add_typer(dedupe_cli.app, name="dedupe")
app.add_typer(node_cli.app, name="node")
app.command("import")(imports_cli.import_file)
app.command("backup")(backup_cli.backup)
app.command("restore")(backup_cli.restore)
app.command("worker")(worker_cli.worker)
console = Console()

DEMO_USERS = [
    ("clinic.lahore", "Vaccinator, EPI Centre Shadman (Lahore, Punjab)", Role.CLINIC_WORKER, "F-LAH-02"),
    ("clinic.karachi", "Vaccinator, EPI Centre North Nazimabad (Karachi, Sindh)", Role.CLINIC_WORKER, "F-KRC-02"),
    ("official.lahore", "District Health Officer, Lahore", Role.HEALTH_OFFICIAL, "PK-PB-LAH"),
    ("official.punjab", "Provincial EPI Manager, Punjab", Role.HEALTH_OFFICIAL, "PK-PB"),
    ("steward.punjab", "Data steward, Punjab (record linkage review)", Role.DATA_STEWARD, "PK-PB"),
    ("auditor.national", "National data protection auditor", Role.AUDITOR, "PK"),
    ("admin.national", "National registry administrator", Role.ADMIN, "PK"),
]


def _runtime(*, provisioning: bool = False) -> Runtime:
    return Runtime.build(get_settings(), provisioning=provisioning)


def _cli_trail():
    from security.access.principal import AccessContext
    from security.audit.trail import AuditTrail

    return AuditTrail(AccessContext(None, "HSYSADMIN", f"cli-{uuid.uuid4().hex[:12]}", f"cli:{getpass.getuser()}"))


def _create_user(rt: Runtime, username: str, display: str, role: Role, scope: str, password: str):
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user
    from security.audit import trail as audit

    with rt.sessions.begin() as s:
        view = create_user(s, rt, UserCreate(username=username, display_name=display, password=password, role=role, scope_code=scope))
        _cli_trail().record(s, "user.create", audit.SUCCESS, resource_type="User", resource_id=view.id,
                            detail={"role": view.role, "scope_code": view.scope_code, "via": "cli"})
    return view


@app.command()
def init(jurisdictions: Path = typer.Option(None, exists=True, dir_okay=False,
                                            help="CSV of the hierarchy (code,name,level,parent_code); default: the package's Pakistan file"),
         facilities: Path = typer.Option(None, exists=True, dir_okay=False,
                                         help="CSV of facilities (code,name,kind,jurisdiction_code); default: the invented demo "
                                              "facilities outside production, none in production"),
         without_linkage_secret: bool = typer.Option(
             False, "--without-linkage-secret",
             help="the national comparer's deployment: do not create `linkage-secret` (only the provinces' encoders hold it)")):
    """Create the database schema, the key directory and keys, and load the jurisdiction hierarchy
    and the facilities. Idempotent: run it again after an upgrade or with a newer file.

    This is the explicit provisioning step, so it creates missing keys even in production (where
    the API itself never does). Production never loads the demo facilities."""
    from cli.errors import safe_url
    from cli.reference import changes_table
    from registry.errors import InvalidInput

    rt = _runtime(provisioning=True)
    try:
        result = bootstrap.init(rt, jurisdiction_file=jurisdictions, facility_file=facilities,
                                linkage_secret=not without_linkage_secret)
    except InvalidInput as exc:
        console.print(f"[red]refused, nothing loaded[/]: {exc.message}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(changes_table("jurisdictions", result["jurisdictions"]))
    if result["facilities"] is not None:
        console.print(changes_table("facilities", result["facilities"]))
    else:
        console.print("facilities: none loaded (production loads no demo data; give --facilities FILE)")
    console.print(f"schedules added: {result['schedules_added']}; keys ready for {len(result['custodians'])} provinces "
                  f"({', '.join(result['custodians'])})", soft_wrap=True)
    console.print(f"[green]ready[/]: {safe_url(rt.settings.database_url)}, keys in {rt.settings.key_dir}", soft_wrap=True)


@app.command()
def serve(host: str = typer.Option(None, help="address to listen on (default: NHR_HOST, 127.0.0.1)"),
          port: int = typer.Option(None, help="port to listen on (default: NHR_PORT, 8000)"),
          workers: int = typer.Option(None, help="worker processes, one or two per core (default: NHR_WORKERS, 1)")):
    """Run the API with uvicorn (the access log is NHR's own: route templates, never ids or queries)."""
    import uvicorn

    s = get_settings()
    # Given to uvicorn as its log_config, so that every worker process applies it: with
    # `--workers N` the workers are spawned and a basicConfig() made here never reaches them.
    log_config = {"version": 1, "disable_existing_loggers": False,
                  "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
                  "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
                  "root": {"level": "INFO", "handlers": ["stderr"]}}
    options = dict(host=host or s.serve.host, port=port or s.serve.port, workers=workers or s.serve.workers,
                   access_log=False, proxy_headers=False, log_level="info", log_config=log_config,
                   timeout_worker_healthcheck=s.serve.worker_healthcheck_seconds)
    if options["workers"] <= 1:
        uvicorn.run("api.main:app", **options)
        return
    from cli.supervisor import Supervisor  # uvicorn's, replacing a killed worker at once

    config = uvicorn.Config("api.main:app", **options)
    Supervisor(config, sockets=[config.bind_socket()]).run()


@app.command()
def demo(patients: int = typer.Option(12000, help="synthetic patients to load on first run"),
         duplicates: int = typer.Option(6, min=0, max=100, help="second records of demo children in Punjab, queued as "
                                                                "duplicate pairs for the demo steward (first run only)"),
         serve_api: bool = typer.Option(True, "--serve/--no-serve", help="start the API afterwards")):
    """Set up the embedded database with demo data (first run only), print the logins, and serve."""
    from datetime import date

    from registry.demo import duplicates as demo_duplicates
    from registry.demo.generator import generate
    from registry.reports import aggregate as report_aggregates

    if get_settings().env == "production":  # before anything connects: no demo data, logins or mappings there
        console.print("[red]refusing to load demo data in production[/]")
        raise typer.Exit(2)
    rt = _runtime()
    bootstrap.init(rt)
    logins_file = Path(rt.settings.key_dir) / "demo-logins.json"
    logins = json.loads(logins_file.read_text()) if logins_file.exists() else {}
    for username, display, role, scope in DEMO_USERS:
        if username not in logins:
            password = secrets.token_urlsafe(15)
            _create_user(rt, username, display, role, scope, password)
            logins[username] = {"password": password, "role": role.value, "scope": scope, "who": display}
            fd = os.open(logins_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(logins, f, indent=1)
    if bootstrap.patient_count(rt) == 0 and patients > 0:
        from registry import reference_data
        from registry.demo.generator import district_facility_rows

        with rt.sessions.begin() as s:  # an invented EPI centre in every district without a facility (demo only)
            added = reference_data.apply_facilities(s, district_facility_rows(s), "demo facilities").added
        if added:
            console.print(f"added {len(added)} demo EPI centres, one in each district that had no facility")
        with progress.bar(console) as bar:
            tasks = {"generating": bar.add_task("synthetic patients (encrypted)", total=patients),
                     "writing": bar.add_task("rows written", total=None, visible=False),
                     "aggregates": bar.add_task("coverage aggregates", total=1, visible=False)}

            def show(phase: str, done: int, total: int) -> None:
                bar.update(tasks[phase], completed=done, total=total, visible=True)

            with rt.sessions.begin() as s:
                n, d = generate(rt, s, patients=patients, on_progress=show)
                pairs = demo_duplicates.add(rt, s, count=duplicates)  # before the aggregates: they count every record
                show("aggregates", 0, 1)
                report_aggregates.rebuild(s, date.today())  # the generator inserts doses directly
                show("aggregates", 1, 1)
        console.print(f"loaded {n} synthetic patients and {d} doses")
        if duplicates:
            console.print(f"queued {pairs} duplicate pairs for steward.punjab (second records of demo children in Punjab)")
    if bootstrap.patient_count(rt) > 0:
        _demo_programme(rt)
    url = f"http://{rt.settings.serve.host}:{rt.settings.serve.port}"
    console.print("[bold]Demo logins[/] (generated on first run, kept in the key directory):", soft_wrap=True)
    if "guardian.demo" not in logins and bootstrap.patient_count(rt) > 0:
        logins["guardian.demo"] = _demo_guardian(rt)
        fd = os.open(logins_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(logins, f, indent=1)
    for username, info in logins.items():
        if "access_code" in info:  # the guardian: the child's health ID and the card's access code, at /my
            console.print(f"  {username:<18} health ID {info['health_id']}, access code {info['access_code']}   "
                          f"citizen          {info['who']}", soft_wrap=True, highlight=False)
            continue
        console.print(f"  {username:<18} {info['password']:<22} {info['role']:<16} {info['scope']:<10} {info['who']}",
                      soft_wrap=True, highlight=False)
    console.print(f"API: [bold]{url}[/]   docs: {url}/docs   health: {url}/healthz", soft_wrap=True)
    if serve_api:
        serve(None, None, None)


def _demo_programme(rt: Runtime) -> None:
    """The demo's target populations and DHIS2 mapping (registry/demo/programme.py), once; audited
    like `nhr reports population load` and `nhr reports dhis2-mapping`. Never in production: `demo`
    refuses it before anything is loaded."""
    from datetime import date

    from registry.demo import programme
    from security.audit import trail as audit

    with rt.sessions.begin() as s:
        if not programme.missing(s):
            return
        loaded = programme.load(s, date.today())
        trail = _cli_trail()
        trail.record(s, "report.population_load", audit.SUCCESS, resource_type="Report",
                     detail={"rows": loaded["figures"], "via": "cli demo"})
        trail.record(s, "report.dhis2_mapping", audit.SUCCESS, resource_type="Report", resource_id=loaded["mapping"],
                     detail={"via": "cli demo"})
    console.print(f"loaded demo target populations for {loaded['places']} jurisdictions ({loaded['figures']} figures) and "
                  f"a demo DHIS2 mapping ({loaded['data_elements']} data elements, {loaded['org_units']} organisation units)",
                  soft_wrap=True)


def _demo_guardian(rt: Runtime) -> dict:
    """A guardian's login for the demo: the first synthetic child's health ID and a new access code
    for its card (audited as the CLI, like every demo account)."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from registry.citizens import codes as access_codes
    from registry.citizens import repository as access_code_repo
    from registry.patients import codec
    from registry.patients.models import Patient
    from security.audit import trail as audit

    code, code_hash = access_codes.issue(rt.code_hasher)
    with rt.sessions.begin() as s:
        row = s.execute(select(Patient).where(Patient.merged_into.is_(None)).order_by(Patient.created_at, Patient.id)
                        .limit(1)).scalar_one()
        generation = access_code_repo.replace_code(s, row.id, code_hash, datetime.now(UTC), uuid.UUID(int=0))
        _cli_trail().record(s, "patient.access_code", audit.SUCCESS, resource_type="Patient", resource_id=row.id,
                            detail={"generation": generation, "via": "cli demo"})
        health_id = codec.decrypt_column(rt.cipher, row, "health_id")
    return {"health_id": health_id, "access_code": code, "role": "citizen", "who": "Guardian of a demo child (open /my)"}


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="target revision")):
    """Apply migrations up to REVISION (default head)."""
    bootstrap.upgrade(get_settings().database_url, revision)
    console.print(f"upgraded to {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="target revision, e.g. base or -1")):
    """Revert migrations down to REVISION."""
    bootstrap.downgrade(get_settings().database_url, revision)
    console.print(f"downgraded to {revision}")


@db_app.command("check")
def db_check():
    """Fail if the models and the migrated schema differ."""
    bootstrap.check(get_settings().database_url)
    console.print("no drift")


@users_app.command("create")
def users_create(username: str = typer.Option(..., help="the login name"), role: Role = typer.Option(..., help="what the account may do"),
                 scope: str = typer.Option(..., help="facility code (clinic_worker) or jurisdiction code"),
                 display_name: str = typer.Option(None, help="the name shown to others (default: the username)"),
                 password_stdin: bool = typer.Option(False, help="read the password from standard input")):
    """Create a staff account. The password is prompted for (or read from stdin), never an argument."""
    from registry.errors import DomainError

    password = sys.stdin.readline().rstrip("\n") if password_stdin else typer.prompt("password", hide_input=True, confirmation_prompt=True)
    rt = _runtime()
    rt.load_keys()
    try:
        view = _create_user(rt, username, display_name or username, role, scope, password)
    except DomainError as exc:
        console.print(f"[red]refused[/]: {exc.field}: {exc.message}")
        raise typer.Exit(1)
    console.print(f"created {view.username} ({view.role} at {view.scope_level} {view.scope_code})")


@users_app.command("list")
def users_list():
    """List staff accounts."""
    from registry.users.service import list_users

    rt = _runtime()
    with rt.sessions() as s:
        users = list_users(s)
    table = Table()
    for col in ("username", "role", "scope", "active", "created"):
        table.add_column(col)
    for u in users:
        table.add_row(u.username, u.role, f"{u.scope_level}:{u.scope_code}", str(u.active), u.created_at.strftime("%Y-%m-%d"))
    console.print(table)


@keys_app.command("init")
def keys_init(without_linkage_secret: bool = typer.Option(
        False, "--without-linkage-secret",
        help="the national comparer's deployment: do not create `linkage-secret` (only the provinces' encoders hold it)")):
    """Create every missing key: data keys per province, secrets, the audit signing key and the
    certificate issuers (with `nhr init`, the only way keys are created in production)."""
    custodians = bootstrap.provision_keys(_runtime(provisioning=True), linkage_secret=not without_linkage_secret)
    console.print(f"keys ready for: {', '.join(custodians)}")


def main() -> None:
    """The `nhr` entry point: the commands above, with plain failures (cli/errors.py)."""
    from cli.errors import run

    sys.exit(run(app))


if __name__ == "__main__":
    main()
