"""How an upload's rows reach PostgreSQL: one statement against one COPY per table (issue 17).

The event-loop uploads (registry/sync/batch_async.py, registry/fhir/bundle_async.py) write all
their tables in ONE statement: each table an `INSERT ... SELECT FROM json_populate_recordset(...)`
as a data-modifying CTE (registry/bulk/writer.py `insert_many_sql`), one round trip. Issue 17
names "one COPY per table"; COPY cannot share a statement or a pipeline, so it costs a round trip
a table. This measures both on upload-shaped batches, interleaved, on scratch tables of the
shapes the upload writes (doses, audit events, event subjects, receipts), each batch its own
transaction on one async connection:

    python -m bench.upload_writes                      # 50 rows a table, 4 tables, 5 rounds x 200 batches
    python -m bench.upload_writes --rows 500 --tables 2

Reports, per arm: wall time a batch, the client's CPU a batch (this process) and the server's
(the backend's /proc CPU, so PostgreSQL must run on this machine), and their ratios. Nothing is
kept: the scratch tables are temporary. No patient data: the rows are random bytes and ids.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import statistics
import time
import uuid
from datetime import UTC, date, datetime

import psycopg

from registry.bulk.writer import _JSON

SHAPES = {  # the upload's tables, reduced to the columns that carry its weight
    "doses": [("id", "uuid"), ("patient_id", "uuid"), ("vaccine", "text"), ("dose_number", "int"),
              ("date_given", "date"), ("facility", "text"), ("data_ct", "bytea"), ("created_at", "timestamptz")],
    "events": [("id", "uuid"), ("occurred_at", "timestamptz"), ("actor", "uuid"), ("action", "text"),
               ("outcome", "text"), ("resource_id", "uuid"), ("detail", "jsonb"), ("mac", "bytea")],
    "subjects": [("event_id", "uuid"), ("patient_id", "uuid")],
    "receipts": [("id", "uuid"), ("device", "text"), ("result", "text"), ("created_at", "timestamptz")],
}


def _row(table: str) -> dict:
    now = datetime.now(UTC)
    make = {"uuid": lambda: uuid.uuid4(), "text": lambda: secrets.token_hex(6), "int": lambda: 1,
            "date": lambda: date(2026, 12, 3), "bytea": lambda: secrets.token_bytes(96),
            "timestamptz": lambda: now, "jsonb": lambda: '{"reason": "bench"}'}
    return {c: make[t]() for c, t in SHAPES[table]}


def _statement(tables: list[str], batch: dict[str, list[dict]]) -> tuple[str, list]:
    inserts, params = [], []
    for t in tables:
        names = ", ".join(c for c, _ in SHAPES[t])
        inserts.append(f"INSERT INTO {t} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{t}, %s)")
        params.append(_JSON.encode(batch[t]))
    sql = inserts[-1] if len(inserts) == 1 else (
        "WITH " + ", ".join(f"w{i} AS ({q})" for i, q in enumerate(inserts[:-1])) + " " + inserts[-1])
    return sql, params


async def _one_statement(conn, tables, batch) -> None:
    sql, params = _statement(tables, batch)
    async with conn.transaction():
        await conn.execute(sql, params)


async def _copies(conn, tables, batch) -> None:
    async with conn.transaction():
        async with conn.cursor() as cur:
            for t in tables:
                names = [c for c, _ in SHAPES[t]]
                async with cur.copy(f"COPY {t} ({', '.join(names)}) FROM STDIN") as copy:
                    for r in batch[t]:
                        await copy.write_row([r[c] for c in names])


def _backend_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _main(args) -> None:
    tables = list(SHAPES)[:args.tables]
    async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as conn:
        for t in tables:
            cols = ", ".join(f"{c} {ty}" for c, ty in SHAPES[t])
            await conn.execute(f"CREATE TEMPORARY TABLE {t} ({cols})")
        backend = (await (await conn.execute("SELECT pg_backend_pid()")).fetchone())[0]
        arms = {"one statement": _one_statement, "one COPY a table": _copies}
        got: dict[str, list[tuple[float, float, float]]] = {a: [] for a in arms}
        for rnd in range(args.rounds):
            for name in (list(arms) if rnd % 2 == 0 else list(reversed(arms))):
                batches = [{t: [_row(t) for _ in range(args.rows)] for t in tables} for _ in range(args.batches)]
                await arms[name](conn, tables, batches[0])  # warm
                w0, c0, s0 = time.perf_counter(), _own_cpu(), _backend_cpu(backend)
                for b in batches:
                    await arms[name](conn, tables, b)
                n = len(batches)
                got[name].append(((time.perf_counter() - w0) / n, (_own_cpu() - c0) / n, (_backend_cpu(backend) - s0) / n))
            for t in tables:
                await conn.execute(f"TRUNCATE {t}")
    print(f"{args.rows} rows a table, {len(tables)} tables ({', '.join(tables)}), {args.rounds} rounds x {args.batches} batches")
    med = {a: [statistics.median(x[i] for x in v) * 1e6 for i in range(3)] for a, v in got.items()}
    for a, (wall, client, server) in med.items():
        print(f"  {a:18} wall {wall:8.0f} us a batch   client CPU {client:7.0f} us   server CPU {server:7.0f} us")
    (w1, c1, s1), (w2, c2, s2) = med["one statement"], med["one COPY a table"]
    print(f"  COPY / statement:  wall {w2 / w1:.2f}   client CPU {c2 / c1:.2f}   server CPU {s2 / s1:.2f}   "
          f"CPU together {(c2 + s2) / (c1 + s1):.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--rows", type=int, default=50, help="rows a table a batch (default 50: a batch upload)")
    ap.add_argument("--tables", type=int, default=4, choices=range(1, len(SHAPES) + 1))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=200)
    asyncio.run(_main(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
