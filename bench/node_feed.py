"""The comparer's pull of a province node's encodings feed, on PostgreSQL (issue 13 item 7).

Since migration 0043 the feed is encodings *and* tombstones in one order (registry/linkage/
node_feed.py: a UNION ALL of two keyset reads, each by its own index, ordered and limited again).
Before, it was one keyset read of `link_encodings` by (created_at, patient id). This times a full
pull, in pages of 1,000 as the comparer asks, both ways on the same tables in the same run (A:
the read before 0043, B: node_feed.page), rounds interleaved A, B, A, B..., and the cost of one
encoding page's write under the feed lock (node_feed.write: the counter UPDATE, the deletes and the
insert of 1,000 rows) against the same write without the counter (the insert alone, as before).

    python -m bench.node_feed --url postgresql://postgres@127.0.0.1:5432/nhr_bench_feed --size 50000 --rounds 5

The database is emptied and filled by the run (tables of their own, no foreign key to patients:
only the feed is measured). Prints the medians and the ratios B/A.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, create_engine, delete, insert, or_, select, text
from sqlalchemy.orm import sessionmaker

from registry.linkage import node_feed

DDL = """
DROP TABLE IF EXISTS link_encodings, link_encoding_tombstones, link_feed_counters;
CREATE TABLE link_encodings (patient_id uuid PRIMARY KEY, custodian varchar(32) NOT NULL, block varchar(24) NOT NULL,
  clk bytea NOT NULL, created_at timestamptz NOT NULL, feed_seq bigint NOT NULL DEFAULT 0);
CREATE INDEX ON link_encodings (block, custodian);
CREATE INDEX ON link_encodings (created_at, patient_id);
CREATE INDEX ON link_encodings (custodian, feed_seq, patient_id);
CREATE TABLE link_encoding_tombstones (patient_id uuid PRIMARY KEY, custodian varchar(32) NOT NULL,
  feed_seq bigint NOT NULL, created_at timestamptz NOT NULL);
CREATE INDEX ON link_encoding_tombstones (custodian, feed_seq, patient_id);
CREATE TABLE link_feed_counters (custodian varchar(32) PRIMARY KEY, seq bigint NOT NULL);
"""
ENC, PAGE, P = node_feed.ENC, 1000, "PK-PB"


def _fill(sessions, size: int) -> None:
    start = datetime(2026, 12, 3, tzinfo=UTC)
    for i in range(0, size, PAGE):
        rows = [{"patient_id": uuid.uuid4(), "custodian": P, "block": "2026:female", "clk": os.urandom(65),
                 "created_at": start + timedelta(microseconds=i + j)} for j in range(min(PAGE, size - i))]
        with sessions.begin() as s:
            node_feed.write(s, P, rows, [], rows[0]["created_at"])
    with sessions.begin() as s:  # 1% of the records removed since (tombstones)
        gone = list(s.execute(select(ENC.c.patient_id).order_by(ENC.c.patient_id).limit(size // 100)).scalars())
        node_feed.write(s, P, [], gone, start)


def _pull_before(sessions) -> int:
    after, n = None, 0
    while True:
        q = (select(ENC.c.patient_id, ENC.c.block, ENC.c.clk, ENC.c.created_at).where(ENC.c.custodian == P)
             .order_by(ENC.c.created_at, ENC.c.patient_id).limit(PAGE))
        if after is not None:
            q = q.where(or_(ENC.c.created_at > after[0], and_(ENC.c.created_at == after[0], ENC.c.patient_id > after[1])))
        with sessions() as s:
            rows = s.execute(q).all()
        n += len(rows)
        if len(rows) < PAGE:
            return n
        after = (rows[-1].created_at, rows[-1].patient_id)


def _pull_feed(sessions) -> int:
    after, n = None, 0
    while True:
        with sessions() as s:
            rows = node_feed.page(s, P, after, PAGE)
        n += len(rows)
        if len(rows) < PAGE:
            return n
        after = (rows[-1].seq, rows[-1].id)


def _write_page(sessions, locked: bool) -> None:
    now = datetime.now(UTC)
    rows = [{"patient_id": uuid.uuid4(), "custodian": P, "block": "2025:male", "clk": os.urandom(65), "created_at": now}
            for _ in range(PAGE)]
    with sessions.begin() as s:
        if locked:
            node_feed.write(s, P, rows, [], now)
        else:
            ids = [r["patient_id"] for r in rows]
            s.execute(delete(ENC).where(ENC.c.patient_id.in_(ids)))
            s.execute(insert(ENC), rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--size", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    engine = create_engine(args.url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as c:
        c.execute(text(DDL))
    sessions = sessionmaker(engine)
    _fill(sessions, args.size)
    with engine.begin() as c:
        c.execute(text("ANALYZE"))
    times = {"pull before": [], "pull feed": [], "write before": [], "write locked": []}
    for _ in range(args.rounds):
        for name, fn in (("pull before", lambda: _pull_before(sessions)), ("pull feed", lambda: _pull_feed(sessions)),
                         ("write before", lambda: _write_page(sessions, False)),
                         ("write locked", lambda: _write_page(sessions, True))):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.size} encodings, {args.size // 100} tombstones, pages of {PAGE}, {args.rounds} interleaved rounds, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| measure | median s | ratio B/A |\n|---|---|---|")
    print(f"| full pull, before 0043 (A) | {med['pull before']:.3f} | |")
    print(f"| full pull, the feed (B) | {med['pull feed']:.3f} | {med['pull feed'] / med['pull before']:.2f} |")
    print(f"| write of 1,000 encodings, before (A) | {med['write before']:.4f} | |")
    print(f"| write of 1,000 encodings, under the feed lock (B) | {med['write locked']:.4f} | "
          f"{med['write locked'] / med['write before']:.2f} |")
    engine.dispose()


if __name__ == "__main__":
    main()
