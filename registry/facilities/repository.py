"""Facilities: loading from CSV and lookups. Not patient data."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import InvalidInput
from registry.facilities.models import KINDS, Facility
from registry.jurisdictions.models import Jurisdiction


def read_csv(path: Path | None = None) -> list[dict]:
    text = (path.read_text() if path else
            resources.files("registry.facilities").joinpath("data/pakistan-demo.csv").read_text())
    return list(csv.DictReader(text.splitlines()))


def load(session: Session, rows: list[dict]) -> int:
    added = 0
    for row in rows:
        if session.get(Facility, row["code"]) is not None:
            continue
        add(session, row["code"], row["name"], row["kind"], row["jurisdiction_code"])
        added += 1
    session.flush()
    return added


def add(session: Session, code: str, name: str, kind: str, jurisdiction_code: str) -> Facility:
    if kind not in KINDS:
        raise InvalidInput(f"facility kind must be one of {', '.join(KINDS)}", field="kind")
    node = session.get(Jurisdiction, jurisdiction_code)
    if node is None or node.district is None:
        raise InvalidInput("facility must belong to a district or a node below one", field="jurisdiction_code")
    facility = Facility(code=code, name=name, kind=kind, jurisdiction_code=jurisdiction_code,
                        province=node.province, district=node.district, active=True)
    session.add(facility)
    return facility


def get(session: Session, code: str) -> Facility | None:
    return session.get(Facility, code)


def list_in(session: Session, *, province: str | None = None, district: str | None = None) -> list[Facility]:
    q = select(Facility).order_by(Facility.code)
    if province:
        q = q.where(Facility.province == province)
    if district:
        q = q.where(Facility.district == district)
    return list(session.scalars(q))
