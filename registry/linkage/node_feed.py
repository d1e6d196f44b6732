"""A province node's encodings feed, as the national comparer pulls it (issue 13 item 7,
docs/linkage.md "Between provincial nodes").

The feed is every encoding (`link_encodings`) and every tombstone (`link_encoding_tombstones`: a
record whose encoding was removed because it was merged or is no longer encodable) of one
custodian, in the order of `feed_seq`, then record id. The comparer keeps a cursor (the last
position it read) and asks for what comes after it.

Why the cursor is safe under concurrent encoders. A position is given by `write`, which adds to
the custodian's row of `link_feed_counters` (`UPDATE ... RETURNING`) in the same transaction as the
encodings and tombstones it writes. The update locks that row until the transaction commits or
rolls back, so a second writer of the same custodian waits at its update, and gets higher
positions, until the first has committed: positions become visible in increasing order, and a
pull that has read up to position n can never later see a row below n. (A time taken before the
write, the previous cursor, let an encoder that took its time first commit last, behind a pull
that had passed it.) A counter row, rather than a PostgreSQL advisory lock, so that SQLite
behaves the same (it serialises writers anyway) and the cursor is a plain integer. The row lock
is held from the update to the commit only: `write` is the last thing an encoding transaction does.

Cursors of the form before migration 0043 (`time|record id`) are read as the feed's start: the
comparer pulls everything once more, which it can (a pulled encoding replaces its row).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, cast, delete, insert, null, or_, select, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from registry.errors import InvalidInput
from registry.linkage.match_models import LinkEncoding
from registry.linkage.node_link_models import EncodingTombstone, FeedCounter

ENC = LinkEncoding.__table__
TOMBS = EncodingTombstone.__table__
COUNTERS = FeedCounter.__table__


def _next_positions(session: Session, custodian: str, n: int) -> int:
    """Reserve n positions for `custodian`; returns the first. Locks the custodian's counter row
    until this transaction ends (the feed lock)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(COUNTERS).values(custodian=custodian, seq=0).on_conflict_do_nothing())
    last = session.execute(update(COUNTERS).where(COUNTERS.c.custodian == custodian)
                           .values(seq=COUNTERS.c.seq + n).returning(COUNTERS.c.seq)).scalar_one()
    return last - n + 1


def write(session: Session, custodian: str, encodings: list[dict], gone: list[uuid.UUID], now: datetime) -> None:
    """Store `encodings` (rows of link_encodings without their position; any older encoding of the
    same record is replaced) and tombstones for the records in `gone` (their encoding deleted), at
    the next positions of the custodian's feed. Call last in the transaction (see the module)."""
    if not encodings and not gone:
        return
    first = _next_positions(session, custodian, len(encodings) + len(gone))
    ids = [e["patient_id"] for e in encodings]
    if ids + gone:
        session.execute(delete(TOMBS).where(TOMBS.c.patient_id.in_(ids + gone)))
        session.execute(delete(ENC).where(ENC.c.patient_id.in_(ids + gone)))
    if encodings:
        session.execute(insert(ENC), [{**e, "feed_seq": first + i} for i, e in enumerate(encodings)])
    if gone:
        base = first + len(encodings)
        session.execute(insert(TOMBS), [{"patient_id": pid, "custodian": custodian, "feed_seq": base + i, "created_at": now}
                                        for i, pid in enumerate(gone)])


def forget(session: Session, patient_id: uuid.UUID, now: datetime) -> bool:
    """A record merged into another: its encoding (if any) leaves the feed at once, as a
    tombstone, so the comparer withdraws its pairs on its next pull without waiting for the
    province's next `nhr dedupe encode`. Returns whether there was one."""
    custodian = session.execute(select(ENC.c.custodian).where(ENC.c.patient_id == patient_id)).scalar()
    if custodian is None:
        return False
    write(session, custodian, [], [patient_id], now)
    return True


def encode_cursor(seq: int, record_id: uuid.UUID) -> str:
    return f"s{seq}|{record_id}"


def decode_cursor(cursor: str) -> tuple[int, uuid.UUID]:
    try:
        at, rid = cursor.split("|")
        record_id = uuid.UUID(rid)
        if at.startswith("s"):
            seq = int(at[1:])
            if seq < 0:
                raise ValueError
            return seq, record_id
        if datetime.fromisoformat(at).tzinfo is None:
            raise ValueError
        return -1, uuid.UUID(int=0)  # a cursor of the old form (time|id): the start of the feed
    except ValueError:
        raise InvalidInput("the cursor is not one this node issued", field="after") from None


def page(session: Session, custodian: str, after: tuple[int, uuid.UUID] | None, limit: int) -> list:
    """Up to `limit` feed rows after `after`: (record id, feed_seq, block, clk), block and clk None for a tombstone."""
    enc = select(ENC.c.patient_id.label("id"), ENC.c.feed_seq.label("seq"), ENC.c.block, ENC.c.clk) \
        .where(ENC.c.custodian == custodian)
    tomb = select(TOMBS.c.patient_id.label("id"), TOMBS.c.feed_seq.label("seq"), cast(null(), ENC.c.block.type).label("block"),
                  cast(null(), ENC.c.clk.type).label("clk")).where(TOMBS.c.custodian == custodian)
    if after is not None:
        seq, rid = after
        enc = enc.where(or_(ENC.c.feed_seq > seq, and_(ENC.c.feed_seq == seq, ENC.c.patient_id > rid)))
        tomb = tomb.where(or_(TOMBS.c.feed_seq > seq, and_(TOMBS.c.feed_seq == seq, TOMBS.c.patient_id > rid)))
    # each side is read by its own index in feed order, limited; the union is ordered and limited again
    enc, tomb = enc.order_by(ENC.c.feed_seq, ENC.c.patient_id).limit(limit), \
        tomb.order_by(TOMBS.c.feed_seq, TOMBS.c.patient_id).limit(limit)
    both = union_all(enc.subquery().select(), tomb.subquery().select()).subquery()
    return list(session.execute(select(both).order_by(both.c.seq, both.c.id).limit(limit)))
