"""Loading and reading the jurisdiction tree. Not patient data: readable by every staff role."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import InvalidInput
from registry.jurisdictions.models import LEVELS, Jurisdiction

DEFAULT_FILE = "pakistan.csv"


def read_csv(path: Path | None = None) -> list[dict]:
    text = (path.read_text() if path else
            resources.files("registry.jurisdictions").joinpath(f"data/{DEFAULT_FILE}").read_text())
    return list(csv.DictReader(text.splitlines()))


def load(session: Session, rows: list[dict]) -> int:
    """Insert missing nodes (parents before children); existing codes are left as they are."""
    existing = {j.code: j for j in session.scalars(select(Jurisdiction))}
    added = 0
    for row in rows:
        code, level, parent = row["code"].strip(), row["level"].strip(), (row.get("parent_code") or "").strip() or None
        if level not in LEVELS:
            raise InvalidInput(f"unknown level {level!r} for {code}", field="level")
        if code in existing:
            continue
        parent_node = existing.get(parent) if parent else None
        if parent and parent_node is None:
            raise InvalidInput(f"parent {parent} of {code} must come earlier in the file", field="parent_code")
        node = Jurisdiction(
            code=code, name=row["name"].strip(), level=level, parent_code=parent,
            province=code if level == "province" else (parent_node.province if parent_node else None),
            district=code if level == "district" else (parent_node.district if parent_node else None),
        )
        session.add(node)
        existing[code] = node
        added += 1
    session.flush()
    return added


def get(session: Session, code: str) -> Jurisdiction | None:
    return session.get(Jurisdiction, code)


def provinces(session: Session) -> list[Jurisdiction]:
    return list(session.scalars(select(Jurisdiction).where(Jurisdiction.level == "province").order_by(Jurisdiction.code)))


def children(session: Session, parent_code: str | None) -> list[Jurisdiction]:
    q = select(Jurisdiction).where(Jurisdiction.parent_code == parent_code if parent_code else Jurisdiction.parent_code.is_(None))
    return list(session.scalars(q.order_by(Jurisdiction.code)))
