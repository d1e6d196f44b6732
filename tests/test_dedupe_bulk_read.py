"""Batch deduplication's bulk read (registry/linkage/dedupe.load, issue 13): only the compared
columns, whether a record has blocking keys in the same statement, the encrypted fields of a row
decrypted at once (FieldCipher.decrypt_row), optionally in forked processes over ranges of ids.
It must prepare exactly what the row-by-row read prepares, write blocking keys only for records
lacking them, and skip a damaged record. Values are compared, never printed."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import delete, select, update

from registry import bootstrap
from registry.linkage import dedupe, records
from registry.linkage import repository as repo
from registry.linkage.match_models import LinkKey
from registry.patients.models import Patient
from registry.runtime import Runtime
from security.crypto.errors import DecryptionError
from tests.conftest import drop_database, fresh_database_url, make_settings

PROVINCE = "PK-PB"


@pytest.fixture(scope="module")
def province(tmp_path_factory):
    """A database of its own holding 300 synthetic children (and their injected duplicates) of
    PK-PB, encrypted, blind-indexed and with blocking keys, as the matching bench loads them."""
    from bench.matching_registration import _load

    tmp = tmp_path_factory.mktemp("dedupe-bulk-read")
    url = fresh_database_url(tmp, "dedupebulk")
    rt = Runtime.build(make_settings(url, tmp / "keyring"))
    bootstrap.init(rt)
    _load(rt, 300, seed=7)
    yield rt
    rt.engine.dispose()
    drop_database(url)


def _row_by_row(rt) -> tuple[list[dict], list[uuid.UUID]]:
    recs, ids, after = [], [], None
    while True:
        with rt.sessions() as s:
            rows = repo.province_rows(s, PROVINCE, after=after, limit=100)
        if not rows:
            return recs, ids
        for row in rows:
            rec = records.prepared_or_none(rt.cipher, row)
            if rec is not None:
                recs.append(rec)
                ids.append(row.id)
        after = rows[-1].id


def test_decrypt_row_is_decrypt_column_by_column(province):
    cipher, rid = province.cipher, uuid.uuid4()
    plain = {"given_name_ct": "Ayesha", "family_name_ct": None, "phone_ct": "", "guardian_name_ct": "عائشہ بی بی"}
    blobs = {c: cipher.encrypt(v, table="patients", column=c, row_id=rid, custodian=PROVINCE) for c, v in plain.items()}
    assert cipher.decrypt_row(blobs, table="patients", row_id=rid, custodian=PROVINCE) == plain
    moved = {**blobs, "phone_ct": blobs["given_name_ct"]}  # a value moved to another column
    with pytest.raises(DecryptionError) as err:
        cipher.decrypt_row(moved, table="patients", row_id=rid, custodian=PROVINCE)
    assert f"patients.phone_ct row {rid}" in str(err.value) and "Ayesha" not in str(err.value)
    with pytest.raises(DecryptionError):
        cipher.decrypt_row({"given_name_ct": blobs["given_name_ct"][:20]}, table="patients", row_id=rid, custodian=PROVINCE)


@pytest.mark.parametrize("workers", [1, 2])
def test_bulk_read_prepares_what_the_row_by_row_read_prepares(province, workers):
    expected, expected_ids = _row_by_row(province)
    recs, ids, written = dedupe.load(province, PROVINCE, workers=workers)
    assert len(ids) > 300 and ids == expected_ids and recs == expected  # same records, same (id) order
    assert written == 0  # every record already has its blocking keys


def test_bulk_read_writes_keys_only_for_records_lacking_them(province):
    t = LinkKey.__table__
    with province.sessions.begin() as s:
        two = list(s.scalars(select(t.c.patient_id).distinct().order_by(t.c.patient_id).limit(2)))
        before = {tuple(r) for r in s.execute(select(t).where(t.c.patient_id.in_(two)))}
        s.execute(delete(t).where(t.c.patient_id.in_(two)))
    _, _, written = dedupe.load(province, PROVINCE, workers=2)
    with province.sessions() as s:
        after = {tuple(r) for r in s.execute(select(t).where(t.c.patient_id.in_(two)))}
    assert written == len(before) > 0 and after == before  # the same keys again, nothing else
    assert dedupe.load(province, PROVINCE)[2] == 0


def test_bulk_read_skips_a_damaged_record(province):
    p = Patient.__table__
    with province.sessions.begin() as s:
        a, b = list(s.execute(select(p.c.id, p.c.given_name_ct).where(p.c.given_name_ct.is_not(None))
                              .order_by(p.c.id).limit(2)))
        s.execute(update(p).where(p.c.id == a.id).values(given_name_ct=b.given_name_ct))  # another row's ciphertext
    try:
        _, ids, _ = dedupe.load(province, PROVINCE, workers=2)
        assert a.id not in ids and b.id in ids
    finally:
        with province.sessions.begin() as s:
            s.execute(update(p).where(p.c.id == a.id).values(given_name_ct=a.given_name_ct))


def test_a_run_leaves_the_garbage_collector_as_it_found_it(province):
    """The run freezes its records and index out of the cyclic GC (dedupe._long_lived) and
    restores it: enabled again, nothing left frozen, also when it stops early."""
    import gc

    assert gc.isenabled() and gc.get_freeze_count() == 0
    dedupe.run(province, PROVINCE, stop_after_units=2)
    assert gc.isenabled() and gc.get_freeze_count() == 0
    summary = dedupe.run(province, PROVINCE, workers=2)
    assert summary.resumed and gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        dedupe.run(province, PROVINCE)
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()
