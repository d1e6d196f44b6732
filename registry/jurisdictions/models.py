"""The jurisdiction tree (country > province > district > tehsil > union council) as data.

A node is never deleted or moved; it can be retired (`active` false) and reactivated.
`province` and `district` are denormalised onto every node at or below them, so that scope
checks are equality tests on an indexed column rather than tree walks.
"""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, String, true
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
    # False once retired (registry/reference_data.py): no new registrations, accounts, facilities or
    # child nodes there; its records stay where they are and reports still count them.
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
