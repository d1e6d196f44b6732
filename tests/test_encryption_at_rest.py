"""DESIGN invariant 1, read from the storage itself: the raw database (SQLite file bytes, or every
PostgreSQL row rendered as text) contains none of the patients' names, identifiers, phone
numbers, addresses or guardians' details in plaintext.

The module builds its own database (300 demo patients plus patients registered, updated,
searched and refused through the API), so nothing else in the session can blur the result.
Failure messages name fields, never values.
"""

from __future__ import annotations

import re
import secrets
import uuid
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from api.app import create_app
from conftest import PASSWORD, drop_database, fresh_database_url, make_settings, new_child, unique_nadra
from registry import bootstrap
from registry.demo.generator import generate
from registry.patients.models import Patient
from registry.runtime import Runtime
from registry.users.schemas import UserCreate
from registry.users.service import create_user

DEMO_PATIENTS = 300
NADRA_FIELDS = ("bform", "cnic", "guardian_cnic")
# Free-text demo values shorter than this are not checked: the demo draws names from a short
# list ("Ali", "Khan", "Shah"), and such short strings occur inside unrelated text (facility
# and jurisdiction names such as "RHC Chak Beli Khan", usernames, JSON keys), which would make
# the scan fail without any leak. Values the test generates itself are unique and always checked.
MIN_FREE_TEXT = 6


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def forms(name: str, value: str) -> list[str]:
    """Every spelling in which a plaintext could have been stored."""
    d = _digits(value)
    if name == "phone":
        core = d[-10:]  # 3XXYYYYYYY
        return [f"+92{core}", f"0{core}", f"0{core[:3]}-{core[3:]}"]
    if name in NADRA_FIELDS:
        return [d, f"{d[:5]}-{d[5:12]}-{d[12]}"]
    if name == "health_id":
        return [d, f"{d[:4]}-{d[4:8]}-{d[8:]}"]
    return [value]


@dataclass
class AtRest:
    rt: Runtime
    url: str
    baseline: bytes = b""  # the database before any patient existed, lower-cased
    needles: list[tuple[str, str]] = field(default_factory=list)  # (field, plaintext form)
    demo_checked: dict[str, int] = field(default_factory=dict)
    api_patients: list[dict] = field(default_factory=list)

    def add(self, name: str, value: str | None, *, generated: bool) -> None:
        if not value:
            return
        for form in forms(name, value):
            if not generated and name not in NADRA_FIELDS + ("phone", "health_id") and len(form) < MIN_FREE_TEXT:
                continue
            # A value already in the database before any patient was written (a demo locality
            # that is also a facility name, "Shadman") cannot reveal a patient: skip it.
            if form.lower().encode() in self.baseline:
                assert not generated, f"generated {name} collides with reference data"
                continue
            self.needles.append((name, form))
            if not generated:
                self.demo_checked[name] = self.demo_checked.get(name, 0) + 1


# -- reading the storage -------------------------------------------------------------------

def sqlite_path(url: str) -> Path:
    return Path(url.split("///", 1)[1])


def sqlite_bytes(path: Path) -> bytes:
    """The main file and its write-ahead log: recent commits live in the WAL until a checkpoint.
    Rows here are far smaller than a page, so no value is split across an overflow page."""
    parts = [path.read_bytes()]
    for suffix in ("-wal", "-journal"):
        extra = Path(f"{path}{suffix}")
        if extra.exists():
            parts.append(extra.read_bytes())
    return b"\n".join(parts)


def pg_rows(conn) -> str:
    """Every row of every table as PostgreSQL renders it (`t::text`; bytea appears as hex)."""
    tables = conn.execute(text(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")).scalars().all()
    assert tables, "no tables found to scan"
    out = []
    for t in tables:
        out.extend(conn.execute(text(f"SELECT t::text FROM {t} t")).scalars())
    return "\n".join(out)


def snapshot(rt: Runtime, url: str) -> bytes:
    if rt.engine.dialect.name == "sqlite":
        return sqlite_bytes(sqlite_path(url))
    with rt.engine.connect() as conn:
        return pg_rows(conn).encode()


def scan(blob: bytes, needles: list[tuple[str, str]], *, hex_too: bool) -> set[tuple[str, str]]:
    """-> {(field, how)} for each plaintext found: `text` (case-insensitive UTF-8) or `hex` (a
    plaintext stored in a bytea column shows as its hex in PostgreSQL's text rendering)."""
    lowered = re.sub(rb"\x00{16,}", b"\x00", blob).lower()  # empty page space: nothing to find there
    found = set()
    for name, form in dict.fromkeys(needles):
        raw = form.encode()
        if raw.lower() in lowered:
            found.add((name, "text"))
        if hex_too and raw.hex().encode() in lowered:
            found.add((name, "hex"))
    return found


def scan_db(rt: Runtime, url: str, needles: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return scan(snapshot(rt, url), needles, hex_too=rt.engine.dialect.name != "sqlite")


# -- the database under test -------------------------------------------------------------------

def _register(client: TestClient, token: str, body: dict, status: int) -> dict:
    r = client.post("/api/v1/patients", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == status, r.json().get("type")
    return r.json()


@pytest.fixture(scope="module")
def at_rest(tmp_path_factory) -> AtRest:
    tmp = tmp_path_factory.mktemp("at_rest")
    url = fresh_database_url(tmp, "at_rest")
    settings = make_settings(url, tmp / "keyring")
    rt = Runtime.build(settings)
    try:
        bootstrap.init(rt)
        tag = secrets.token_hex(3)
        users = {"PB": f"clinic.pb.{tag}", "SD": f"clinic.sd.{tag}"}
        with rt.sessions.begin() as s:
            for prov, facility in (("PB", "F-LAH-02"), ("SD", "F-KRC-02")):
                create_user(s, rt, UserCreate(username=users[prov], display_name=f"clinic {prov}", password=PASSWORD,
                                              role="clinic_worker", scope_code=facility))
        state = AtRest(rt, url, baseline=snapshot(rt, url).lower())

        demo: list[dict] = []
        with rt.sessions.begin() as s:
            generate(rt, s, patients=DEMO_PATIENTS, plaintexts=demo)
        assert len(demo) == DEMO_PATIENTS
        for plain in demo:
            for name, value in plain.items():
                state.add(name, value, generated=False)

        with TestClient(create_app(settings, rt), raise_server_exceptions=False) as client:
            tokens = {}
            for prov, username in users.items():
                r = client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
                assert r.status_code == 200
                tokens[prov] = r.json()["access_token"]
            bodies = [
                ("PB", new_child(birth_date="2019-02-28")),
                ("SD", new_child(sex="male", birth_date="2018-07-15", cnic=unique_nadra(), phone=f"+92345{secrets.randbelow(10**7):07d}")),
            ]
            for prov, body in bodies:
                created = _register(client, tokens[prov], body, 201)
                state.api_patients.append({**created, "_input": body})
            first = state.api_patients[0]
            # an update writes new ciphertexts: the new values must not reach the disk either
            change = {"phone": f"0301-{secrets.randbelow(10**7):07d}", "address": f"Flat {secrets.token_hex(3)}, Anarkali Bazaar",
                      "guardian": {"name": f"Shagufta{secrets.token_hex(3)}", "relationship": "mother", "cnic": unique_nadra()}}
            r = client.patch(f"/api/v1/patients/{first['id']}", json=change,
                             headers={"Authorization": f"Bearer {tokens['PB']}", "If-Match": '"1"'})
            assert r.status_code == 200, r.json().get("type")
            # a search, and two refused registrations: their values must not be kept anywhere
            r = client.post("/api/v1/patients/search", json={"system": "bform", "value": first["_input"]["bform"]},
                            headers={"Authorization": f"Bearer {tokens['SD']}"})
            assert r.status_code == 200 and len(r.json()) == 1
            refused = [new_child(sex="robot"), new_child(bform=first["_input"]["bform"])]
            _register(client, tokens["PB"], refused[0], 422)
            _register(client, tokens["PB"], refused[1], 409)

        for created in state.api_patients:
            body = created["_input"]
            g = body["guardian"]
            for name, value in (("given_name", body["given_name"]), ("family_name", body["family_name"]),
                                ("guardian_name", g["name"]), ("guardian_cnic", g["cnic"]), ("bform", body["bform"]),
                                ("cnic", body.get("cnic")), ("phone", body["phone"]), ("address", body["address"]),
                                ("health_id", created["health_id"])):
                state.add(name, value, generated=True)
        for name, value in (("phone", change["phone"]), ("address", change["address"]),
                            ("guardian_name", change["guardian"]["name"]), ("guardian_cnic", change["guardian"]["cnic"])):
            state.add(name, value, generated=True)
        for body in refused:
            for name in ("given_name", "family_name", "address"):
                state.add(name, body[name], generated=True)
            state.add("guardian_name", body["guardian"]["name"], generated=True)
        yield state
    finally:
        rt.engine.dispose()
        drop_database(url)


# -- the tests -----------------------------------------------------------------------------------

def test_scan_covers_every_encrypted_field(at_rest):
    """Guard against a vacuous pass: most demo values survive the false-positive filters."""
    checked = at_rest.demo_checked
    for name in ("given_name", "guardian_name", "address", "phone", "guardian_cnic", "health_id"):
        assert checked.get(name, 0) >= DEMO_PATIENTS // 2, f"too few demo {name} values are checked"
    assert checked.get("bform", 0) >= DEMO_PATIENTS // 4, "too few demo bform values are checked"
    assert checked.get("family_name", 0) >= 20, "too few demo family_name values are checked"
    assert {n for n, _ in at_rest.needles} >= {"given_name", "family_name", "guardian_name", "guardian_cnic", "bform",
                                              "cnic", "phone", "address", "health_id"}


def test_no_plaintext_in_the_stored_database(at_rest):
    found = scan_db(at_rest.rt, at_rest.url, at_rest.needles)
    assert not found, f"plaintext found in the stored database: {sorted(found)}"


def test_quasi_identifiers_stay_in_clear(at_rest):
    """The threat model, honestly: sex, birth date and district are kept in clear for programme
    analytics (behind access control), so someone holding the raw database sees them."""
    blob = snapshot(at_rest.rt, at_rest.url)
    for p in at_rest.api_patients:
        assert p["birth_date"].encode() in blob, "birth_date is expected in clear"
        assert p["sex"].encode() in blob, "sex is expected in clear"
        assert p["district"].encode() in blob, "district is expected in clear"
    with at_rest.rt.sessions() as s:
        rows = s.execute(select(Patient.district, Patient.sex, Patient.birth_date)
                         .where(Patient.id.in_([uuid.UUID(p["id"]) for p in at_rest.api_patients]))).all()
    assert sorted((r.district, r.sex, r.birth_date.isoformat()) for r in rows) == \
        sorted((p["district"], p["sex"], p["birth_date"]) for p in at_rest.api_patients)


def test_the_scanner_finds_a_planted_plaintext(at_rest, tmp_path):
    """Control: the same scanner, on the same data, finds a plaintext written into a clear
    column (a facility name) and one written raw into a ciphertext column."""
    names = [v for n, v in at_rest.needles if n == "guardian_name"]
    addresses = [v for n, v in at_rest.needles if n == "address"]
    plant_text, plant_raw = names[0], addresses[-1]
    needles = [("guardian_name", plant_text), ("address", plant_raw)]
    assert not scan_db(at_rest.rt, at_rest.url, needles)
    rt = at_rest.rt
    if rt.engine.dialect.name == "sqlite":
        copy = tmp_path / "copy.sqlite3"
        src, dst = sqlite3.connect(sqlite_path(at_rest.url)), sqlite3.connect(copy)
        try:
            src.backup(dst)
            dst.execute("UPDATE facilities SET name = ? WHERE code = 'F-LAH-01'", (plant_text,))
            dst.execute("UPDATE patients SET address_ct = ? WHERE id = (SELECT min(id) FROM patients)", (plant_raw.encode(),))
            dst.commit()
        finally:
            src.close()
            dst.close()
        found = scan(sqlite_bytes(copy), needles, hex_too=False)
        assert {("guardian_name", "text"), ("address", "text")} <= found
    else:
        with rt.engine.connect() as conn:  # planted inside a transaction that is rolled back
            conn.execute(text("UPDATE facilities SET name = :v WHERE code = 'F-LAH-01'"), {"v": plant_text})
            conn.execute(text("UPDATE patients SET address_ct = :v WHERE id = (SELECT id FROM patients ORDER BY id LIMIT 1)"),
                         {"v": plant_raw.encode()})
            found = scan(pg_rows(conn).encode(), needles, hex_too=True)
            conn.rollback()
        assert ("guardian_name", "text") in found and ("address", "hex") in found
    assert not scan_db(at_rest.rt, at_rest.url, needles), "the control must leave the database as it was"
