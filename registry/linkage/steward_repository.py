"""Queries of the data steward's side of record linkage: the review queue, one candidate pair,
decisions, merges and unmerges. Every read takes the acting principal; scope is part of the query.

Scope of a pair: a pair is in a steward's queue when at least one of its two records is in the
steward's capture scope (registry/scoping), so a cross-province pair reaches both provinces'
stewards. Pairs involving a record that has since been merged are not shown (stale).
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from sqlalchemy import and_, case, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from registry import scoping
from registry.errors import InvalidInput
from registry.immunizations.models import Immunization
from registry.linkage.merge_models import LinkMerge
from registry.linkage.models import LinkCandidate
from registry.patients.models import Patient
from security.access.principal import Principal

CANDIDATES = LinkCandidate.__table__
MERGES = LinkMerge.__table__
PATIENTS = Patient.__table__
DOSES = Immunization.__table__
QUEUED = ("open", "unsure")
_RANK = case({"certain": 0, "probable": 1, "possible": 2}, value=CANDIDATES.c.grade, else_=3)


def add_candidate(session: Session, row: dict) -> None:
    """Insert one candidate pair (tests and fixtures; the matcher has its own `propose`).
    The pair is stored ordered, left < right by the ids' string form."""
    left, right = sorted((row["left_id"], row["right_id"]), key=str)
    session.execute(insert(CANDIDATES), [{**row, "left_id": left, "right_id": right}])


def _in_scope(principal: Principal, left, right):
    return or_(scoping.capture_clause(principal, left), scoping.capture_clause(principal, right))


def _encode(rank: int, weight: float, cid: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(json.dumps([rank, weight, str(cid)]).encode()).decode().rstrip("=")


def _decode(cursor: str) -> tuple[int, float, uuid.UUID]:
    try:
        rank, weight, cid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return int(rank), float(weight), uuid.UUID(cid)
    except Exception:
        raise InvalidInput("cursor is not valid", field="cursor") from None


def queue(session: Session, principal: Principal, *, statuses: tuple[str, ...], cursor: str | None,
          limit: int) -> tuple[list[Row], str | None]:
    """Open (and unsure) pairs with a record in scope, by grade (certain first), then weight
    (highest first), then id; keyset pages."""
    left, right = PATIENTS.alias("l"), PATIENTS.alias("r")
    q = (select(CANDIDATES, _RANK.label("rank"), left.c.province.label("left_province"),
                right.c.province.label("right_province"))
         .join(left, left.c.id == CANDIDATES.c.left_id).join(right, right.c.id == CANDIDATES.c.right_id)
         .where(CANDIDATES.c.status.in_(statuses), left.c.merged_into.is_(None), right.c.merged_into.is_(None),
                _in_scope(principal, left, right)))
    if cursor:
        rank, weight, cid = _decode(cursor)
        q = q.where(or_(_RANK > rank, and_(_RANK == rank, CANDIDATES.c.match_weight < weight),
                        and_(_RANK == rank, CANDIDATES.c.match_weight == weight, CANDIDATES.c.id > cid)))
    rows = session.execute(q.order_by(_RANK, CANDIDATES.c.match_weight.desc(), CANDIDATES.c.id).limit(limit + 1)).all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode(last.rank, last.match_weight, last.id)


def candidate(session: Session, candidate_id: uuid.UUID) -> Row | None:
    """The pair, unscoped: the caller decides reach from the two patients (`patients`)."""
    return session.execute(select(CANDIDATES).where(CANDIDATES.c.id == candidate_id)).first()


def patients(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, Row]:
    return {r.id: r for r in session.execute(select(PATIENTS).where(PATIENTS.c.id.in_(ids))).all()}


def decide(session: Session, candidate_id: uuid.UUID, expected_version: int, status: str, by: uuid.UUID,
           now: datetime, *, from_statuses: tuple[str, ...] = QUEUED, note: tuple[bytes, str] | None = None) -> bool:
    """One decision wins: the row changes only if it is still at `expected_version` and queued.
    `note` (ciphertext, custodian) replaces the stored note; without one the earlier note stays."""
    values = {"note_ct": note[0], "note_custodian": note[1]} if note is not None else {}
    res = session.execute(
        update(CANDIDATES)
        .where(CANDIDATES.c.id == candidate_id, CANDIDATES.c.version == expected_version,
               CANDIDATES.c.status.in_(from_statuses))
        .values(status=status, version=expected_version + 1, decided_by=by, decided_at=now, **values))
    return res.rowcount == 1


def set_candidate_status(session: Session, candidate_id: uuid.UUID, status: str, by: uuid.UUID, now: datetime) -> None:
    session.execute(update(CANDIDATES).where(CANDIDATES.c.id == candidate_id)
                    .values(status=status, version=CANDIDATES.c.version + 1, decided_by=by, decided_at=now))


# --- merges -----------------------------------------------------------------------------------

def doses_of(session: Session, patient_id: uuid.UUID) -> list[Row]:
    q = select(DOSES).where(DOSES.c.patient_id == patient_id).order_by(DOSES.c.date_given, DOSES.c.vaccine,
                                                                       DOSES.c.dose_number, DOSES.c.id)
    return list(session.execute(q).all())


def mark_merged(session: Session, merged_id: uuid.UUID, survivor_id: uuid.UUID, now: datetime) -> bool:
    """Both rows change only if neither is merged yet, in id order (so two crossing merges
    cannot deadlock on PostgreSQL: the second waits, then finds a row already merged). On
    PostgreSQL both rows are first locked FOR UPDATE, which also waits for a dose being inserted
    for either record (its foreign-key check holds a KEY SHARE lock) to commit, so that the move
    that follows sees it."""
    if session.get_bind().dialect.name == "postgresql":
        ids = sorted((merged_id, survivor_id), key=str)
        session.execute(select(PATIENTS.c.id).where(PATIENTS.c.id.in_(ids)).order_by(PATIENTS.c.id).with_for_update())
    for pid in sorted((merged_id, survivor_id), key=str):
        values = {"merged_into": survivor_id} if pid == merged_id else {}
        res = session.execute(update(PATIENTS).where(PATIENTS.c.id == pid, PATIENTS.c.merged_into.is_(None))
                              .values(**values, version=PATIENTS.c.version + 1, updated_at=now))
        if res.rowcount != 1:
            return False
    return True


def mark_unmerged(session: Session, merged_id: uuid.UUID, survivor_id: uuid.UUID, now: datetime) -> bool:
    for pid in sorted((merged_id, survivor_id), key=str):
        cond = PATIENTS.c.merged_into == survivor_id if pid == merged_id else PATIENTS.c.merged_into.is_(None)
        values = {"merged_into": None} if pid == merged_id else {}
        res = session.execute(update(PATIENTS).where(PATIENTS.c.id == pid, cond)
                              .values(**values, version=PATIENTS.c.version + 1, updated_at=now))
        if res.rowcount != 1:
            return False
    return True


def move_doses(session: Session, from_id: uuid.UUID, to_id: uuid.UUID, now: datetime) -> list[list[str | None]]:
    """Every dose of `from_id` to `to_id`, each remembering its first owner; returns
    [[dose id, original_patient_id before the move], ...] for the merge record."""
    moved = [[str(d.id), str(d.original_patient_id) if d.original_patient_id else None] for d in doses_of(session, from_id)]
    if moved:
        session.execute(update(DOSES).where(DOSES.c.patient_id == from_id).values(
            patient_id=to_id, original_patient_id=func.coalesce(DOSES.c.original_patient_id, from_id),
            version=DOSES.c.version + 1, updated_at=now))
    return moved


def restore_doses(session: Session, moved: list, survivor_id: uuid.UUID, merged_id: uuid.UUID, now: datetime) -> int:
    """Each moved dose back to `merged_id` with its former `original_patient_id`; returns how
    many were found on the survivor (the caller refuses anything but all of them)."""
    n = 0
    for dose_id, original in moved:
        res = session.execute(update(DOSES).where(DOSES.c.id == uuid.UUID(dose_id), DOSES.c.patient_id == survivor_id)
                              .values(patient_id=merged_id, original_patient_id=uuid.UUID(original) if original else None,
                                      version=DOSES.c.version + 1, updated_at=now))
        n += res.rowcount
    return n


def move_later_doses(session: Session, dose_ids: list[uuid.UUID], survivor_id: uuid.UUID, merged_id: uuid.UUID,
                     since: datetime, now: datetime) -> int:
    """Doses recorded on the survivor itself after the merge (never moved by a merge) to the
    restored record, as the steward chose; returns how many qualified."""
    if not dose_ids:
        return 0
    res = session.execute(update(DOSES).where(
        DOSES.c.id.in_(dose_ids), DOSES.c.patient_id == survivor_id, DOSES.c.original_patient_id.is_(None),
        DOSES.c.recorded_at >= since).values(patient_id=merged_id, version=DOSES.c.version + 1, updated_at=now))
    return res.rowcount


def insert_merge(session: Session, row: dict) -> None:
    session.execute(insert(MERGES), [row])


def active_merge_of(session: Session, merged_id: uuid.UUID) -> Row | None:
    return session.execute(select(MERGES).where(MERGES.c.merged_id == merged_id, MERGES.c.unmerged_at.is_(None))).first()


def close_merge(session: Session, merge_id: uuid.UUID, expected_version: int, by: uuid.UUID, now: datetime,
                moved_later: list[str]) -> bool:
    res = session.execute(update(MERGES).where(MERGES.c.id == merge_id, MERGES.c.version == expected_version,
                                               MERGES.c.unmerged_at.is_(None))
                          .values(unmerged_at=now, unmerged_by=by, unmerge_moved=moved_later, version=expected_version + 1))
    return res.rowcount == 1


def merges_in_scope(session: Session, principal: Principal, *, cursor: str | None, limit: int):
    """Merges whose merged (replaced) record is in the principal's capture scope, newest first."""
    from registry import pagination

    merged = PATIENTS.alias("m")
    q = (select(MERGES, merged.c.province.label("merged_province"), merged.c.district.label("merged_district"))
         .join(merged, merged.c.id == MERGES.c.merged_id).where(scoping.capture_clause(principal, merged)))
    return pagination.newest_first(session, q, MERGES.c.merged_at, MERGES.c.id, cursor=cursor, limit=limit)


def unsure_partners(session: Session, principal: Principal, patient_id: uuid.UUID) -> list[uuid.UUID]:
    """The other records of pairs a steward marked `unsure` with this one, limited to records in
    the principal's capture scope and not merged (FHIR `Patient.link` `seealso`): nothing
    outside the caller's reach is revealed."""
    other = PATIENTS.alias("o")
    partner = case((CANDIDATES.c.left_id == patient_id, CANDIDATES.c.right_id), else_=CANDIDATES.c.left_id)
    q = (select(other.c.id).join(CANDIDATES, other.c.id == partner)
         .where(CANDIDATES.c.status == "unsure", or_(CANDIDATES.c.left_id == patient_id, CANDIDATES.c.right_id == patient_id),
                other.c.merged_into.is_(None), scoping.capture_clause(principal, other))
         .order_by(other.c.id))
    return list(session.execute(q).scalars())
