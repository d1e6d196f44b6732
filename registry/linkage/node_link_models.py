"""Tables of cross-province linkage between provincial nodes (issue 13 item 7, migration 0034).
No names, identifiers or dates in any of them: record ids, a coarse block, encodings and scores.

On a province node:
- `link_remote_candidates`: a candidate pair the national comparer found between one of this
  node's records and a record another node holds: (local record id, remote node, remote record
  id, Dice similarity, grade, levels). The remote record is known here by its id and node only.
  Status `withdrawn`: the comparer withdrew it (a record merged, erased or changed), out of the queue.
- `link_encoding_tombstones`: a record whose encoding was removed (merged, no longer encodable),
  in the encodings feed at its feed position so the comparer learns it (node_feed.py).
- `link_feed_counters`: per custodian, the last feed position given; its row is the feed lock.

On the national comparer (which holds no linkage secret and no patient):
- `link_national_encodings`: each province node's encodings as pulled (node, record id, block,
  CLK), replaced when the node re-encodes a record.
- `link_national_cursors`: per node, where the last pull stopped (the node's own keyset cursor,
  opaque here), so the next pull asks only for encodings changed since.
- `link_national_pairs`: every pair found (ordered by node, then id), with whether each side's
  node has stored it, so a node that was down gets its pairs on the next run; `withdrawn` once a
  side's record is gone or no longer scores a grade (pushed to both nodes as a withdrawal).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.expression import false

from security.orm import Base, UTCDateTime


class RemoteLinkCandidate(Base):
    __tablename__ = "link_remote_candidates"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    local_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), index=True)
    remote_node: Mapped[str] = mapped_column(String(16))
    remote_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    similarity: Mapped[float] = mapped_column(Float)  # Dice coefficient of the two encodings
    grade: Mapped[str] = mapped_column(String(16))
    levels: Mapped[dict] = mapped_column(JSON)  # the encoded fields' comparison levels, as the comparer found them
    status: Mapped[str] = mapped_column(String(16), default="open")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("local_id", "remote_node", "remote_id"), Index(None, "status", "grade"))


class EncodingTombstone(Base):
    __tablename__ = "link_encoding_tombstones"

    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # no foreign key: an erased record's too
    custodian: Mapped[str] = mapped_column(String(32))
    feed_seq: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "custodian", "feed_seq", "patient_id"),)


class FeedCounter(Base):
    __tablename__ = "link_feed_counters"

    custodian: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)


class NationalEncoding(Base):
    __tablename__ = "link_national_encodings"

    node: Mapped[str] = mapped_column(String(16), primary_key=True)
    record_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    block: Mapped[str] = mapped_column(String(24))
    clk: Mapped[bytes] = mapped_column(LargeBinary)
    pulled_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "block"),)


class NationalCursor(Base):
    __tablename__ = "link_national_cursors"

    node: Mapped[str] = mapped_column(String(16), primary_key=True)
    cursor: Mapped[str] = mapped_column(String(120))
    pulled_at: Mapped[datetime] = mapped_column(UTCDateTime)


class NationalPair(Base):
    __tablename__ = "link_national_pairs"

    left_node: Mapped[str] = mapped_column(String(16), primary_key=True)
    left_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    right_node: Mapped[str] = mapped_column(String(16), primary_key=True)
    right_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    similarity: Mapped[float] = mapped_column(Float)
    grade: Mapped[str] = mapped_column(String(16))
    levels: Mapped[dict] = mapped_column(JSON)  # the encoded fields' comparison levels (bloom_fields.levels)
    left_stored: Mapped[bool] = mapped_column(Boolean, default=False)
    right_stored: Mapped[bool] = mapped_column(Boolean, default=False)
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
