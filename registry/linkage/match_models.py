"""Tables of the matching engine (issue 13, migration 0017). No patient data in any of them.

- `link_models`: the Fellegi-Sunter parameters, versioned: m and u probability of every
  comparison level (registry/linkage/comparisons.py), the prior, the grade thresholds, where the
  parameters came from (`configured` or `em`, estimated by Splink from the custodian's own
  records) and whether it is the active model. Parameters are probabilities only.
- `link_keys`: blocking keys for the check at registration: a keyed, truncated hash (the blind
  indexer's, 26 bits, per custodian) of a name's consonant skeleton with the birth year. Like a
  blind index it only narrows the candidates, which are decrypted and scored in memory.
- `link_encodings`: the national layer's Bloom-filter encoding (CLK, 512 bits, keyed by the
  national linkage secret: bloom.py) of each record, with a coarse block (birth year and sex).
  Compared only with other provinces' encodings; never released.
- `dedupe_runs`: one batch deduplication of a province, with its checkpoint (the blocks done),
  so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, LargeBinary, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class LinkModel(Base):
    __tablename__ = "link_models"

    version: Mapped[str] = mapped_column(String(40), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))          # configured | em
    parameters: Mapped[dict] = mapped_column(JSON)          # {"prior": p, "fields": {field: {level: {"m":, "u":}}}}
    thresholds: Mapped[dict] = mapped_column(JSON)          # {"certain": w, "probable": w, "possible": w}
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str | None] = mapped_column(String(200))  # e.g. "EM on 48,211 records of PK-PB" (counts only)


class LinkKey(Base):
    __tablename__ = "link_keys"

    # checked at commit: the registration check writes the keys with its lookup, before the
    # patient row (registry/linkage/lookup.py; migration 0038)
    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id", deferrable=True, initially="DEFERRED"),
                                                  primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # given | guardian
    custodian: Mapped[str] = mapped_column(String(32))
    bidx: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index(None, "bidx"),)  # a lookup probes exact values; kind and custodian are checked on the rows


class DedupeRun(Base):
    __tablename__ = "dedupe_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    province: Mapped[str] = mapped_column(String(32))
    model_version: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))          # running | done
    blocks_total: Mapped[int] = mapped_column(Integer, default=0)
    blocks_done: Mapped[list] = mapped_column(JSON)          # block labels (birth year-month, sex): no patient data
    pairs_scored: Mapped[int] = mapped_column(Integer, default=0)
    proposed: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "province", "status"),)


class LinkEncoding(Base):
    __tablename__ = "link_encodings"

    patient_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    custodian: Mapped[str] = mapped_column(String(32))
    block: Mapped[str] = mapped_column(String(24))
    clk: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # the node's feed position (node_feed.py): assigned under the custodian's feed lock, so rows
    # commit in feed order and a pull's cursor never passes a row still to commit (0: before 0043)
    feed_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (Index(None, "block", "custodian"),
                      Index(None, "created_at", "patient_id"),
                      Index(None, "custodian", "feed_seq", "patient_id"))  # a node's incremental pull (node_feed.py)
