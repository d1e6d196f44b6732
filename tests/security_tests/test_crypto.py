"""DESIGN invariants 1-3: a ciphertext copied to another row, column, table or province fails to
decrypt, loudly; blind indexes find without decrypting and are confirmed by decrypting; keys stay
with their custodian; production settings refuse to invent a custody.

Unit tests use a keyring in tmp_path and a throwaway SQLite database holding only `data_keys`;
the HTTP tests use the session's database and a `world` of their own.
"""

from __future__ import annotations

import base64
import math
import stat
import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import insert, select, text, update

from api.app import create_app
from conftest import audit_events, build_world, drop_database, fresh_database_url, make_settings, new_child
from registry import bootstrap, identifiers
from registry.database import make_engine
from registry.patients import repository as patients_repo
from registry.patients.models import Patient, PatientIdentifierIndex
from registry.runtime import Runtime
from registry.settings import Settings
from security.crypto.blind_index import BITS, DESIGN_SIZE, BlindIndexer, expected_coincidences
from security.crypto.data_keys import DataKeyRow, DataKeyStore
from security.crypto.errors import DecryptionError, KeyUnavailable
from security.crypto.fields import FieldCipher
from security.crypto.keyring import FileKeyring

WHERE = {"table": "patients", "column": "given_name_ct", "row_id": "3f1c2d4e-0000-4000-8000-000000000001", "custodian": "PK-PB"}
SECRET = "Gulnaz Bibi Qasimabad"


@pytest.fixture
def keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'keys.sqlite3'}")
    DataKeyRow.__table__.create(engine)
    store = DataKeyStore(FileKeyring(tmp_path / "keyring", create_missing=True))
    with engine.begin() as conn:
        store.ensure(conn, ["PK-PB", "PK-SD"])
    yield engine, store
    engine.dispose()


@pytest.fixture
def cipher(keys) -> FieldCipher:
    return FieldCipher(keys[1])


def relabel(blob: bytes, version: int) -> bytes:
    return blob[:1] + version.to_bytes(4, "big") + blob[5:]


# -- field encryption -------------------------------------------------------------------------

def test_round_trip_and_none(cipher):
    for value in (SECRET, "", "عائشہ خان"):
        blob = cipher.encrypt(value, **WHERE)
        assert value.encode() not in blob or value == "", "plaintext visible in the ciphertext"
        assert cipher.decrypt(blob, **WHERE) == value
    assert cipher.encrypt(SECRET, **WHERE) != cipher.encrypt(SECRET, **WHERE), "nonces must be fresh"
    assert cipher.encrypt(None, **WHERE) is None
    assert cipher.decrypt(None, **WHERE) is None


@pytest.mark.parametrize("moved", [
    {"row_id": "3f1c2d4e-0000-4000-8000-000000000002"}, {"column": "family_name_ct"}, {"table": "immunizations"},
    {"custodian": "PK-SD"},
], ids=["other-row", "other-column", "other-table", "other-custodian"])
def test_misplaced_ciphertext_fails(cipher, moved):
    blob = cipher.encrypt(SECRET, **WHERE)
    with pytest.raises(DecryptionError) as exc:
        cipher.decrypt(blob, **{**WHERE, **moved})
    assert SECRET not in str(exc.value) and blob.hex() not in str(exc.value)


@pytest.mark.parametrize("mutate", [
    lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:],          # nonce
    lambda b: b[:20] + bytes([b[20] ^ 0x80]) + b[21:],    # ciphertext
    lambda b: b[:-1] + bytes([b[-1] ^ 1]),                # tag
    lambda b: b"\x02" + b[1:],                            # format byte
    lambda b: b[:-1],                                     # one byte short
    lambda b: b[:20],                                     # truncated below header + nonce + tag
    lambda b: b"",
], ids=["nonce", "ciphertext", "tag", "format", "short", "truncated", "empty"])
def test_tampered_ciphertext_fails(cipher, mutate):
    with pytest.raises(DecryptionError):
        cipher.decrypt(mutate(cipher.encrypt(SECRET, **WHERE)), **WHERE)


def test_rotation_adds_a_version_and_never_fails_a_read(keys, cipher, tmp_path):
    engine, store = keys
    old = cipher.encrypt(SECRET, **WHERE)
    index_before = BlindIndexer(store).compute("PK-PB", "bform", "3520276543212")
    with engine.begin() as conn:
        assert store.rotate(conn, "PK-PB") == 2
    new = cipher.encrypt(SECRET, **WHERE)
    assert (FieldCipher.key_version(old), FieldCipher.key_version(new)) == (1, 2)
    assert FieldCipher.key_version(cipher.encrypt(SECRET, **{**WHERE, "custodian": "PK-SD"})) == 1
    assert cipher.decrypt(old, **WHERE) == SECRET and cipher.decrypt(new, **WHERE) == SECRET
    assert BlindIndexer(store).compute("PK-PB", "bform", "3520276543212") == index_before, "field rotation moved the index"
    # a version label swapped in the header is caught: v1 -> v2 and v2 -> v1 fail, unknown v9 is unavailable
    for blob, version in ((old, 2), (new, 1)):
        with pytest.raises(DecryptionError):
            cipher.decrypt(relabel(blob, version), **WHERE)
    with pytest.raises(KeyUnavailable):
        cipher.decrypt(relabel(old, 9), **WHERE)
    # another process (new store, same database and keyring) reads both versions
    other = DataKeyStore(FileKeyring(tmp_path / "keyring", create_missing=False))
    with engine.connect() as conn:
        other.load(conn)
    assert [FieldCipher(other).decrypt(b, **WHERE) for b in (old, new)] == [SECRET, SECRET]


def test_a_rotation_by_another_process_never_fails_a_read(tmp_path):
    """Invariant 3 with two workers: `nhr keys rotate` runs in its own process, then a worker
    that loaded its keys earlier must still read records written under the new version
    (data_keys.py promises keys "refreshed from the database on a miss")."""
    url = fresh_database_url(tmp_path, "rotation")
    settings = make_settings(url, tmp_path / "keyring")
    worker, other = Runtime.build(settings), Runtime.build(settings)
    try:
        bootstrap.init(worker)
        with TestClient(create_app(settings, worker), raise_server_exceptions=False) as client_a:
            w = build_world(client_a, worker)
            old = w.register("clinic_a")["id"]
            other.load_keys()
            with other.engine.begin() as conn:  # what `nhr keys rotate --custodian PK-PB` does
                assert other.keys.rotate(conn, "PK-PB") == 2
            with TestClient(create_app(settings, other), raise_server_exceptions=False) as client_b:
                r = client_b.post("/api/v1/patients", json=new_child(), headers=w.h("clinic_a"))
                assert r.status_code == 201, r.json().get("type")
                new = r.json()["id"]
                assert client_b.get(f"/api/v1/patients/{old}", headers=w.h("clinic_a")).status_code == 200
            with worker.sessions() as s:
                assert FieldCipher.key_version(s.get(Patient, uuid.UUID(new)).given_name_ct) == 2
            r = client_a.get(f"/api/v1/patients/{new}", headers=w.h("clinic_a"))
            assert r.status_code == 200, f"worker started before the rotation answered {r.status_code} {r.json().get('type')}"
    finally:
        worker.engine.dispose()
        other.engine.dispose()
        drop_database(url)


# -- through the real database and API ----------------------------------------------------------

def _plain(patient: dict) -> list[str]:
    body = patient["_input"]
    return [body["given_name"], body["family_name"], body["guardian"]["name"], body["address"], body["bform"],
            body["guardian"]["cnic"], patient["health_id"], patient["phone"]]


def _set(rt, pid: str, **values) -> None:
    with rt.engine.begin() as conn:
        conn.execute(update(Patient.__table__).where(Patient.id == uuid.UUID(pid)).values(**values))


def _ct(rt, pid: str, column: str) -> bytes:
    with rt.engine.connect() as conn:
        return conn.execute(select(Patient.__table__.c[column]).where(Patient.id == uuid.UUID(pid))).scalar_one()


@pytest.mark.parametrize("case", ["other-row", "other-column", "other-province-row", "custodian-relabelled"])
def test_copied_ciphertext_answers_integrity_failure(world, runtime, case):
    source = world.register("clinic_a")
    assert world.client.get(f"/api/v1/patients/{source['id']}", headers=world.h("clinic_a")).status_code == 200
    if case == "other-row":
        victim, reader = world.register("clinic_a"), "clinic_a"
        _set(runtime, victim["id"], given_name_ct=_ct(runtime, source["id"], "given_name_ct"))
    elif case == "other-column":
        victim, reader = source, "clinic_a"
        _set(runtime, victim["id"], family_name_ct=_ct(runtime, source["id"], "given_name_ct"))
    elif case == "other-province-row":
        victim, reader = world.register("clinic_c"), "clinic_c"
        assert victim["custodian"] == "PK-SD" and source["custodian"] == "PK-PB"
        _set(runtime, victim["id"], given_name_ct=_ct(runtime, source["id"], "given_name_ct"))
    else:
        victim, reader = source, "clinic_a"
        _set(runtime, victim["id"], custodian="PK-SD")
    rid = f"integrity-{uuid.uuid4().hex}"
    r = world.client.get(f"/api/v1/patients/{victim['id']}", headers=world.h(reader, **{"X-Request-ID": rid}))
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "urn:nhr:problem:integrity-failure"
    for value in _plain(source) + _plain(victim):
        assert value not in r.text, "a plaintext value is in the error body"
    events = audit_events(runtime, request_id=rid)
    assert [(e.action, e.outcome) for e in events] == [("patient.read", "error")], "the failed read must be audited"


def test_blind_index_values(keys):
    _, store = keys
    idx = BlindIndexer(store)
    values = [f"{n:013d}" for n in range(0, 10**13, 10**13 // 200)]
    pb = [idx.compute("PK-PB", "bform", v) for v in values]
    assert pb == [idx.compute("PK-PB", "bform", v) for v in values], "not deterministic"
    assert all(0 <= x < 2**BITS for x in pb)
    assert max(pb) >= 2**(BITS - 2), "values do not use the top bits"
    sd = [idx.compute("PK-SD", "bform", v) for v in values]
    assert sum(a == b for a, b in zip(pb, sd)) <= 1, "custodians share an index key"
    assert sum(a == b for a, b in zip(pb, [idx.compute("PK-PB", "cnic", v) for v in values])) <= 1, "systems not separated"
    assert set(idx.for_all_custodians("bform", values[0])) == {"PK-PB", "PK-SD"}
    assert store.active("PK-PB", "index").raw != store.active("PK-PB", "field").raw
    c = expected_coincidences(DESIGN_SIZE, BITS)  # CipherSweet's rule at the design size
    assert 2 <= c < math.sqrt(DESIGN_SIZE)


def test_blind_index_is_the_documented_hmac(keys):
    """The index is the first BITS bits of HMAC-SHA256(index key, system 0x00 value), however it
    is computed (one value, or many values for every custodian): stored indexes stay findable."""
    import hashlib
    import hmac

    _, store = keys
    idx = BlindIndexer(store)
    values = ["3520276543212", "khn|2024-01-31", "ژ"]
    for custodian in ("PK-PB", "PK-SD"):
        raw = store.active(custodian, "index").raw
        expected = [int.from_bytes(hmac.new(raw, b"link-gbd\x00" + v.encode(), hashlib.sha256).digest()[:4], "big")
                    >> (32 - BITS) for v in values]
        assert [idx.compute(custodian, "link-gbd", v) for v in values] == expected
        assert [b for c, _, b in idx.for_all_custodians_many("link-gbd", values) if c == custodian] == expected


def test_search_confirms_candidates_by_decrypting(world, runtime):
    real, decoy, no_bform = world.register("clinic_a"), world.register("clinic_a"), world.register("clinic_a", bform=None)
    norm = identifiers.normalise("bform", real["bform"])
    bidx = runtime.indexer.compute("PK-PB", "bform", norm)
    t = PatientIdentifierIndex.__table__
    with runtime.engine.begin() as conn:
        stored = conn.execute(select(t.c.bidx).where(t.c.patient_id == uuid.UUID(real["id"]), t.c.column == "bform")).scalar_one()
        assert stored == bidx and 0 <= stored < 2**BITS
        # force a coincidence: the decoy's B-form index now carries the real child's value
        conn.execute(update(t).where(t.c.patient_id == uuid.UUID(decoy["id"]), t.c.column == "bform").values(bidx=bidx))
        # and a child without any B-form gets an index row carrying the same value
        conn.execute(insert(t).values(patient_id=uuid.UUID(no_bform["id"]), column="bform", system="bform",
                                      custodian="PK-PB", bidx=bidx))
    with runtime.sessions() as s:
        candidates = {str(r.id) for r, _ in patients_repo.candidates(s, "bform", {"PK-PB": bidx})}
    assert candidates == {real["id"], decoy["id"], no_bform["id"]}, "the forced collisions are not candidates"
    r = world.client.post("/api/v1/patients/search", json={"system": "bform", "value": real["bform"]}, headers=world.h("clinic_a"))
    assert r.status_code == 200
    assert [p["id"] for p in r.json()] == [real["id"]]


# -- keyring --------------------------------------------------------------------------------------

def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_files_are_private_and_outside_the_database(keys, tmp_path):
    engine, store = keys
    ring = store.keyring
    ring.secret("token-signing")
    keks = sorted((tmp_path / "keyring" / "kek").iterdir())
    assert [p.name for p in keks] == ["PK-PB.key", "PK-SD.key"]
    for p in keks + [tmp_path / "keyring" / "secrets" / "token-signing.key"]:
        assert _mode(p) == 0o600, f"{p.name} is not 0600"
        assert _mode(p.parent) == 0o700, f"{p.parent.name}/ is not 0700"
    engine.dispose()
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("keys.sqlite3*"))
    for p in keks:
        raw = base64.b64decode(p.read_bytes())
        assert raw not in stored and base64.b64encode(raw) not in stored, "a KEK is in the database"
    for k in store.versions("PK-PB", "field"):
        assert k.raw not in stored, "an unwrapped data key is in the database"


def test_production_keyring_refuses_to_invent_keys(tmp_path):
    ring = FileKeyring(tmp_path / "empty", create_missing=False)
    with pytest.raises(KeyUnavailable):
        ring.wrap("PK-PB", "field/v1", b"\x00" * 32)
    with pytest.raises(KeyUnavailable):
        ring.secret("token-signing")
    assert not (tmp_path / "empty").exists() or not any((tmp_path / "empty").rglob("*")), "a key was created"
    with pytest.raises(KeyUnavailable):
        FileKeyring(tmp_path / "dev", create_missing=True).wrap("../../etc", "field/v1", b"\x00" * 32)


def test_wrapped_key_is_bound_to_its_custodian(keys, tmp_path):
    _, store = keys
    ring = store.keyring
    wrapped = ring.wrap("PK-PB", "field/v1", b"k" * 32)
    assert ring.unwrap("PK-PB", "field/v1", wrapped) == b"k" * 32
    with pytest.raises(DecryptionError):
        ring.unwrap("PK-SD", "field/v1", wrapped)
    with pytest.raises(DecryptionError):
        ring.unwrap("PK-PB", "index/v1", wrapped)
    with pytest.raises(DecryptionError):  # same custodian, another deployment's keyring
        FileKeyring(tmp_path / "elsewhere", create_missing=True).unwrap("PK-PB", "field/v1", wrapped)
    with keys[0].connect() as conn:
        rows = conn.execute(select(DataKeyRow.__table__)).all()
    assert len(rows) == 4 and all(len(r.wrapped_key) == 12 + 32 + 16 for r in rows), "data keys are stored wrapped"


def test_data_keys_do_not_load_under_another_keyring(keys, tmp_path):
    engine, _ = keys
    with engine.connect() as conn:
        with pytest.raises(DecryptionError):
            DataKeyStore(FileKeyring(tmp_path / "wrong", create_missing=True)).load(conn)
        with pytest.raises(KeyUnavailable):
            DataKeyStore(FileKeyring(tmp_path / "unmounted", create_missing=False)).load(conn)
        assert conn.execute(text("SELECT count(*) FROM data_keys")).scalar_one() == 4


# -- settings -------------------------------------------------------------------------------------

def test_production_settings_need_explicit_database_and_keys(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for var in ("NHR_DATABASE_URL", "NHR_KEY_DIR", "NHR_ENV"):
        monkeypatch.delenv(var, raising=False)
    pg = "postgresql://nhr@db.internal/nhr"
    for kwargs in ({}, {"database_url": pg}, {"key_dir": tmp_path}, {"database_url": "sqlite:///nhr.sqlite3", "key_dir": tmp_path}):
        with pytest.raises(ValidationError):
            Settings(env="production", **kwargs)
    ok = Settings(env="production", database_url=pg, key_dir=tmp_path)
    assert ok.create_missing_keys is False
    monkeypatch.setenv("NHR_DATABASE_URL", pg)
    monkeypatch.setenv("NHR_KEY_DIR", str(tmp_path))
    assert Settings(env="production").create_missing_keys is False
    monkeypatch.setenv("NHR_DATABASE_URL", "sqlite:///x.sqlite3")
    with pytest.raises(ValidationError):
        Settings(env="production")
    assert Settings(env="development").create_missing_keys is True


def test_only_registered_secrets_exist(tmp_path):
    """A secret outside keyring.SECRET_NAMES would not be provisioned by `nhr keys init`: asking
    for one fails everywhere, not first in production."""
    from security.crypto.keyring import FileKeyring

    ring = FileKeyring(tmp_path / "ring", create_missing=True)
    with pytest.raises(ValueError, match="unregistered secret"):
        ring.secret("not-listed")
    assert not (tmp_path / "ring" / "secrets" / "not-listed.key").exists()
    assert len(ring.secret("sync-receipts")) == 32
