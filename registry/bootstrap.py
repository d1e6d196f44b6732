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
from registry import reference_data
from registry.patients.models import Patient
from registry.reference_data import Changes
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


def load_reference_data(rt: Runtime, *, jurisdiction_file: Path | None = None,
                        facility_file: Path | None = None) -> tuple[Changes, Changes | None]:
    """The hierarchy (the given file, or the package's default) and the facilities (the given file;
    without one, the package's invented demo facilities outside production and none in it).
    Each file is checked whole before anything is written (registry/reference_data.py)."""
    with rt.sessions.begin() as s:
        j_rows = (reference_data.read_file(jurisdiction_file, reference_data.JURISDICTION_COLUMNS, str(jurisdiction_file))
                  if jurisdiction_file else jurisdictions.read_csv())
        j = reference_data.apply_jurisdictions(s, j_rows)
        rt.jurisdictions.refresh(s)
        if facility_file is not None:
            f_rows = reference_data.read_file(facility_file, reference_data.FACILITY_COLUMNS, str(facility_file))
        elif rt.settings.env != "production":
            f_rows = facilities.read_csv()
        else:
            return j, None
        return j, reference_data.apply_facilities(s, f_rows)


def init(rt: Runtime, *, jurisdiction_file: Path | None = None, facility_file: Path | None = None,
         linkage_secret: bool = True) -> dict:
    """Idempotent: migrate, load the hierarchy, facilities and default schedule, create missing keys
    (without `linkage-secret` when `linkage_secret=False`: see provision_keys)."""
    upgrade(rt.settings.database_url)
    j, f = load_reference_data(rt, jurisdiction_file=jurisdiction_file, facility_file=facility_file)
    with rt.sessions.begin() as s:
        schedules_added = load_default_schedule_if_none(s)
    return {"jurisdictions": j, "facilities": f, "jurisdictions_added": len(j.added),
            "facilities_added": len(f.added) if f else 0, "schedules_added": schedules_added,
            "custodians": provision_keys(rt, linkage_secret=linkage_secret)}


SECRETS = tuple(SECRET_NAMES)


def provision_keys(rt: Runtime, *, linkage_secret: bool = True) -> list[str]:
    """Create every missing key: data keys per province, the named secrets, the audit log's
    signing key and the certificate issuers. Idempotent; the explicit provisioning step (the
    API itself never creates keys in production). `linkage_secret=False` (a national-only
    deployment, `nhr init` / `nhr keys init --without-linkage-secret`) skips `linkage-secret`, which only the
    provinces' encoders hold (registry/linkage/linkage_secret.py)."""
    from registry.audit_log import sealing
    from registry.certificates import service as certificates

    rt.keyring.create_missing = True
    rt.load_keys()
    for name in SECRETS:
        if linkage_secret or name != "linkage-secret":
            rt.keyring.secret(name)
    sealing.public_key(rt)
    issuers = certificates.issuer_keys(rt)
    custodians = sorted(rt.keys.custodians())
    for custodian in custodians:
        issuers.signer(custodian, renew_days=rt.settings.certificates.signer_renew_days)
    return custodians


def patient_count(rt: Runtime) -> int:
    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(Patient)).scalar_one()
