"""Import runs and export jobs.

Invariants:
- An import run is keyed by (file SHA-256, facility): rerunning the same file for the same
  facility continues the same run. `rows_done` only advances in the transaction that commits
  a chunk's records, its audit event and its rejected rows, so after any interruption the run
  restarts exactly after the last committed chunk.
- Rejected rows are kept as (row number, field, reason code): never a submitted value.
- An export job holds no patient data at rest: only the snapshot (`bulk_export_items`: ids of
  the resources in scope at `transaction_time`). The NDJSON is generated, decrypted and mapped
  at download time, under the same scope, and never written to disk.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from security.orm import Base, UTCDateTime


class ImportRun(Base):
    __tablename__ = "import_runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    file_sha256: Mapped[str] = mapped_column(String(64))
    file_format: Mapped[str] = mapped_column(String(24))  # csv-patients | csv-doses | fhir-ndjson | fhir-bundle
    facility: Mapped[str] = mapped_column(ForeignKey("facilities.code"))
    custodian: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    username: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(64))  # the OS account that ran `nhr import`
    chunk_size: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # running | completed
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    imported: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("file_sha256", "facility"),)


class ImportRowError(Base):
    __tablename__ = "import_row_errors"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("import_runs.id"), primary_key=True)
    row: Mapped[int] = mapped_column(Integer, primary_key=True)
    field: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(48))


class ExportJob(Base):
    __tablename__ = "bulk_export_jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    scope_level: Mapped[str] = mapped_column(String(16))
    scope_code: Mapped[str] = mapped_column(String(32))
    types: Mapped[list] = mapped_column(JSON)
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    request_url: Mapped[str] = mapped_column(String(500))
    transaction_time: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))  # running | completed | cancelled
    cursor: Mapped[dict] = mapped_column(JSON)  # snapshot progress: {type: last id} (ids, never values)
    counts: Mapped[dict] = mapped_column(JSON)  # {type: number of resources}
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ExportItem(Base):
    """One resource of an export's snapshot; `seq` numbers them per type, so file n of a type is
    the items with seq in [n * file_size, (n + 1) * file_size)."""

    __tablename__ = "bulk_export_items"

    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("bulk_export_jobs.id"), primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(16), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    patient_id: Mapped[uuid.UUID] = mapped_column(Uuid)

