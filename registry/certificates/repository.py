"""Issued certificates and revocations. Callers reach a certificate only through a patient they
may reach (registry/patients/service.reachable)."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry.certificates.models import CertificateRevocation, IssuedCertificate

ISSUED = IssuedCertificate.__table__
REVOKED = CertificateRevocation.__table__


def insert_issued(session: Session, row: dict) -> None:
    session.execute(insert(ISSUED), [row])


def get(session: Session, uvci: str) -> Row | None:
    q = select(ISSUED, REVOKED.c.revoked_at, REVOKED.c.reason_code).outerjoin(REVOKED, REVOKED.c.uvci == ISSUED.c.uvci)
    return session.execute(q.where(ISSUED.c.uvci == uvci)).first()


def insert_revocation(session: Session, row: dict) -> None:
    session.execute(insert(REVOKED), [row])


def is_revoked(session: Session, uvci: str) -> bool:
    return session.execute(select(REVOKED.c.uvci).where(REVOKED.c.uvci == uvci)).first() is not None


def revoked_uvcis(session: Session) -> list[str]:
    return list(session.execute(select(REVOKED.c.uvci)).scalars())
