"""The FHIR specification's own examples (tests/data/fhir): they parse, import where NHR can
represent them, and round-trip (our output validates; re-importing it gives the same record).
Also the mapping module's contract, used by bulk import/export."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from registry.fhir.immunization_map import PROVENANCE
from registry.immunizations import intake

from registry.fhir import codes
from registry.fhir.mapping import (FhirInvalid, immunization_from_fhir, immunization_to_fhir, patient_from_fhir,
                                   validate)
from registry.immunizations.schemas import DoseView
from registry.immunizations.vaccines import VACCINES

DATA = Path(__file__).parent / "data" / "fhir"


def _load(name: str) -> dict:
    return json.loads((DATA / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["patient-example.json", "immunization-example.json"])
def test_spec_examples_parse(name):
    res = _load(name)
    assert validate(res) is res


def test_patient_example_imports_what_nhr_represents():
    data = patient_from_fhir(_load("patient-example.json"))
    assert (data.given_name, data.family_name, data.sex, data.birth_date) == ("Peter James", "Chalmers", "male",
                                                                             date(1974, 12, 25))
    assert data.guardian.name == "Bénédicte du Marché" and data.guardian.relationship is None  # v2 "N": next of kin
    assert data.address == "534 Erewhon St, PleasantVille, Rainbow"
    # dropped: the id (not a UUID), the MRN (unknown system), non-Pakistani phone numbers, the
    # district (not an NHR district code: kept in the address text), the usual and maiden names
    assert data.id is None and data.bform is None and data.cnic is None and data.phone is None and data.district is None


def test_immunization_example_is_taken_as_published():
    """Issue 12: the spec example (an influenza vaccine NHR has no code for, subpotent, given by
    a practitioner at a location) is a reported dose, kept with its code text and provenance."""
    spec = _load("immunization-example.json")
    ref, dose = immunization_from_fhir(spec)
    assert ref == "Patient/example"  # resolved by the caller (the same Bundle or import file)
    assert dose.provenance == "reported" and dose.primary_source is True and dose.subpotent
    assert dose.code.system == "urn:oid:1.2.36.1.2001.1005.17" and dose.code.code == "FLUVAX" and dose.code.text
    assert dose.dose_number is None and dose.date_given == date(2013, 1, 10)  # no protocolApplied: inferred
    with pytest.raises(FhirInvalid) as err:  # only an unknown code with no text is refused
        immunization_from_fhir({**spec, "vaccineCode": {"coding": [{"system": "urn:x", "code": "Q"}]}})
    assert err.value.expression == "Immunization.vaccineCode" and err.value.status == 422


def _epi_variant(patient_ref: str) -> dict:
    res = _load("immunization-example.json")
    res.pop("isSubpotent")
    res["vaccineCode"] = {"coding": [{"system": codes.CVX, "code": "19"}], "text": "BCG"}
    res["patient"] = {"reference": patient_ref}
    res["protocolApplied"] = [{"doseNumberPositiveInt": 1}]
    return res


def test_immunization_example_recoded_to_an_epi_antigen_imports():
    pid = uuid.uuid4()
    ref, dose = immunization_from_fhir(_epi_variant(f"Patient/{pid}"))
    assert ref == pid
    assert (dose.code.code, dose.dose_number, dose.date_given, dose.lot_number) == ("19", 1, date(2013, 1, 10), "AAJN11K")
    assert intake.resolve(dose).vaccine == "BCG"  # CVX 19 counts for BCG (registry/immunizations/vocabulary.py)
    assert immunization_from_fhir(_epi_variant("urn:uuid:0c3b1f3e-0f4c-4cde-9a4e-2b1d9d0f7a11"))[0].startswith("urn:uuid:")


def test_spec_patient_round_trips_through_the_api(world):
    """POST the spec example as it is, read it back: the output validates and re-imports to the
    same record."""
    c = world.client
    spec = _load("patient-example.json")
    # other tests register the same example in this database: confirm it is not a duplicate (issue 13)
    r = c.post("/fhir/R4/Patient", json=spec, headers=world.h("clinic_a", **{"Content-Type": "application/fhir+json",
                                                                             "X-Confirm-Not-Duplicate": "true"}))
    assert r.status_code == 201, r.json()
    pid = r.json()["id"]
    out = c.get(f"/fhir/R4/Patient/{pid}", headers=world.h("clinic_a")).json()
    validate(out)
    first, again = patient_from_fhir(spec), patient_from_fhir(out)
    assert again.id == uuid.UUID(pid)
    assert again.model_dump(exclude={"id", "district"}) == first.model_dump(exclude={"id", "district"})
    assert again.district == out["address"][0]["district"]  # the facility's district, now explicit

    # Issue 12: the example's dose (BCG at 38, in 2013, given by a practitioner at a location) is a
    # reported dose: recorded as published (no override), judged invalid for counting, never refused.
    dose = _epi_variant(f"Patient/{pid}")
    r = c.post("/fhir/R4/Immunization", json=dose, headers=world.h("clinic_a"))
    assert r.status_code == 201, r.json()
    back = c.get(f"/fhir/R4/Immunization/{r.json()['id']}", headers=world.h("clinic_a")).json()
    validate(back)
    assert {k: back.get(k) for k in PROVENANCE} == {k: dose.get(k) for k in PROVENANCE}
    ref, recorded = immunization_from_fhir(back)
    assert ref == uuid.UUID(pid) and recorded.provenance == "reported" and intake.resolve(recorded).vaccine == "BCG"
    view = next(d for d in c.get(f"/api/v1/patients/{pid}/immunizations", headers=world.h("clinic_a")).json())
    assert (view["provenance"], view["primary_source"], view["performer_id"], view["validity"]) == \
        ("reported", True, None, "invalid")


@pytest.mark.parametrize("vaccine", sorted(VACCINES))
def test_every_antigen_round_trips(vaccine):
    view = DoseView(id=uuid.uuid4(), patient_id=uuid.uuid4(), vaccine=vaccine, dose_number=0 if vaccine == "OPV" else 1,
                    date_given=date(2026, 6, 1), lot_number="L-1", facility="F-1", performer_id=uuid.uuid4(),
                    status="completed", status_reason=None, supersedes_id=None, recorded_at=datetime.now(UTC), version=1)
    res = validate(immunization_to_fhir(view))
    codings = res["vaccineCode"]["coding"]
    assert codings[0] == {"system": codes.EPI_ANTIGEN, "code": vaccine, "display": codes.ANTIGENS[vaccine][0]}
    assert len(codings) >= 2  # at least one mapped code
    ref, dose = immunization_from_fhir(res)
    assert (ref, dose.id, dose.vaccine, dose.dose_number) == (view.patient_id, view.id, vaccine, view.dose_number)
    for mapped in codings[1:]:  # each mapped code alone is understood too
        alone = copy.deepcopy(res)
        alone["vaccineCode"] = {"coding": [mapped]}
        assert intake.resolve(immunization_from_fhir(alone)[1]).vaccine == vaccine


def test_superseded_and_voided_doses_are_entered_in_error():
    base = dict(id=uuid.uuid4(), patient_id=uuid.uuid4(), vaccine="PENTA", dose_number=1, date_given=date(2026, 7, 13),
                lot_number=None, facility="F-1", performer_id=uuid.uuid4(), status_reason="wrong child QQZ", supersedes_id=None,
                recorded_at=datetime.now(UTC), version=2)
    for status in ("superseded", "entered-in-error"):
        res = validate(immunization_to_fhir(DoseView(status=status, **base)))
        assert res["status"] == "entered-in-error"
        assert "QQZ" not in json.dumps(res)  # the reason (free text, encrypted at rest) is not exported
        with pytest.raises(FhirInvalid):
            immunization_from_fhir(res)


@pytest.mark.parametrize("mutate, where", [
    (lambda r: r.update(birthDate="1974-13-01"), "Patient.birthDate"),
    (lambda r: r.update(gender="m"), "Patient.gender"),
    (lambda r: r["name"][0].update(given=[7]), "Patient.name[0].given[0]"),
    (lambda r: r.update(unknownElement=True), "Patient.unknownElement"),
])
def test_validation_names_the_element_and_never_the_value(mutate, where):
    res = _load("patient-example.json")
    mutate(res)
    with pytest.raises(FhirInvalid) as err:
        validate(res)
    assert err.value.expression == where and err.value.status == 400
    assert "1974-13-01" not in err.value.message and "unknownElement" not in err.value.message
