"""Health facilities. Each belongs to one jurisdiction node; province and district are denormalised."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base

KINDS = ("bhu", "rhc", "thq", "dhq", "epi_centre", "teaching_hospital", "private_clinic", "outreach")


class Facility(Base):
    __tablename__ = "facilities"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(160))
    kind: Mapped[str] = mapped_column(String(24))
    jurisdiction_code: Mapped[str] = mapped_column(ForeignKey("jurisdictions.code"), index=True)
    province: Mapped[str] = mapped_column(String(32), index=True)
    district: Mapped[str] = mapped_column(String(32), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
