"""Baselines measured in the same run as the registry (DESIGN.md section 6).

- `trivial_app`: a FastAPI JSON endpoint and nothing else, served by uvicorn with the same
  settings as the registry (the HTTP floor).
- `bare_app`: FastAPI + SQLAlchemy ORM, reading and inserting one row by id in a plain table of
  the same database (`bench_bare_rows`), with no encryption, access check or audit. Like the
  registry, its routes are synchronous and use one session (one transaction) per request.
- `pg_select_floor`: raw psycopg primary-key selects on `patients`, several threads.
- `copy_floor`: raw `COPY` of dose-shaped rows into a scratch copy of `immunizations`.

The two apps are imported by uvicorn workers as `bench.baselines:trivial_app` and
`bench.baselines:bare_app`; the bare app reads its database URL from `NHR_BENCH_BARE_URL`.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from datetime import UTC, date, datetime

import psycopg
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import Date, DateTime, Integer, String, Uuid, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

trivial_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@trivial_app.get("/")
async def trivial():
    return {"status": "ok"}


@trivial_app.get("/healthz")
async def trivial_health():
    return {"status": "ok"}


bare_app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
_bare: dict = {}
_bare_lock = threading.Lock()


class _BareBase(DeclarativeBase):
    pass


class BareRow(_BareBase):
    __tablename__ = "bench_bare_rows"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    given_name: Mapped[str | None] = mapped_column(String)
    family_name: Mapped[str | None] = mapped_column(String)
    guardian_name: Mapped[str | None] = mapped_column(String)
    phone: Mapped[str | None] = mapped_column(String)
    address: Mapped[str | None] = mapped_column(String)
    bform: Mapped[str | None] = mapped_column(String)
    sex: Mapped[str | None] = mapped_column(String)
    birth_date: Mapped[date | None] = mapped_column(Date)
    district: Mapped[str | None] = mapped_column(String)
    home_facility: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _bare_sessions():
    with _bare_lock:
        if "sessions" not in _bare:
            url = os.environ["NHR_BENCH_BARE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
            engine = create_engine(url, pool_size=10, max_overflow=10, pool_recycle=1800)  # the registry's pool settings
            _bare["sessions"] = sessionmaker(engine, expire_on_commit=False)
    return _bare["sessions"], BareRow


class BareIn(BaseModel):
    given_name: str
    family_name: str | None = None
    sex: str
    birth_date: date
    bform: str | None = None
    phone: str | None = None
    address: str | None = None


def _bare_view(r) -> dict:
    return {"id": r.id, "version": r.version, "given_name": r.given_name, "family_name": r.family_name,
            "guardian_name": r.guardian_name, "phone": r.phone, "address": r.address, "bform": r.bform, "sex": r.sex,
            "birth_date": r.birth_date, "district": r.district, "home_facility": r.home_facility, "created_at": r.created_at}


@bare_app.get("/healthz")
def bare_health():
    return {"status": "ok"}


@bare_app.get("/rows/{row_id}")
def bare_read(row_id: uuid.UUID):
    sessions, Row = _bare_sessions()
    with sessions.begin() as s:
        r = s.get(Row, row_id)
        if r is None:
            raise HTTPException(404)
        return _bare_view(r)


@bare_app.post("/rows", status_code=201)
def bare_insert(body: BareIn):
    sessions, Row = _bare_sessions()
    with sessions.begin() as s:
        r = Row(id=uuid.uuid4(), version=1, district="PK-PB-LAH", home_facility="F-LAH-02", created_at=datetime.now(UTC),
                **body.model_dump())
        s.add(r)
    return _bare_view(r)


def pg_select_floor(url: str, ids: list[str], duration: float, threads: int = 4) -> dict:
    """Primary-key selects of whole patient rows, prepared, one connection per thread."""
    counts, lat = [0] * threads, [[] for _ in range(threads)]
    stop = time.perf_counter() + duration

    def loop(i: int) -> None:
        rng = random.Random(i)
        with psycopg.connect(url, autocommit=True) as c:
            cur = c.cursor()
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    break
                cur.execute("SELECT * FROM patients WHERE id = %s", [rng.choice(ids)], prepare=True)
                cur.fetchone()
                lat[i].append(time.perf_counter() - t0)
                counts[i] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return _summary(sum(counts), elapsed, [x for part in lat for x in part], unit="selects")


def copy_floor(url: str, duration: float, batch: int = 10_000) -> dict:
    """`COPY` of dose-shaped rows, in batches of `batch` committed one by one, into a scratch
    table shaped like `immunizations` (same columns and indexes, no foreign keys)."""
    rng = random.Random(7)
    performer, patients = uuid.uuid4(), [uuid.uuid4() for _ in range(500)]
    today = date.today()
    rows = [(uuid.uuid4(), 1, rng.choice(patients), "PK-PB", "PK-PB", "PK-PB-LAH", "F-LAH-02", "PENTA", 1 + i % 3, today,
             "PN2026-114", performer, "completed", None, None, datetime.now(UTC)) for i in range(batch)]
    cols = ("id, version, patient_id, custodian, province, district, facility, vaccine, dose_number, date_given, "
            "lot_number, performer_id, status, status_reason_ct, supersedes_id, recorded_at")
    done, lat = 0, []
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS bench_copy_doses")
        c.execute("CREATE TABLE bench_copy_doses (LIKE immunizations INCLUDING ALL)")
        c.autocommit = False
        start = time.perf_counter()
        while time.perf_counter() - start < duration:
            t0 = time.perf_counter()
            with c.cursor() as cur, cur.copy(f"COPY bench_copy_doses ({cols}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row((uuid.uuid4(),) + r[1:])
            c.commit()
            lat.append(time.perf_counter() - t0)
            done += len(rows)
        elapsed = time.perf_counter() - start
        c.autocommit = True
        c.execute("DROP TABLE bench_copy_doses")
    out = _summary(done, elapsed, lat, unit="rows")
    out["batch"] = batch
    return out


def _summary(n: int, elapsed: float, latencies: list[float], *, unit: str) -> dict:
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"rate": n / elapsed if elapsed else 0.0, "requests": n, "unit": unit, "seconds": elapsed,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": 0}
