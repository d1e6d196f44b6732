"""The jurisdiction tree (country > province > district > tehsil > union council) as data.

`province` and `district` are denormalised onto every node at or below them, so that scope
checks are equality tests on an indexed column rather than tree walks.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base

LEVELS = ("country", "province", "district", "tehsil", "union_council")


class Jurisdiction(Base):
    __tablename__ = "jurisdictions"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    level: Mapped[str] = mapped_column(String(16))
    parent_code: Mapped[str | None] = mapped_column(ForeignKey("jurisdictions.code"), index=True)
    province: Mapped[str | None] = mapped_column(String(32))
    district: Mapped[str | None] = mapped_column(String(32))
