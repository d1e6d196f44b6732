"""Setting a database up: migrations, reference data, keys. Used by the CLI and the tests alike,
so the tests exercise the very commands an operator runs."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select

import migrations
from registry.database import normalise_url
from registry.facilities import repository as facilities
from registry.jurisdictions import repository as jurisdictions
from registry.patients.models import Patient
from security.crypto.keyring import SECRET_NAMES
from registry.runtime import Runtime
from registry.schedules.service import load_default_if_none as load_default_schedule_if_none

MIGRATIONS_DIR = Path(migrations.__file__).parent


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raises if the models and the migrated schema differ (`alembic check`)."""
    command.check(alembic_config(url))


def load_reference_data(rt: Runtime, *, jurisdiction_file: Path | None = None, facility_file: Path | None = None) -> tuple[int, int]:
    with rt.sessions.begin() as s:
        j = jurisdictions.load(s, jurisdictions.read_csv(jurisdiction_file))
        f = facilities.load(s, facilities.read_csv(facility_file))
    rt.jurisdictions.refresh()
    return j, f


def init(rt: Runtime) -> dict:
    """Idempotent: migrate, load the default hierarchy, facilities and schedule, create missing keys."""
    upgrade(rt.settings.database_url)
    j, f = load_reference_data(rt)
    with rt.sessions.begin() as s:
        schedules_added = load_default_schedule_if_none(s)
    return {"jurisdictions_added": j, "facilities_added": f, "schedules_added": schedules_added,
            "custodians": provision_keys(rt)}


SECRETS = tuple(SECRET_NAMES)


def provision_keys(rt: Runtime) -> list[str]:
    """Create every missing key: data keys per province, the named secrets, the audit log's
    signing key and the certificate issuers. Idempotent; the explicit provisioning step (the
    API itself never creates keys in production)."""
    from registry.audit_log import sealing
    from registry.certificates import service as certificates

    rt.keyring.create_missing = True
    rt.load_keys()
    for name in SECRETS:
        rt.keyring.secret(name)
    sealing.public_key(rt)
    issuers = certificates.issuer_keys(rt)
    custodians = sorted(rt.keys.custodians())
    for custodian in custodians:
        issuers.signer(custodian)
    return custodians


def patient_count(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(Patient)).scalar_one()
