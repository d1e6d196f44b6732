"""Configuration from the environment (prefix `NHR_`) or a `.env` file.

Invariants:
- In `development` and `test`, everything has a safe local default: an SQLite file and a keyring
  directory under `./var`, with keys generated on first use.
- In `production`, nothing secret or environment-specific has a default: the database URL and
  the key directory must be given explicitly, and keys are never generated implicitly (`nhr
  keys init` creates them), so a wrong mount fails at start instead of starting a new custody.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NHR_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///var/nhr.sqlite3"
    key_dir: Path = Path("var/keyring")
    country: str = "PK"

    token_ttl_seconds: int = Field(900, ge=60, le=3600)
    token_issuer: str = "nhr"
    token_audience: str = "nhr-api"

    password_min_length: int = Field(15, ge=8)
    breached_passwords_file: str | None = None
    argon2_memory_kib: int = Field(19456, ge=1024)
    argon2_time_cost: int = Field(2, ge=1)

    login_window_seconds: int = 900
    login_max_failures_per_account: int = 5
    login_max_failures_per_client: int = 30

    page_size_default: int = 20
    page_size_max: int = 100

    audit_seal_interval_seconds: float = Field(2, ge=0)  # 0: no background sealer (seal on demand)

    # The auditor's workbench (issue 3): export cap and anomaly thresholds.
    audit_export_max_rows: int = Field(100_000, ge=1, le=1_000_000)
    audit_timezone: str = "Asia/Karachi"
    audit_working_hours_start: int = Field(7, ge=0, le=23)  # local hour, inclusive
    audit_working_hours_end: int = Field(20, ge=1, le=24)  # local hour, exclusive
    audit_distinct_patients_min: int = Field(50, ge=1)  # never flag a day below this many patients
    audit_distinct_patients_peer_factor: float = Field(3.0, gt=0)  # ... nor below k x the peers' median
    audit_refusals_per_hour: int = Field(5, ge=1)

    # The citizen's access report (issue 3): a guardian's view of the child's record and access log.
    citizen_token_ttl_seconds: int = Field(600, ge=60, le=3600)
    citizen_show_staff_names: bool = False  # NHR_CITIZEN_SHOW_STAFF_NAMES: staff names in the access log

    # Vaccination certificates (issue 6): validity of an issued HC1 certificate (CWT exp - iat).
    certificate_validity_days: int = Field(365, ge=1, le=3650)

    # Coverage reports (issue 4): small-cell threshold and how many queued patient changes a
    # report folds into the aggregates before answering (the rest wait for the next one).
    report_min_cell: int = Field(5, ge=1, le=100)  # NHR_REPORT_MIN_CELL: cells below this are suppressed
    report_refresh_max: int = Field(20_000, ge=0)
    report_refresh_interval_seconds: float = Field(5, ge=0)  # 0: no background refresher
    # Offline sync (issue 5): Idempotency-Key lifetime and claim lock, batch size, changes feed.
    idempotency_ttl_seconds: int = Field(86_400, ge=60)
    idempotency_lock_seconds: int = Field(120, ge=1)
    sync_batch_max_items: int = Field(500, ge=1, le=5000)
    sync_overlap_seconds: int = Field(300, ge=0)  # the feed's re-read window (late commits, clock skew)
    # FHIR Bulk Data $export (issue 5): job lifetime, snapshot rows taken per status poll, resources per file.
    bulk_export_ttl_seconds: int = Field(86_400, ge=60)
    bulk_export_step_rows: int = Field(50_000, ge=1)
    bulk_export_file_rows: int = Field(10_000, ge=1)

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Threads per worker for sync routes (AnyIO's default is 40). On few cores a smaller pool
    # spends less time handing the GIL around; see bench/README.md. None keeps the default.
    threadpool_size: int | None = Field(None, ge=1, le=200)
    # How long `nhr serve --workers N` waits for a worker to answer its health check before it
    # kills and replaces it (uvicorn's default is 5 s: too short for a worker still importing
    # on a loaded machine, which then never comes up).
    worker_healthcheck_seconds: int = Field(60, ge=1)

    @model_validator(mode="after")
    def _production_requires_explicit_values(self) -> Settings:
        if self.env == "production":
            missing = [name for name in ("database_url", "key_dir") if name not in self.model_fields_set]
            if missing:
                raise ValueError(f"in production these must be set explicitly: {', '.join('NHR_' + m.upper() for m in missing)}")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production runs on PostgreSQL, not SQLite")
        return self

    @property
    def create_missing_keys(self) -> bool:
        return self.env != "production"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
