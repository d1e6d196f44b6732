"""Configuration from the environment (prefix `NHR_`) or a `.env` file, in small groups.

Invariants:
- In `development` and `test`, everything has a safe local default: an SQLite file and a keyring
  directory under `./var`, with keys generated on first use.
- In `production`, nothing secret or environment-specific has a default: the database URL and
  the key directory must be given explicitly, and keys are never generated implicitly (`nhr
  keys init` creates them), so a wrong mount fails at start instead of starting a new custody.
- The environment names are flat and do not depend on the grouping: `settings.reports.min_cell`
  is `NHR_REPORT_MIN_CELL` (its group's prefix + the field, or the field's `validation_alias`).
  Each group is a `BaseSettings` of its own that reads the same environment and `.env`, so a group
  given as keywords or as a dict (`Settings(reports={"min_cell": 3})`) still takes its other
  fields from there. tests/test_settings.py pins every name; a new field must be added to it.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, env_file=".env", extra="ignore", validate_by_name=True)


class _Strict(BaseSettings):
    """Keywords must name a field: an outdated flat name (`report_min_cell=`) fails instead of being ignored.
    Unknown names in the environment and `.env` are still ignored (they may be other programs' settings)."""

    def __init__(self, **values: Any) -> None:
        fields = type(self).model_fields
        known = set(fields) | {f.validation_alias for f in fields.values() if isinstance(f.validation_alias, str)}
        if unknown := sorted(k for k in values if k not in known and not k.startswith("_")):
            raise TypeError(f"{type(self).__name__} has no setting {', '.join(unknown)} (see registry/settings.py)")
        super().__init__(**values)


class TokenSettings(_Strict):
    """Staff access tokens (signed JWT): they live 1 to 60 minutes; `iss` and `aud` are checked on every request, and
    so is the account's token generation (revocation), read at most every `revocation_check_seconds` per worker."""
    model_config = _env("NHR_TOKEN_")
    ttl_seconds: int = Field(900, ge=60, le=3600)
    issuer: str = "nhr"
    audience: str = "nhr-api"
    # How long a worker may trust its cached copy of an account's token generation (registry/users/revocation.py):
    # a revoked token (logout, deactivation, password reset, "end all sessions") is refused by every worker within it.
    revocation_check_seconds: float = Field(0.5, ge=0, le=60)


class PasswordSettings(_Strict):
    """Staff passwords (NIST SP 800-63B: length over composition, never under 8; the breached corpus adds to the
    built-in common list) and their argon2id cost, which applies to new hashes (older ones are rehashed at login)."""
    model_config = _env("NHR_")
    min_length: int = Field(15, ge=8, validation_alias="NHR_PASSWORD_MIN_LENGTH")
    breached_file: str | None = Field(None, validation_alias="NHR_BREACHED_PASSWORDS_FILE")
    argon2_memory_kib: int = Field(19456, ge=1024)
    argon2_time_cost: int = Field(2, ge=1)


class LoginSettings(_Strict):
    """Login throttle, for staff and citizens alike (security/throttle.py). Failures count per (account, client)
    pair, per account and per client within the window. A pair past `max_failures_per_pair` is refused; an account
    past `max_failures_per_account` (a slower ceiling against guessing spread over many clients) is refused only to
    clients that have not logged into it within `known_client_days`, so a stranger elsewhere cannot lock the owner
    out; a client past `max_failures_per_client` is refused for every account. Refusals come before the password
    is checked and say to retry after `window_seconds`."""
    model_config = _env("NHR_LOGIN_")
    window_seconds: int = 900
    max_failures_per_pair: int = Field(5, ge=1)
    max_failures_per_account: int = Field(50, ge=1)
    max_failures_per_client: int = Field(30, ge=1)
    known_client_days: int = Field(30, ge=0)


class LimitSettings(_Strict):
    """Request limits (issue 18). A body over `max_body_bytes` (`max_batch_body_bytes` for the batch sync and the
    FHIR Bundle endpoints) answers 413 before it is parsed. Each principal may make `rate_limit_requests` requests
    to patient-data routes per `rate_limit_window_seconds` (fixed windows counted in the database, so shared by all
    workers), then gets 429 with Retry-After; 0 turns the rate limit off."""
    model_config = _env("NHR_")
    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_batch_body_bytes: int = Field(33_554_432, ge=1024)
    rate_limit_requests: int = Field(600, ge=0)
    rate_limit_window_seconds: int = Field(60, ge=1, le=86_400)


class PageSizeSettings(_Strict):
    """Lists: `default` when the caller gives no limit; no FHIR search returns more than `max` per page."""
    model_config = _env("NHR_PAGE_SIZE_")
    default: int = 20
    max: int = 100


class AuditSettings(_Strict):
    """The audit log's background sealer and the auditor's workbench (issue 3): export cap and anomaly thresholds,
    echoed in every anomaly response. Working hours are local hours in `timezone`, [start, end)."""
    model_config = _env("NHR_AUDIT_")
    seal_interval_seconds: float = Field(2, ge=0)  # 0: no background sealer (seal on demand)
    # The sealer vouches for an event dated at most this long before its latest checkpoint (a transaction that began
    # before a seal and committed after it); older unsealed events are quarantined (README, threat model). Longer
    # than any transaction that writes audit events, shorter than the window in which a back-dated forgery matters.
    seal_grace_seconds: int = Field(600, ge=0, le=86_400)
    export_max_rows: int = Field(100_000, ge=1, le=1_000_000)
    timezone: str = "Asia/Karachi"
    working_hours_start: int = Field(7, ge=0, le=23)  # local hour, inclusive
    working_hours_end: int = Field(20, ge=1, le=24)  # local hour, exclusive
    distinct_patients_min: int = Field(50, ge=1)  # never flag a day below this many patients
    distinct_patients_peer_factor: float = Field(3.0, gt=0)  # ... nor below k x the peers' median
    refusals_per_hour: int = Field(5, ge=1)
    # C2SP verifier keys (cosignature/v1) of the witnesses whose cosignatures the registry accepts and `nhr audit verify
    # --witnesses K` counts, one per line (docs/custody.md#witnesses-of-the-audit-log); none: no witness is trusted.
    witnesses_file: Path | None = None


class CitizenSettings(_Strict):
    """The citizen's access report (issue 3): a guardian's view of the child's record and access log. Staff names
    appear in that log only if `show_staff_names` (off by default)."""
    model_config = _env("NHR_CITIZEN_")
    token_ttl_seconds: int = Field(600, ge=60, le=3600)
    show_staff_names: bool = False
    # Access codes made ahead by `nhr worker` (issue 17, registry/citizens/code_pool.py): how many ready codes the
    # node keeps (0: none, every registration hashes its own), and the seconds between refills
    code_pool_size: int = Field(5_000, ge=0, le=1_000_000)
    code_pool_refill_seconds: float = Field(1, ge=0)  # 0: no refill


class CertificateSettings(_Strict):
    """Vaccination certificates (issue 6): validity of an issued HC1 certificate (CWT exp - iat), 1 day to 10 years;
    a document signer is renewed (new key and certificate, the old one kept for verifying) once it is within
    `signer_renew_days` of its expiry (issue 18; a signer certificate lasts two years)."""
    model_config = _env("NHR_CERTIFICATE_")
    validity_days: int = Field(365, ge=1, le=3650)
    signer_renew_days: int = Field(30, ge=0, le=365)


class ReportSettings(_Strict):
    """Coverage reports (issue 4): cells counting fewer than `min_cell` children are suppressed (never below 1), and
    how many queued patient changes a report folds into the aggregates before answering (the rest wait)."""
    model_config = _env("NHR_REPORT_")
    min_cell: int = Field(5, ge=1, le=100)
    refresh_max: int = Field(20_000, ge=0)
    refresh_interval_seconds: float = Field(5, ge=0)  # 0: no background refresher


class IdempotencySettings(_Strict):
    """Idempotency-Key (issue 5): how long a key replays its first answer; after how long an unfinished claim is
    taken over by a retry."""
    model_config = _env("NHR_IDEMPOTENCY_")
    ttl_seconds: int = Field(86_400, ge=60)
    lock_seconds: int = Field(120, ge=1)


class SyncSettings(_Strict):
    """Offline sync (issue 5): the batch upload's size limit and the changes feed's re-read window (late commits,
    clock skew): the cursor that ends a download is never later than now - `overlap_seconds`."""
    model_config = _env("NHR_SYNC_")
    batch_max_items: int = Field(500, ge=1, le=5000)
    overlap_seconds: int = Field(300, ge=0)
    # PostgreSQL: a batch of doses, registrations and refusals (no corrections or voids) on the event loop's async
    # unit of work (registry/sync/batch_async.py, registry/sync/batch_patients.py);
    # false: every batch on the sync path
    batch_on_loop: bool = True


class FhirSettings(_Strict):
    """FHIR R4 (issue 17): PostgreSQL: a transaction or batch Bundle of Immunization creates only on the event loop's
    async unit of work (registry/fhir/bundle_async.py) when true. Off by default: on a quiet 2-core machine it
    answered 0.87 of the sync path's resources/s at 1.03-1.17x its CPU a dose (bench/RESULTS.md 2026-12-03 14:02),
    for 5 round trips instead of 10; turn it on where PostgreSQL is a network hop away and measure."""
    model_config = _env("NHR_FHIR_")
    bundle_on_loop: bool = False


class BulkExportSettings(_Strict):
    """FHIR Bulk Data $export (issue 5): job lifetime, snapshot rows taken per status poll, resources per file."""
    model_config = _env("NHR_BULK_EXPORT_")
    ttl_seconds: int = Field(86_400, ge=60)
    step_rows: int = Field(50_000, ge=1)
    file_rows: int = Field(10_000, ge=1)


class ConsoleSettings(_Strict):
    """The web console's sessions (issue 14): idle timeout, absolute lifetime, and whether the cookie is
    `Secure` (None: everywhere but `env=development`)."""
    model_config = _env("NHR_CONSOLE_")
    idle_minutes: int = Field(15, ge=1, le=480)
    lifetime_minutes: int = Field(720, ge=5, le=7 * 24 * 60)
    secure_cookie: bool | None = None


class ServeSettings(_Strict):
    """`nhr serve` (its options override these). None for `threadpool_size` keeps AnyIO's default."""
    model_config = _env("NHR_")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Threads per worker for sync routes (AnyIO's default is 40). On few cores a smaller pool
    # spends less time handing the GIL around; see bench/README.md.
    threadpool_size: int | None = Field(None, ge=1, le=200)
    # How long `nhr serve --workers N` waits for a worker to answer its health check before it
    # kills and replaces it (uvicorn's default is 5 s: too short for a worker still importing
    # on a loaded machine, which then never comes up).
    worker_healthcheck_seconds: int = Field(60, ge=1)
    # Connections per worker of the async pool behind the hot paths (registry/async_database.py):
    # the audited read and search. Each request holds one for two round trips, so too few
    # connections queue requests that the CPU could serve; each counts against max_connections.
    async_pool_size: int = Field(20, ge=1, le=200)
    # The sync pool behind the unit of work (registry/database.py): `db_pool_size` connections per
    # worker plus as many again as overflow. At most that many requests per worker are in flight
    # (api/admission.py); the others wait on the event loop, and one that waits longer than
    # `db_admission_timeout_seconds` is answered 503 with Retry-After.
    db_pool_size: int = Field(10, ge=1, le=100)
    db_admission_timeout_seconds: float = Field(30.0, gt=0, le=600)
    # Reverse proxies whose X-Forwarded-For is believed for the audited client address
    # (api/client_address.py): comma-separated addresses or CIDR ranges; none by default.
    trusted_proxies: str = ""
    # The hot routes (audited read, search) served without FastAPI's dependency resolution
    # (api/hot_gate.py); off: every route goes through it. Same answers and audit events either way.
    hot_gate: bool = True

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses_or_ranges(cls, v: str) -> str:
        for item in (x.strip() for x in v.split(",")):
            if item:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError("each entry must be an IP address or a CIDR range") from None
        return v


class NodeSettings(_Strict):
    """A provincial node (issue 16, docs/nodes.md). `province` set: this instance registers and holds only that
    province's patients. `peers_file`: JSON object, province -> base URL of that province's node-to-node listener
    (https). The node's certificate and key (issued by the federation CA, `nhr node init-tls`) are its TLS identity,
    server and client, and sign its caller assertions; `tls_ca` is the federation CA that admits peers.
    `listen_port`: `nhr node serve` also listens there, mutual TLS only, for the node-to-node routes."""
    model_config = _env("NHR_NODE_")
    province: str | None = Field(None, pattern=r"^[A-Z]{2}-[A-Z]{2,3}$")
    peers_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    listen_port: int = Field(8443, ge=1, le=65535)
    timeout_seconds: float = Field(3, gt=0, le=60)
    # the node whose certificate may pull this node's linkage encodings and push candidate pairs back
    # (the national comparer, registry/linkage/node_exchange.py); unset: encodings go to nobody
    comparer: str | None = Field(None, pattern=r"^[A-Z]{2}(-[A-Z]{2,3})?$")
    # on the comparer (no `province`): how often `nhr worker` pulls, compares and pushes (0: never; the command only)
    compare_interval_seconds: int = Field(0, ge=0, le=7 * 86_400)
    # on a province node serving a comparer: how often `nhr worker` re-encodes its records (0: never; the command
    # only), so that an unmerge or a changed name or birth date reaches the comparer's next pull
    encode_interval_seconds: int = Field(0, ge=0, le=7 * 86_400)
    # on a province node: requests a calling node may make to /node/v1/linkage/* per window (0: no limit)
    linkage_rate_limit_requests: int = Field(600, ge=0)
    linkage_rate_limit_window_seconds: int = Field(60, ge=1, le=86_400)


class Settings(_Strict):
    model_config = SettingsConfigDict(env_prefix="NHR_", env_file=".env", extra="ignore")

    env: Literal["development", "test", "production"] = "development"
    database_url: str = "sqlite:///var/nhr.sqlite3"
    key_dir: Path = Path("var/keyring")
    country: str = "PK"

    tokens: TokenSettings = Field(default_factory=TokenSettings)
    passwords: PasswordSettings = Field(default_factory=PasswordSettings)
    login: LoginSettings = Field(default_factory=LoginSettings)
    page_size: PageSizeSettings = Field(default_factory=PageSizeSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    citizen: CitizenSettings = Field(default_factory=CitizenSettings)
    certificates: CertificateSettings = Field(default_factory=CertificateSettings)
    reports: ReportSettings = Field(default_factory=ReportSettings)
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    fhir: FhirSettings = Field(default_factory=FhirSettings)
    bulk_export: BulkExportSettings = Field(default_factory=BulkExportSettings)
    # Duplicate check at registration (issue 13, registry/linkage): off only to measure its cost
    linkage_check: bool = True
    # Batch deduplication of every province in `nhr worker` (issue 13, registry/linkage/schedule.py): hours between
    # runs of a province; 0: never (run `nhr dedupe run` from cron instead)
    dedupe_interval_hours: float = Field(24, ge=0, le=24 * 366)
    # The audit sealer and the coverage refresher inside the API's workers (None: on except in production, where
    # `nhr worker` runs them as a process of its own; registry/worker.py)
    in_process_worker: bool | None = None
    serve: ServeSettings = Field(default_factory=ServeSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)  # provincial nodes (issue 16 item 4)
    # Where each province's KEK lives (issue 16, security/crypto/kek_backends.py): `PK-PB=pkcs11,*=file`
    key_backends: str = "*=file"
    pkcs11_module: Path = Path("/usr/lib/softhsm/libsofthsm2.so")
    pkcs11_token_label: str = "nhr"
    pkcs11_pin_file: Path | None = None
    pkcs11_pin: str | None = Field(None, repr=False)  # prefer the file; never in the repository
    # A province encoder's copy of the national linkage secret (issue 13 item 7; registry/linkage/linkage_secret.py):
    # a file from the provinces' shared custody (base64 of 32 bytes, first line); None: the keyring's `linkage-secret`
    linkage_secret_file: Path | None = None

    @field_validator("key_backends")
    @classmethod
    def _backend_spec(cls, v: str) -> str:
        from security.crypto.kek_backends import parse_spec

        parse_spec(v)
        return v

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
    def runs_worker_in_process(self) -> bool:
        """Whether the API process seals the audit log and refreshes the aggregates itself."""
        return self.env != "production" if self.in_process_worker is None else self.in_process_worker

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache
def get_settings() -> Settings:
    return Settings()
