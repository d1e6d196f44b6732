"""Settings: every environment name maps to its field in the groups, from the environment and from `.env`.

ENV below pins the names that docker-compose.yml, the README, docs/ and operators' scripts use: a field
renamed or moved to another group must keep its name, and a new field must be added here (the walk over
the model fails otherwise). The production rules are tested in security_tests/test_crypto.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from registry.settings import Settings

# environment name -> (attribute path, value as written, value parsed); every value differs from the default
ENV = {
    "NHR_ENV": ("env", "test", "test"),
    "NHR_DATABASE_URL": ("database_url", "postgresql://nhr@db.internal/nhr", "postgresql://nhr@db.internal/nhr"),
    "NHR_KEY_DIR": ("key_dir", "/srv/nhr/keyring", Path("/srv/nhr/keyring")),
    "NHR_COUNTRY": ("country", "AF", "AF"),
    "NHR_TOKEN_TTL_SECONDS": ("tokens.ttl_seconds", "1200", 1200),
    "NHR_TOKEN_ISSUER": ("tokens.issuer", "nhr-pb", "nhr-pb"),
    "NHR_TOKEN_AUDIENCE": ("tokens.audience", "nhr-api-pb", "nhr-api-pb"),
    "NHR_TOKEN_REVOCATION_CHECK_SECONDS": ("tokens.revocation_check_seconds", "0.25", 0.25),
    "NHR_PASSWORD_MIN_LENGTH": ("passwords.min_length", "16", 16),
    "NHR_BREACHED_PASSWORDS_FILE": ("passwords.breached_file", "/srv/breached.txt", "/srv/breached.txt"),
    "NHR_ARGON2_MEMORY_KIB": ("passwords.argon2_memory_kib", "65536", 65536),
    "NHR_ARGON2_TIME_COST": ("passwords.argon2_time_cost", "3", 3),
    "NHR_LOGIN_WINDOW_SECONDS": ("login.window_seconds", "600", 600),
    "NHR_LOGIN_MAX_FAILURES_PER_ACCOUNT": ("login.max_failures_per_account", "6", 6),
    "NHR_LOGIN_MAX_FAILURES_PER_CLIENT": ("login.max_failures_per_client", "31", 31),
    "NHR_LOGIN_MAX_FAILURES_PER_PAIR": ("login.max_failures_per_pair", "4", 4),
    "NHR_LOGIN_KNOWN_CLIENT_DAYS": ("login.known_client_days", "7", 7),
    "NHR_MAX_BODY_BYTES": ("limits.max_body_bytes", "2048", 2048),
    "NHR_MAX_BATCH_BODY_BYTES": ("limits.max_batch_body_bytes", "4096", 4096),
    "NHR_RATE_LIMIT_REQUESTS": ("limits.rate_limit_requests", "10", 10),
    "NHR_RATE_LIMIT_WINDOW_SECONDS": ("limits.rate_limit_window_seconds", "30", 30),
    "NHR_PAGE_SIZE_DEFAULT": ("page_size.default", "25", 25),
    "NHR_PAGE_SIZE_MAX": ("page_size.max", "200", 200),
    "NHR_AUDIT_SEAL_INTERVAL_SECONDS": ("audit.seal_interval_seconds", "0.5", 0.5),
    "NHR_AUDIT_SEAL_GRACE_SECONDS": ("audit.seal_grace_seconds", "90", 90),
    "NHR_AUDIT_EXPORT_MAX_ROWS": ("audit.export_max_rows", "5000", 5000),
    "NHR_AUDIT_TIMEZONE": ("audit.timezone", "Asia/Kabul", "Asia/Kabul"),
    "NHR_AUDIT_WORKING_HOURS_START": ("audit.working_hours_start", "8", 8),
    "NHR_AUDIT_WORKING_HOURS_END": ("audit.working_hours_end", "18", 18),
    "NHR_AUDIT_DISTINCT_PATIENTS_MIN": ("audit.distinct_patients_min", "40", 40),
    "NHR_AUDIT_DISTINCT_PATIENTS_PEER_FACTOR": ("audit.distinct_patients_peer_factor", "2.5", 2.5),
    "NHR_AUDIT_REFUSALS_PER_HOUR": ("audit.refusals_per_hour", "7", 7),
    "NHR_AUDIT_WITNESSES_FILE": ("audit.witnesses_file", "/etc/nhr/witnesses", Path("/etc/nhr/witnesses")),
    "NHR_CITIZEN_TOKEN_TTL_SECONDS": ("citizen.token_ttl_seconds", "300", 300),
    "NHR_CITIZEN_SHOW_STAFF_NAMES": ("citizen.show_staff_names", "true", True),
    "NHR_CITIZEN_CODE_POOL_SIZE": ("citizen.code_pool_size", "200", 200),
    "NHR_CITIZEN_CODE_POOL_REFILL_SECONDS": ("citizen.code_pool_refill_seconds", "0.5", 0.5),
    "NHR_CERTIFICATE_VALIDITY_DAYS": ("certificates.validity_days", "180", 180),
    "NHR_CERTIFICATE_SIGNER_RENEW_DAYS": ("certificates.signer_renew_days", "60", 60),
    "NHR_REPORT_MIN_CELL": ("reports.min_cell", "10", 10),
    "NHR_REPORT_REFRESH_MAX": ("reports.refresh_max", "1000", 1000),
    "NHR_REPORT_REFRESH_INTERVAL_SECONDS": ("reports.refresh_interval_seconds", "0", 0),
    "NHR_IDEMPOTENCY_TTL_SECONDS": ("idempotency.ttl_seconds", "3600", 3600),
    "NHR_IDEMPOTENCY_LOCK_SECONDS": ("idempotency.lock_seconds", "30", 30),
    "NHR_SYNC_BATCH_MAX_ITEMS": ("sync.batch_max_items", "200", 200),
    "NHR_SYNC_OVERLAP_SECONDS": ("sync.overlap_seconds", "60", 60),
    "NHR_SYNC_BATCH_ON_LOOP": ("sync.batch_on_loop", "false", False),
    "NHR_FHIR_BUNDLE_ON_LOOP": ("fhir.bundle_on_loop", "true", True),
    "NHR_BULK_EXPORT_TTL_SECONDS": ("bulk_export.ttl_seconds", "7200", 7200),
    "NHR_BULK_EXPORT_STEP_ROWS": ("bulk_export.step_rows", "1000", 1000),
    "NHR_BULK_EXPORT_FILE_ROWS": ("bulk_export.file_rows", "500", 500),
    "NHR_LINKAGE_CHECK": ("linkage_check", "false", False),
    "NHR_DEDUPE_INTERVAL_HOURS": ("dedupe_interval_hours", "6", 6),
    "NHR_IN_PROCESS_WORKER": ("in_process_worker", "false", False),
    "NHR_CONSOLE_IDLE_MINUTES": ("console.idle_minutes", "10", 10),
    "NHR_CONSOLE_LIFETIME_MINUTES": ("console.lifetime_minutes", "480", 480),
    "NHR_CONSOLE_SECURE_COOKIE": ("console.secure_cookie", "false", False),
    "NHR_HOST": ("serve.host", "0.0.0.0", "0.0.0.0"),
    "NHR_PORT": ("serve.port", "9000", 9000),
    "NHR_WORKERS": ("serve.workers", "2", 2),
    "NHR_THREADPOOL_SIZE": ("serve.threadpool_size", "8", 8),
    "NHR_TRUSTED_PROXIES": ("serve.trusted_proxies", "10.0.0.0/8", "10.0.0.0/8"),
    "NHR_HOT_GATE": ("serve.hot_gate", "false", False),
    "NHR_WORKER_HEALTHCHECK_SECONDS": ("serve.worker_healthcheck_seconds", "90", 90),
    "NHR_ASYNC_POOL_SIZE": ("serve.async_pool_size", "7", 7),
    "NHR_DB_POOL_SIZE": ("serve.db_pool_size", "4", 4),
    "NHR_DB_ADMISSION_TIMEOUT_SECONDS": ("serve.db_admission_timeout_seconds", "12.5", 12.5),
    "NHR_KEY_BACKENDS": ("key_backends", "PK-PB=pkcs11,*=file", "PK-PB=pkcs11,*=file"),
    "NHR_PKCS11_MODULE": ("pkcs11_module", "/opt/hsm/lib.so", Path("/opt/hsm/lib.so")),
    "NHR_PKCS11_TOKEN_LABEL": ("pkcs11_token_label", "punjab", "punjab"),
    "NHR_PKCS11_PIN_FILE": ("pkcs11_pin_file", "/run/secrets/pin", Path("/run/secrets/pin")),
    "NHR_PKCS11_PIN": ("pkcs11_pin", "123456", "123456"),
    "NHR_LINKAGE_SECRET_FILE": ("linkage_secret_file", "/run/secrets/linkage", Path("/run/secrets/linkage")),
    "NHR_NODE_PROVINCE": ("node.province", "PK-PB", "PK-PB"),
    "NHR_NODE_PEERS_FILE": ("node.peers_file", "/etc/nhr/peers.json", Path("/etc/nhr/peers.json")),
    "NHR_NODE_TLS_CERT": ("node.tls_cert", "/etc/nhr/node.pem", Path("/etc/nhr/node.pem")),
    "NHR_NODE_TLS_KEY": ("node.tls_key", "/etc/nhr/node.key", Path("/etc/nhr/node.key")),
    "NHR_NODE_TLS_CA": ("node.tls_ca", "/etc/nhr/ca.pem", Path("/etc/nhr/ca.pem")),
    "NHR_NODE_LISTEN_PORT": ("node.listen_port", "9443", 9443),
    "NHR_NODE_TIMEOUT_SECONDS": ("node.timeout_seconds", "5", 5),
    "NHR_NODE_COMPARER": ("node.comparer", "PK", "PK"),
    "NHR_NODE_COMPARE_INTERVAL_SECONDS": ("node.compare_interval_seconds", "900", 900),
    "NHR_NODE_ENCODE_INTERVAL_SECONDS": ("node.encode_interval_seconds", "21600", 21600),
    "NHR_NODE_LINKAGE_RATE_LIMIT_REQUESTS": ("node.linkage_rate_limit_requests", "300", 300),
    "NHR_NODE_LINKAGE_RATE_LIMIT_WINDOW_SECONDS": ("node.linkage_rate_limit_window_seconds", "120", 120),
}


def _paths(model: type[BaseSettings], prefix: str = "") -> list[str]:
    """Every leaf field of the model, as an attribute path, descending into the groups."""
    out = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseSettings):
            out += _paths(kind, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _get(settings: Settings, path: str):
    value = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.fixture
def clean(monkeypatch, tmp_path):
    """No NHR_ variable in the environment and an empty working directory (no stray `.env`)."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_field_has_a_pinned_environment_name():
    paths = _paths(Settings)
    assert len(paths) == len(set(paths))
    assert sorted(paths) == sorted(path for path, _, _ in ENV.values())


def test_every_pinned_value_differs_from_the_default(clean):
    defaults = Settings()
    same = [name for name, (path, _, parsed) in ENV.items() if _get(defaults, path) == parsed]
    assert not same, f"these would pass the mapping test without being read: {same}"


@pytest.mark.parametrize("source", ["environment", ".env"])
def test_every_environment_name_reaches_its_field(clean, monkeypatch, source):
    if source == "environment":
        for name, (_, raw, _) in ENV.items():
            monkeypatch.setenv(name, raw)
    else:
        (clean / ".env").write_text("".join(f"{name}={raw}\n" for name, (_, raw, _) in ENV.items()))
    settings = Settings()
    wrong = {name: _get(settings, path) for name, (path, _, parsed) in ENV.items() if _get(settings, path) != parsed}
    assert not wrong


def test_a_group_given_in_part_takes_the_rest_from_the_environment(clean, monkeypatch):
    monkeypatch.setenv("NHR_REPORT_REFRESH_MAX", "1000")
    (clean / ".env").write_text("NHR_REPORT_MIN_CELL=10\n")
    settings = Settings(reports={"refresh_interval_seconds": 0})
    assert (settings.reports.min_cell, settings.reports.refresh_max, settings.reports.refresh_interval_seconds) == (10, 1000, 0)
    assert Settings(reports={"min_cell": 3}).reports.min_cell == 3  # keywords win over the environment


@pytest.mark.parametrize(("name", "raw"), [("NHR_REPORT_MIN_CELL", "0"), ("NHR_SYNC_BATCH_MAX_ITEMS", "5001"),
                                           ("NHR_PASSWORD_MIN_LENGTH", "7"), ("NHR_THREADPOOL_SIZE", "0")])
def test_group_bounds_still_apply(clean, monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("kwargs", [{"report_min_cell": 3}, {"reports": {"min_cells": 3}}, {"serve": {"NHR_WORKERS": 2}}])
def test_a_keyword_that_names_no_field_fails(clean, kwargs):
    """Keywords with the flat names of old (or a typo) would otherwise be ignored without a word."""
    with pytest.raises(TypeError, match="has no setting"):
        Settings(**kwargs)


def test_unknown_names_in_the_environment_and_dotenv_are_ignored(clean, monkeypatch):
    monkeypatch.setenv("NHR_NOT_A_SETTING", "1")
    (clean / ".env").write_text("NHR_ALSO_NOT_ONE=1\nPOSTGRES_PASSWORD=x\n")
    assert Settings().reports.min_cell == 5
