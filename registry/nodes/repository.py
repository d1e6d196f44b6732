"""The last good peer reports (models.PeerReport): one row per province and question."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from registry.nodes.models import PeerReport

_TABLE = PeerReport.__table__


def remember(session: Session, province: str, question: str, report: dict, fetched_at: datetime) -> None:
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values = {"province": province, "question": question, "report": report, "fetched_at": fetched_at}
    statement = insert(_TABLE).values(**values)
    session.execute(statement.on_conflict_do_update(index_elements=["province", "question"],
                                                    set_={"report": statement.excluded.report,
                                                          "fetched_at": statement.excluded.fetched_at}))


def last_good(session: Session, provinces: list[str], question: str) -> dict[str, PeerReport]:
    if not provinces:
        return {}
    rows = session.execute(select(_TABLE).where(_TABLE.c.province.in_(provinces), _TABLE.c.question == question)).all()
    return {r.province: PeerReport(**r._mapping) for r in rows}
