"""Test harness: a real database built by the migrations, a real app, real keys.

- SQLite (a file in a temp dir) by default; PostgreSQL when NHR_TEST_DATABASE_URL is set
  (`.ci/run` creates and drops a database of its own for that).
- Requests commit for real (the unit of work is under test), so tests isolate themselves by
  building their own facilities and users (`world`) with unique codes instead of rolling back.
- No patient data is printed: assertions compare values, and failure messages name fields.
- Nothing leaves: a socket guard (tests/network_guard.py) fails any test that tries to reach an
  address outside loopback.
"""

from __future__ import annotations

import itertools
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import create_engine, text

import network_guard
from api.app import create_app
from registry import bootstrap
from registry.database import normalise_url
from registry.facilities import repository as facilities
from registry.runtime import Runtime
from registry.settings import Settings
from registry.users.schemas import UserCreate
from registry.users.service import create_user

# Nothing leaves (tests/network_guard.py): any connect() outside loopback fails the test that made it.
network_guard.install()
nothing_leaves = network_guard.nothing_leaves  # the autouse fixture, for every test

PG_URL = os.environ.get("NHR_TEST_DATABASE_URL")
_counter = itertools.count(1)

# Property tests check what is true, never how fast: Hypothesis's default 200 ms deadline per example
# fails them on a loaded CI machine (seen: a Verhoeff check on a 2-core machine at load 20).
hypothesis_settings.register_profile("nhr", deadline=None)
hypothesis_settings.load_profile("nhr")


def pytest_report_header(config):
    return f"database under test: {'PostgreSQL' if PG_URL else 'SQLite'}"


def fresh_database_url(tmp_path: Path, name: str) -> str:
    """A new, empty database: a file on SQLite, a new database on the PostgreSQL server."""
    if not PG_URL:
        return f"sqlite:///{tmp_path / (name + '.sqlite3')}"
    server = normalise_url(PG_URL)
    base, _, dbname = server.rpartition("/")
    new = f"{dbname}_{name}_{secrets.token_hex(3)}".lower()
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{new}"'))
    admin.dispose()
    return f"{base}/{new}"


def drop_database(url: str) -> None:
    if not url.startswith("postgresql"):
        return
    base, _, dbname = url.rpartition("/")
    admin = create_engine(normalise_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    admin.dispose()


def make_settings(url: str, key_dir: Path, **groups: dict) -> Settings:
    """Test settings: cheap argon2, no client throttle, a rate limit that only its own test reaches, no background
    sealer or refresher. `groups` adds to these per group (e.g. `audit={"export_max_rows": 2}`); other fields come
    from the environment as usual."""
    base = {"passwords": {"argon2_memory_kib": 1024, "argon2_time_cost": 1}, "login": {"max_failures_per_client": 1000},
            "audit": {"seal_interval_seconds": 0}, "reports": {"refresh_interval_seconds": 0},
            "limits": {"rate_limit_requests": 100_000}}  # counted on every request, refused only in its own test
    merged = {name: {**base.get(name, {}), **fields} for name, fields in groups.items()}
    return Settings(env="test", database_url=url, key_dir=key_dir, **{**base, **merged})


@pytest.fixture(scope="session")
def db_url(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("db")
    url = fresh_database_url(tmp, "nhr_test")
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def runtime(db_url, tmp_path_factory) -> Runtime:
    settings = make_settings(db_url, tmp_path_factory.mktemp("keys") / "keyring")
    rt = Runtime.build(settings)
    bootstrap.init(rt)
    yield rt
    rt.engine.dispose()


@pytest.fixture(scope="session")
def app(runtime):
    return create_app(runtime.settings, runtime)


@pytest.fixture(scope="session")
def client(app) -> TestClient:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


PASSWORD = "correct-horse-battery-staple-42"


@dataclass
class World:
    """An isolated set of facilities and users. Relations to facility `a`:
    `a2` same district, `b` other district same province, `c` other province."""

    client: TestClient
    runtime: Runtime
    tag: str
    facilities: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, who: str) -> str:
        if who not in self._tokens:
            r = self.client.post("/api/v1/auth/token", data={"username": self.users[who], "password": PASSWORD})
            assert r.status_code == 200, r.json()
            self._tokens[who] = r.json()["access_token"]
        return self._tokens[who]

    def h(self, who: str, **extra) -> dict:
        return {"Authorization": f"Bearer {self.token(who)}", **extra}

    def register(self, who: str = "clinic_a", **overrides) -> dict:
        body = new_child(**overrides)
        r = self.client.post("/api/v1/patients", json=body, headers=self.h(who))
        assert r.status_code == 201, r.json()
        return {**r.json(), "_input": body}


def unique_nadra() -> str:
    d = f"{secrets.randbelow(10**13):013d}"
    return f"{d[:5]}-{d[5:12]}-{d[12]}"


def new_child(**overrides) -> dict:
    tag = secrets.token_hex(3)
    body = {
        "given_name": f"Zarnigar{tag}", "family_name": f"Qizilbash{tag}", "sex": "female", "birth_date": "2026-06-01",
        "bform": unique_nadra(),
        "guardian": {"name": f"Mehrunnisa{tag}", "relationship": "mother", "cnic": unique_nadra()},
        "phone": f"0333-{secrets.randbelow(10**7):07d}", "address": f"House {tag}, Gali Qasaban, Mohallah Jhangi",
    }
    body.update(overrides)
    return body


WORLD_LAYOUT = {
    # facility key -> (district, kind)
    "a": "PK-PB-LAH", "a2": "PK-PB-LAH", "b": "PK-PB-RWP", "c": "PK-SD-KRC",
}
USERS = {
    "clinic_a": ("clinic_worker", "fac:a"), "clinic_a2": ("clinic_worker", "fac:a2"),
    "clinic_b": ("clinic_worker", "fac:b"), "clinic_c": ("clinic_worker", "fac:c"),
    "official_district": ("health_official", "PK-PB-LAH"), "official_other_district": ("health_official", "PK-PB-RWP"),
    "official_province": ("health_official", "PK-PB"), "official_other_province": ("health_official", "PK-SD"),
    "official_national": ("health_official", "PK"),
    "auditor": ("auditor", "PK"), "auditor_province": ("auditor", "PK-PB"), "auditor_other_province": ("auditor", "PK-SD"),
    "admin": ("admin", "PK"),
    "steward_district": ("data_steward", "PK-PB-LAH"), "steward_province": ("data_steward", "PK-PB"),
    "steward_other_province": ("data_steward", "PK-SD"),
}


def build_world(client: TestClient, rt: Runtime) -> World:
    tag = f"t{next(_counter)}{secrets.token_hex(2)}"
    w = World(client, rt, tag)
    with rt.sessions.begin() as s:
        for key, district in WORLD_LAYOUT.items():
            code = f"F-{tag}-{key}".upper()
            facilities.add(s, code, f"Test facility {key}", "bhu", district)
            w.facilities[key] = code
        s.flush()
        for who, (role, scope) in USERS.items():
            scope_code = w.facilities[scope[4:]] if scope.startswith("fac:") else scope
            username = f"{who.replace('_', '.')}.{tag}"
            create_user(s, rt, UserCreate(username=username, display_name=who, password=PASSWORD, role=role, scope_code=scope_code))
            w.users[who] = username
    return w


@pytest.fixture
def world(client, runtime) -> World:
    return build_world(client, runtime)


@pytest.fixture(scope="module")
def shared_world(client, runtime) -> World:
    return build_world(client, runtime)


def audit_events(rt: Runtime, **where) -> list:
    from sqlalchemy import select

    from security.audit.models import AuditEventRow

    t = AuditEventRow.__table__
    q = select(t)
    for k, v in where.items():
        q = q.where(t.c[k] == v)
    with rt.sessions() as s:
        return list(s.execute(q.order_by(t.c.occurred_at)).all())


def count_events(rt: Runtime) -> int:
    from sqlalchemy import func, select

    from security.audit.models import AuditEventRow

    with rt.sessions() as s:
        return s.execute(select(func.count()).select_from(AuditEventRow)).scalar_one()


def is_postgres(rt: Runtime) -> bool:
    return rt.engine.dialect.name == "postgresql"


def new_uuid() -> str:
    return str(uuid.uuid4())
