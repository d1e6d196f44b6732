"""The registry's main flows in one go, for tests/test_nothing_leaves.py: demo data loaded, a
child registered, doses recorded, a certificate issued and verified, a coverage report, FHIR
reads and searches, logout. Run in the test process (with the socket guard) and, as a script,
inside a network namespace without a route out (`unshare -rn`):

    python tests/offline_flows.py DATABASE_URL KEY_DIR [--reach-out] [--probe-kernel]

The script installs the socket guard too and exits 1 if anything tried to leave (`--reach-out`
makes a deliberate attempt at 1.1.1.1, refused by the guard before any packet is sent, to show
that the check can fail). `--probe-kernel` (only ever passed inside the namespace) connects to
1.1.1.1 past the guard and prints the kernel's answer, to show the namespace has no route out.
It prints the flows it completed, never patient data."""

from __future__ import annotations

import errno
import socket
import sys
from datetime import date
from pathlib import Path

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import network_guard  # noqa: E402

PASSWORD = "correct-horse-battery-staple-42"


def settings_for(url: str, key_dir: Path):
    from registry.settings import Settings

    return Settings(env="test", database_url=url, key_dir=key_dir,
                    passwords={"argon2_memory_kib": 1024, "argon2_time_cost": 1},
                    audit={"seal_interval_seconds": 0}, reports={"refresh_interval_seconds": 0})


def run(rt, *, patients: int = 40) -> list[str]:
    """The flows, against `rt` (an initialised runtime on an empty database) -> their names, in order."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from registry.demo.generator import generate
    from registry.reports import aggregate
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user

    from registry import bootstrap

    done = []
    loaded = bootstrap.patient_count(rt) > 0  # `nhr demo` loaded it already (the namespace run)
    with rt.sessions.begin() as s:
        if not loaded:
            generate(rt, s, patients=patients)
            aggregate.rebuild(s, date.today())
        for username, role, scope in (("clinic.offline", "clinic_worker", "F-LAH-02"),
                                      ("official.offline", "health_official", "PK-PB-LAH")):
            create_user(s, rt, UserCreate(username=username, display_name=username, password=PASSWORD, role=role,
                                          scope_code=scope))
    done.append("demo load")
    with TestClient(create_app(rt.settings, rt)) as c:
        def login(username: str) -> dict:
            r = c.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
            assert r.status_code == 200, r.status_code
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

        clinic, official = login("clinic.offline"), login("official.offline")
        r = c.post("/api/v1/patients", headers=clinic, json={
            "given_name": "Zarnigar", "family_name": "Qizilbash", "sex": "female", "birth_date": "2026-06-01",
            "guardian": {"name": "Mehrunnisa", "relationship": "mother"}})
        assert r.status_code == 201, r.status_code
        pid = r.json()["id"]
        done.append("register")
        for vaccine, n, day in (("OPV", 0, "2026-06-01"), ("BCG", 1, "2026-06-01"), ("OPV", 1, "2026-07-13"),
                                ("PENTA", 1, "2026-07-13"), ("OPV", 2, "2026-08-10")):
            r = c.post(f"/api/v1/patients/{pid}/immunizations", headers=clinic,
                       json={"vaccine": vaccine, "dose_number": n, "date_given": day})
            assert r.status_code == 201, r.status_code
        done.append("dose")
        r = c.get(f"/api/v1/patients/{pid}/certificate", headers=clinic)
        assert r.status_code == 200, r.status_code
        hc1 = r.json()["hc1"] if r.headers["content-type"].startswith("application/json") else r.text
        assert c.get(f"/api/v1/patients/{pid}/certificate", params={"format": "png"}, headers=clinic).status_code == 200
        r = c.post("/api/v1/certificates/verify", json={"hc1": hc1})
        assert r.status_code == 200 and r.json()["valid"] is True, r.status_code
        done.append("certificate")
        r = c.get("/api/v1/reports/coverage", headers=official, params={"jurisdiction": "PK-PB-LAH", "cohort": date.today().year - 1})
        assert r.status_code == 200, r.status_code
        assert c.get("/api/v1/reports/coverage/export", headers=official,
                     params={"jurisdiction": "PK-PB-LAH", "cohort": date.today().year - 1, "format": "csv"}).status_code == 200
        done.append("report")
        assert c.get("/fhir/R4/metadata").status_code == 200
        assert c.get(f"/fhir/R4/Patient/{pid}", headers=clinic).status_code == 200
        r = c.post("/fhir/R4/Patient/_search", headers=clinic, data={"birthdate": "2026-06-01"})
        assert r.status_code == 200, r.status_code
        done.append("FHIR")
        assert c.post("/api/v1/auth/logout", headers=clinic).status_code == 204
        done.append("logout")
    return done


def raw_connect_outside() -> str:
    """What the kernel says to a connect to 1.1.1.1:53 that bypasses the guard (errno name)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        code = network_guard._original.get("connect_ex", socket.socket.connect_ex)(s, ("1.1.1.1", 53))
    finally:
        s.close()
    return errno.errorcode.get(code, "connected") if code else "connected"


def main(argv: list[str]) -> int:
    network_guard.install()
    url, key_dir = argv[0], Path(argv[1])
    from registry import bootstrap
    from registry.runtime import Runtime

    rt = Runtime.build(settings_for(url, key_dir))
    bootstrap.init(rt)
    if "--reach-out" not in argv:  # with it, only the deliberate attempt (the flows are the other runs' subject)
        print("flows:", ", ".join(run(rt)))
    else:
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=3).close()
        except OSError:
            pass  # swallowed, as careless code would: the record still fails the run
    if "--probe-kernel" in argv:  # only inside the namespace (the test passes it under `unshare -rn` only)
        print("raw connect to 1.1.1.1:53:", raw_connect_outside())
    rt.engine.dispose()
    if network_guard.ATTEMPTS:
        print("outbound attempts:", network_guard.ATTEMPTS)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
