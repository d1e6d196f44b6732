"""What a provincial node keeps of its peers: the last good aggregate report of each province,
per question, so that a national report can show a province that does not answer as `stale`
(with the time of that report) after a restart and from every worker (docs/nodes.md).

Only reports that peers released to a national reader are stored: aggregates, already
suppressed by the province that sent them; never a patient or an identifier."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class PeerReport(Base):
    __tablename__ = "node_peer_reports"

    province: Mapped[str] = mapped_column(String(16), primary_key=True)
    question: Mapped[str] = mapped_column(String(64), primary_key=True)  # cohort|denominator|as_of
    report: Mapped[dict] = mapped_column(JSON)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime)
