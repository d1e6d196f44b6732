"""Loading the jurisdiction hierarchy and the facility list from an operator's CSV files.

What `nhr init --jurisdictions FILE --facilities FILE` and `nhr jurisdictions|facilities load`
do, for a real deployment (the files shipped in the package are the default hierarchy and, for
development and the demo only, invented facilities):

- The whole file is checked before anything is written: required columns, known levels and
  facility kinds, codes unique in the file, every parent defined earlier in the file or already
  in the database, every facility under a district or a node below one. Every problem is
  reported with its row number (these are codes and names of places, not patient data); one
  problem and nothing is written.
- Loading is idempotent: a row equal to what is stored changes nothing; a new name updates the
  name; a row whose level, parent or place differs from the stored node is refused, since moving
  a node would silently move every record under it (retire the old code and add a new one).
- A facility or jurisdiction that the file lists again after it was retired is reactivated;
  retiring is explicit (`nhr facilities retire CODE`, `nhr jurisdictions retire CODE`), never
  implied by a row missing from a file. Nothing new goes under a retired node: a new child node,
  a new facility or a reactivated facility whose place (or parent) is retired is refused.

Retiring a jurisdiction (`retire_jurisdiction`) means: no new patient registrations or moves into
it, no new staff accounts bound to it or to its facilities, nothing new added under it. Its
records stay where they are, readable as before, and reports (historical and current) still count
them. A node with active child nodes or active facilities is refused unless `cascade`, which
retires the whole subtree and its facilities with it. The country cannot be retired.

The result says what changed: added, renamed, reactivated and unchanged, per kind.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.errors import InvalidInput
from registry.facilities.models import KINDS, Facility
from registry.jurisdictions.models import LEVELS, Jurisdiction

JURISDICTION_COLUMNS = ("code", "name", "level", "parent_code")
FACILITY_COLUMNS = ("code", "name", "kind", "jurisdiction_code")
_PARENT_LEVEL = {"province": "country", "district": "province", "tehsil": "district", "union_council": "tehsil"}


class ReferenceFileError(InvalidInput):
    """A reference file with problems; `problems` lists each one with its row number."""

    def __init__(self, what: str, problems: list[str]) -> None:
        shown = "; ".join(problems[:10]) + (f"; and {len(problems) - 10} more" if len(problems) > 10 else "")
        super().__init__(f"{what}: {shown}", field="file")
        self.problems = problems


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    renamed: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    unchanged: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.renamed or self.reactivated)


def read_rows(text: str, columns: tuple[str, ...], what: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise ReferenceFileError(what, [f"missing column {c!r}" for c in missing])
    return [{k: (v or "").strip() for k, v in row.items() if k in columns} for row in reader]


def read_file(path: Path, columns: tuple[str, ...], what: str) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ReferenceFileError(what, ["the file is not UTF-8 text"]) from None
    return read_rows(text, columns, what)


def _duplicates(rows: list[dict], problems: list[str]) -> None:
    seen: dict[str, int] = {}
    for n, row in enumerate(rows, start=2):
        if row["code"] in seen:
            problems.append(f"row {n}: code {row['code']} repeats row {seen[row['code']]}")
        seen.setdefault(row["code"], n)


def apply_jurisdictions(session: Session, rows: list[dict], what: str = "jurisdictions file") -> Changes:
    existing = {j.code: j for j in session.scalars(select(Jurisdiction))}
    problems: list[str] = []
    _duplicates(rows, problems)
    planned: dict[str, tuple[str, str | None]] = {c: (j.level, j.parent_code) for c, j in existing.items()}
    listed = {row["code"] for row in rows}
    for n, row in enumerate(rows, start=2):
        code, level, parent = row["code"], row["level"], row["parent_code"] or None
        if not code or not row["name"]:
            problems.append(f"row {n}: code and name are required")
            continue
        if level not in LEVELS:
            problems.append(f"row {n}: level {level!r} is not one of {', '.join(LEVELS)}")
            continue
        if level == "country" and parent:
            problems.append(f"row {n}: a country has no parent")
        if level != "country":
            if parent is None or parent not in planned:
                problems.append(f"row {n}: parent {parent or '(none)'} of {code} is neither earlier in the file nor loaded")
            elif planned[parent][0] != _PARENT_LEVEL[level]:
                problems.append(f"row {n}: a {level} must sit under a {_PARENT_LEVEL[level]}, not a {planned[parent][0]}")
            elif (code not in existing or not existing[code].active) and parent in existing and not existing[parent].active and parent not in listed:
                problems.append(f"row {n}: parent {parent} of {code} is retired (list it in the file to reactivate it)")
        old = existing.get(code)
        if old is not None and (old.level, old.parent_code) != (level, parent):
            problems.append(f"row {n}: {code} is already loaded with another level or parent; moving a node is refused "
                            "(add a new code instead)")
        planned.setdefault(code, (level, parent))
    if problems:
        raise ReferenceFileError(what, problems)
    changes = Changes()
    for row in rows:
        code = row["code"]
        node = existing.get(code)
        if node is None:
            parent_node = existing.get(row["parent_code"]) if row["parent_code"] else None
            node = Jurisdiction(code=code, name=row["name"], level=row["level"], parent_code=row["parent_code"] or None,
                                province=code if row["level"] == "province" else (parent_node.province if parent_node else None),
                                district=code if row["level"] == "district" else (parent_node.district if parent_node else None))
            session.add(node)
            existing[code] = node
            changes.added.append(code)
            continue
        touched = False
        if not node.active:
            node.active = True
            changes.reactivated.append(code)
            touched = True
        if node.name != row["name"]:
            node.name = row["name"]
            changes.renamed.append(code)
            touched = True
        if not touched:
            changes.unchanged += 1
    session.flush()
    return changes


def apply_facilities(session: Session, rows: list[dict], what: str = "facilities file") -> Changes:
    places = {j.code: j for j in session.scalars(select(Jurisdiction))}
    existing = {f.code: f for f in session.scalars(select(Facility))}
    problems: list[str] = []
    _duplicates(rows, problems)
    for n, row in enumerate(rows, start=2):
        if not row["code"] or not row["name"]:
            problems.append(f"row {n}: code and name are required")
            continue
        if row["kind"] not in KINDS:
            problems.append(f"row {n}: kind {row['kind']!r} is not one of {', '.join(KINDS)}")
        node = places.get(row["jurisdiction_code"])
        if node is None or node.district is None:
            problems.append(f"row {n}: {row['jurisdiction_code'] or '(none)'} is not a loaded district or a place below one")
            continue
        old = existing.get(row["code"])
        if not node.active and (old is None or not old.active):
            problems.append(f"row {n}: {node.code} is retired; no facility is added or reactivated there")
            continue
        old = existing.get(row["code"])
        if old is not None and old.jurisdiction_code != row["jurisdiction_code"]:
            problems.append(f"row {n}: facility {row['code']} is already loaded in another place; moving it is refused")
    if problems:
        raise ReferenceFileError(what, problems)
    changes = Changes()
    for row in rows:
        old = existing.get(row["code"])
        if old is None:
            node = places[row["jurisdiction_code"]]
            session.add(Facility(code=row["code"], name=row["name"], kind=row["kind"], jurisdiction_code=node.code,
                                 province=node.province, district=node.district, active=True))
            changes.added.append(row["code"])
            continue
        touched = False
        if not old.active:
            old.active = True
            changes.reactivated.append(old.code)
            touched = True
        if (old.name, old.kind) != (row["name"], row["kind"]):
            old.name, old.kind = row["name"], row["kind"]
            changes.renamed.append(old.code)
            touched = True
        if not touched:
            changes.unchanged += 1
    session.flush()
    return changes


def retire_facility(session: Session, code: str) -> bool:
    """Mark a facility retired (no new staff accounts; its records stay). False if already retired."""
    facility = session.get(Facility, code)
    if facility is None:
        raise InvalidInput("no facility has this code", field="code")
    if not facility.active:
        return False
    facility.active = False
    session.flush()
    return True


def retire_jurisdiction(session: Session, code: str, *, cascade: bool = False) -> tuple[list[str], list[str]]:
    """Retire a node (see the module docstring); returns the (jurisdiction codes, facility codes)
    retired, both empty if it was already retired. Raises InvalidInput (field `code`) for an
    unknown code, the country, or active children or facilities without `cascade`."""
    nodes = {j.code: j for j in session.scalars(select(Jurisdiction))}
    node = nodes.get(code)
    if node is None:
        raise InvalidInput("no jurisdiction has this code", field="code")
    if node.level == "country":
        raise InvalidInput("the country cannot be retired", field="code")
    if not node.active:
        return [], []
    kids: dict[str, list[str]] = {}
    for j in nodes.values():
        kids.setdefault(j.parent_code, []).append(j.code)
    subtree, frontier = [code], [code]
    while frontier:
        below = kids.get(frontier.pop(), [])
        subtree += below
        frontier += below
    active_nodes = [c for c in subtree if nodes[c].active]
    facilities = list(session.scalars(select(Facility).where(Facility.jurisdiction_code.in_(subtree), Facility.active.is_(True))
                                      .order_by(Facility.code)))
    if not cascade and (len(active_nodes) > 1 or facilities):
        raise InvalidInput(f"{code} has {len(active_nodes) - 1} active place(s) and {len(facilities)} active facilities "
                           "below it; retire them first, or give --cascade to retire them with it", field="code")
    for c in active_nodes:
        nodes[c].active = False
    for f in facilities:
        f.active = False
    session.flush()
    return active_nodes, [f.code for f in facilities]
