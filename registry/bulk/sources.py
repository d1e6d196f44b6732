"""Readers for `nhr import`: each yields `Item`s (one per CSV row, NDJSON line or Bundle entry)
*without* validating them, so that resuming a run skips committed rows at the cost of reading
them only. `Item.parse()` validates and returns a `Parsed` or raises `RowInvalid`.

Ids are natural keys, so that no rerun creates anything twice:
- a record with a client id (CSV `id`, FHIR `id` when it is a UUID) keeps it;
- otherwise its id is derived from the file's hash and its row number (UUIDv5), so the same
  row of the same file always gets the same id;
- a Bundle entry whose `fullUrl` is `urn:uuid:X` and that has no id of its own becomes X, and
  references to `urn:uuid:X` inside the Bundle resolve to the id the entry received.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from pydantic import ValidationError

from registry.bulk import fhir_io
from registry.bulk.rows import Parsed, RowInvalid, derived_id, pydantic_errors
from registry.immunizations.schemas import DoseCreate
from registry.patients.schemas import PatientCreate

FORMATS = ("csv-patients", "csv-doses", "fhir-ndjson", "fhir-bundle")
PATIENT_COLUMNS = ("id", "given_name", "family_name", "sex", "birth_date", "bform", "cnic", "guardian_name",
                   "guardian_relationship", "guardian_cnic", "phone", "address", "district", "confirm_not_duplicate")
# issue 12: a dose row may say where it comes from and carry any vaccine code (docs/bulk.md)
PROVENANCE_COLUMNS = ("provenance", "primary_source", "report_origin", "performer_facility", "performer_text",
                      "location_text", "country", "occurrence_text", "source_recorded", "subpotent")
CODE_COLUMNS = ("code_system", "code", "code_text")
DOSE_COLUMNS = ("id", "patient_id", "vaccine", "dose_number", "date_given", "lot_number", *CODE_COLUMNS, *PROVENANCE_COLUMNS)


class UnreadableFile(ValueError):
    """The file as a whole cannot be imported (unknown format, unknown column). No values in it."""


@dataclass(slots=True)
class Item:
    """`parse(validated=False)`; `raw` (FHIR only) is what `fhir_io.check` validates in a worker
    process, after which `parse(validated=True)` only maps."""

    row: int
    parse: Callable[..., Parsed]
    raw: object = None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def detect(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".ndjson", ".jsonl")):
        return "fhir-ndjson"
    if name.endswith(".json"):
        return "fhir-bundle"
    with open(path, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), [])
    if "patient_id" in header:
        return "csv-doses"
    if "given_name" in header:
        return "csv-patients"
    raise UnreadableFile("cannot tell the format: use --format")


def _uuid(value: str | None, field: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise RowInvalid([(field, "uuid_parsing")]) from None


def _patient_row(sha: str, row: int, r: dict) -> Parsed:
    pid = _uuid(r.get("id"), "id")
    guardian = None
    if r.get("guardian_name") or r.get("guardian_relationship") or r.get("guardian_cnic"):
        guardian = {"name": r.get("guardian_name"), "relationship": r.get("guardian_relationship"), "cnic": r.get("guardian_cnic")}
    body = {k: r.get(k) for k in ("given_name", "family_name", "sex", "birth_date", "bform", "cnic", "phone", "address", "district")}
    # optional column: the importer confirms a row the duplicate check answered `likely_duplicate`
    body["confirm_not_duplicate"] = (r.get("confirm_not_duplicate") or "").strip().lower() in ("true", "1", "yes")
    try:
        data = PatientCreate.model_validate({**body, "guardian": guardian})
    except ValidationError as exc:
        raise RowInvalid([(f.replace("guardian.", "guardian_"), t) for f, t in pydantic_errors(exc)]) from None
    return Parsed("patient", pid or derived_id(sha, row), data)


def _dose_row(sha: str, row: int, r: dict) -> Parsed:
    did = _uuid(r.get("id"), "id")
    patient = _uuid(r.get("patient_id"), "patient_id")
    errors = [] if patient else [("patient_id", "missing")]
    try:
        body = {k: r.get(k) for k in ("vaccine", "dose_number", "date_given", "lot_number", *PROVENANCE_COLUMNS)
                if r.get(k) is not None}
        if any(r.get(k) for k in CODE_COLUMNS):
            body["code"] = {k: v for k, v in (("system", r.get("code_system")), ("code", r.get("code")),
                                              ("text", r.get("code_text"))) if v}
        data = DoseCreate.model_validate(body)
    except ValidationError as exc:
        raise RowInvalid(errors + pydantic_errors(exc)) from None
    if errors:
        raise RowInvalid(errors)
    return Parsed("dose", did or derived_id(sha, row), data, patient)


def read_csv(path: Path, sha: str, fmt: str) -> Iterator[Item]:
    columns, build = (PATIENT_COLUMNS, _patient_row) if fmt == "csv-patients" else (DOSE_COLUMNS, _dose_row)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        unknown = [h for h in header if h not in columns]
        if unknown or not header:
            raise UnreadableFile(f"unknown column(s) {', '.join(unknown)}; expected some of {', '.join(columns)}")
        for row, cells in enumerate(reader, 1):
            r = {h: (c.strip() or None) for h, c in zip(header, cells)}
            yield Item(row, lambda validated=False, row=row, r=r: build(sha, row, r))


def _fhir(sha: str, row: int, resource: dict, urns: dict[str, uuid.UUID], full_url: str | None = None,
          validated: bool = False) -> Parsed:
    return fhir_io.parse(sha, row, resource, urns, full_url, validated=validated)


def read_ndjson(path: Path, sha: str) -> Iterator[Item]:
    urns: dict[str, uuid.UUID] = {}
    with open(path, encoding="utf-8") as f:
        for row, line in enumerate(f, 1):
            if not line.strip():
                continue
            yield Item(row, lambda validated=False, row=row, line=line: _fhir(sha, row, _json(line), urns, None, validated), line)


def read_bundle(path: Path, sha: str) -> Iterator[Item]:
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UnreadableFile("the file is not JSON") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise UnreadableFile("the file is not a FHIR Bundle")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    urns = fhir_io.bundle_ids(sha, entries)
    for row, entry in enumerate(entries, 1):
        resource = entry.get("resource") if isinstance(entry.get("resource"), dict) else {}
        yield Item(row, lambda validated=False, row=row, r=resource, u=entry.get("fullUrl"): _fhir(sha, row, r, urns, u, validated),
                   resource)


def _json(line: str) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        raise RowInvalid([("row", "json_invalid")]) from None
    if not isinstance(value, dict):
        raise RowInvalid([("row", "json_invalid")])
    return value


def items(path: Path, sha: str, fmt: str) -> Iterator[Item]:
    if fmt in ("csv-patients", "csv-doses"):
        return read_csv(path, sha, fmt)
    if fmt == "fhir-ndjson":
        return read_ndjson(path, sha)
    if fmt == "fhir-bundle":
        return read_bundle(path, sha)
    raise UnreadableFile(f"format must be one of {', '.join(FORMATS)}")


__all__ = ["Item", "Parsed", "RowInvalid", "UnreadableFile", "derived_id", "items", "detect", "file_sha256"]
