"""Target population figures per jurisdiction and year (denominators for coverage).

Format: CSV with the header `jurisdiction_code,year,population` (UTF-8, comma-separated), one
figure per line, e.g. `PK-PB-LAH,2025,312000`. Loading is all or nothing: any bad line refuses
the whole file with the line number and what is wrong. A figure already loaded for the same
jurisdiction and year is replaced (figures are revised during a year).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from sqlalchemy import delete, insert, tuple_
from sqlalchemy.orm import Session

from registry.errors import InvalidInput
from registry.jurisdictions.models import Jurisdiction
from registry.reports.models import TargetPopulation

HEADER = ["jurisdiction_code", "year", "population"]
MAX_ROWS = 100_000


def parse(text: str, nodes: dict[str, Jurisdiction]) -> list[dict]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != HEADER:
        raise InvalidInput(f"the first line must be the header {','.join(HEADER)}", field="file")
    rows: dict[tuple[str, int], dict] = {}
    for number, line in enumerate(reader, start=2):
        if not line or all(not c.strip() for c in line):
            continue
        if len(line) != 3:
            raise InvalidInput(f"line {number}: expected 3 fields, found {len(line)}", field="file")
        code, year_text, pop_text = (c.strip() for c in line)
        if code not in nodes:
            raise InvalidInput(f"line {number}: unknown jurisdiction code {code[:32]!r}", field="file")
        if not year_text.isdigit() or not 1900 <= int(year_text) <= 2200:
            raise InvalidInput(f"line {number}: year must be a year such as 2025", field="file")
        if not pop_text.isdigit() or not 0 < int(pop_text) <= 1_000_000_000:
            raise InvalidInput(f"line {number}: population must be a whole number from 1 to 1,000,000,000", field="file")
        key = (code, int(year_text))
        if key in rows:
            raise InvalidInput(f"line {number}: {code} {year_text} appears twice", field="file")
        rows[key] = {"jurisdiction_code": code, "year": key[1], "population": int(pop_text)}
        if len(rows) > MAX_ROWS:
            raise InvalidInput(f"at most {MAX_ROWS} figures per file", field="file")
    if not rows:
        raise InvalidInput("the file holds no figures", field="file")
    return list(rows.values())


def store(session: Session, rows: list[dict], loaded_by: str) -> int:
    t = TargetPopulation.__table__
    now = datetime.now(UTC)
    keys = [(r["jurisdiction_code"], r["year"]) for r in rows]
    for i in range(0, len(keys), 500):
        session.execute(delete(t).where(tuple_(t.c.jurisdiction_code, t.c.year).in_(keys[i:i + 500])))
    session.execute(insert(t), [{**r, "loaded_at": now, "loaded_by": loaded_by[:64]} for r in rows])
    return len(rows)
