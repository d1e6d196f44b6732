"""The benchmark database: schema, keys, a staff account, and a synthetic population loaded
through `COPY`.

Rows are built like `registry/demo/generator.py` builds them (same EPI schedule, delays and
dropouts, same names file) and encrypted and blind-indexed with the project's own codec
(`registry/patients/codec.py`), so the registry reads them exactly as it reads its own. The
load runs in one process per core, each writing its share with `COPY`; secondary indexes are
dropped during the load and rebuilt afterwards. Nothing here prints a name or an identifier.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psycopg

TABLES = ("patients", "patient_identifier_index", "immunizations", "audit_events")
BENCH_FACILITY = "F-LAH-02"  # the clinic account's facility (EPI Centre Shadman, Lahore)
# The health officials who read the coverage reports: the nation, the benchmark facility's
# province and its district, each reading the report of their own jurisdiction.
OFFICIALS = {"nation": "PK", "province": "PK-PB", "district": "PK-PB-LAH"}
# The upload workloads (bench/uploads.py) dose the children of one more clinic each round, so
# no round doses the children an earlier round dosed and every round judges the same kind of
# histories (each child of the benchmark facility had doses from every round before: the CPU
# a dose grew across rounds). Eight clinics: the warm-up and three rounds of the two workloads.
UPLOAD_CLINICS = 8
LOADER = "system:bench-loader"
# NADRA numbers begin with a province digit; 1-7 are used by the population, 8 and 9 by the
# registration workload, so a registration never collides with a loaded identifier.
_PROVINCE_DIGIT = {"PK-KP": "1", "PK-PB": "3", "PK-SD": "4", "PK-BA": "5", "PK-IS": "6", "PK-GB": "7"}


@dataclass
class Population:
    url: str                      # libpq URL of the benchmark database
    key_dir: str
    username: str
    password: str = field(repr=False)
    facility: str = BENCH_FACILITY
    patients: int = 0
    doses: int = 0
    load_seconds: float = 0.0
    read_ids: list[str] = field(default_factory=list, repr=False)      # patients of the clinic's facility
    any_ids: list[str] = field(default_factory=list, repr=False)       # patients anywhere (DB floor)
    bforms: list[str] = field(default_factory=list, repr=False)        # clear B-form numbers (search)
    bare_ids: list[str] = field(default_factory=list, repr=False)
    officials: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)  # level -> (username, password)
    rebuild_seconds: float = 0.0  # full rebuild of the coverage aggregates over the loaded doses
    seal_seconds: float = 0.0     # sealing the loaded audit events while the servers start
    # the upload workloads' clinics: (username, password, facility), their children, and (bench/uploads.py)
    # a token per server and facility and the next clinic to use
    upload_clinics: list[tuple[str, str, str]] = field(default_factory=list, repr=False)
    upload_ids: dict[str, list[str]] = field(default_factory=dict, repr=False)
    upload_tokens: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    upload_rounds: int = 0


def libpq(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def create_database(server_url: str, name: str) -> str:
    with psycopg.connect(libpq(server_url), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    base = libpq(server_url).rpartition("/")[0]
    return f"{base}/{name}"


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(libpq(server_url), autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings_for(url: str, key_dir: str):
    """Production-like settings: default argon2 parameters, long-lived tokens for the run."""
    from registry.settings import Settings

    return Settings(env="test", database_url=url, key_dir=key_dir, tokens={"ttl_seconds": 3600})


def prepare(url: str, key_dir: str, scale: int, *, procs: int = 2, seed: int = 1947, log=print) -> Population:
    """Initialise the database (the same `bootstrap.init` as `nhr init`), create the clinic
    account, load `scale` patients unless the database already has patients, and sample ids."""
    from registry import bootstrap
    from registry.runtime import Runtime
    from registry.users.schemas import UserCreate
    from registry.users.service import create_user

    rt = Runtime.build(settings_for(url, key_dir))
    rt.keyring.create_missing = True
    bootstrap.init(rt)
    username, password = f"bench.clinic.{secrets.token_hex(3)}", secrets.token_urlsafe(24)
    with rt.sessions.begin() as s:
        create_user(s, rt, UserCreate(username=username, display_name="Benchmark vaccinator", password=password,
                                      role="clinic_worker", scope_code=BENCH_FACILITY))
        officials = {}
        for level, code in OFFICIALS.items():
            officials[level] = (f"bench.{level}.{secrets.token_hex(3)}", secrets.token_urlsafe(24))
            create_user(s, rt, UserCreate(username=officials[level][0], display_name=f"Benchmark {level} official",
                                          password=officials[level][1], role="health_official", scope_code=code))
        clinics = []
        for code in _upload_facilities(s):
            clinics.append((f"bench.upload.{secrets.token_hex(3)}", secrets.token_urlsafe(24), code))
            create_user(s, rt, UserCreate(username=clinics[-1][0], display_name="Benchmark upload vaccinator",
                                          password=clinics[-1][1], role="clinic_worker", scope_code=code))
    pop = Population(libpq(url), key_dir, username, password, officials=officials, upload_clinics=clinics)
    existing = bootstrap.patient_count(rt)
    t0 = time.perf_counter()
    if existing == 0:
        pop.patients, pop.doses = load(pop.url, key_dir, scale, procs=procs, seed=seed, log=log)
    else:
        log(f"reusing the {existing} patients already in the database")
    pop.load_seconds = time.perf_counter() - t0
    _bare_table(pop.url, max(pop.patients, existing))
    pop.rebuild_seconds = rebuild_aggregates(rt)
    log(f"coverage aggregates rebuilt in {pop.rebuild_seconds:.1f}s")
    _sample(pop, rt)
    with psycopg.connect(pop.url) as c:
        pop.patients = c.execute("SELECT count(*) FROM patients").fetchone()[0]
        pop.doses = c.execute("SELECT count(*) FROM immunizations").fetchone()[0]
    rt.engine.dispose()
    return pop


def rebuild_aggregates(rt) -> float:
    """`nhr reports rebuild`'s code over the loaded doses (the loader bypasses the services, which
    would have kept the aggregates current); returns its wall time in seconds."""
    from registry.reports import aggregate

    t0 = time.perf_counter()
    with rt.sessions.begin() as s:
        aggregate.rebuild(s, date.today())
    seconds = time.perf_counter() - t0
    with psycopg.connect(libpq(rt.settings.database_url), autocommit=True) as c:
        c.execute("ANALYZE report_child_status, report_coverage_counts")
    return seconds


def seal_loaded_events(pop: Population) -> float:
    """Seal the loader's audit events (`nhr audit seal`'s code) so that the rounds start with a
    sealed log, as a registry in service has, and the sealing-lag probe sees only the run's own
    events. The runner calls it while the servers start (the registry's own sealer may take
    part: one sealer at a time holds the lock). Returns the wall time in seconds."""
    from registry.audit_log import sealing
    from registry.runtime import Runtime

    rt = Runtime.build(settings_for(pop.url, pop.key_dir))
    rt.load_keys()
    t0 = time.perf_counter()
    sealing.seal_all(rt)
    rt.engine.dispose()
    return time.perf_counter() - t0


def load(url: str, key_dir: str, scale: int, *, procs: int, seed: int, log=print) -> tuple[int, int]:
    with psycopg.connect(url) as c:
        facilities = c.execute("SELECT code, province, district FROM facilities ORDER BY code").fetchall()
        dropped = c.execute(
            "SELECT indexname, indexdef FROM pg_indexes i WHERE schemaname = 'public' AND tablename = ANY(%s) AND NOT EXISTS "
            "(SELECT 1 FROM pg_constraint k WHERE k.conindid = format('%%I.%%I', i.schemaname, i.indexname)::regclass)",
            [list(TABLES)]).fetchall()
        for name, _ in dropped:
            c.execute(f'DROP INDEX "{name}"')
    procs = max(1, min(procs, scale // 1000 or 1))
    chunks = [(url, key_dir, facilities, i, procs, scale, seed + i) for i in range(procs)]
    log(f"loading {scale} patients with {procs} process(es) through COPY ...")
    if procs == 1:
        results = [_load_share(chunks[0])]
    else:
        with mp.get_context("spawn").Pool(procs) as pool:
            results = pool.map(_load_share, chunks)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET maintenance_work_mem = '256MB'")
        for _, ddl in dropped:
            c.execute(ddl)
        c.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")
    return sum(r[0] for r in results), sum(r[1] for r in results)


def _load_share(args) -> tuple[int, int]:
    """One process: patients `i, i+procs, i+2*procs, ...` of the population."""
    url, key_dir, facilities, first, step, scale, seed = args
    from registry.demo.generator import LOADER_ID, load_names, synthetic_doses
    from registry.patients import codec
    from registry.runtime import Runtime

    rt = Runtime.build(settings_for(url, key_dir))
    rt.load_keys()
    rng = random.Random(seed)
    names = load_names()
    today, now = date.today(), datetime.now(UTC)
    cols = {t: _columns(t) for t in TABLES}
    n_pat = n_dose = 0
    with psycopg.connect(url) as conn:
        try:
            conn.execute("SET session_replication_role = replica")  # consistent by construction: skip FK triggers
        except psycopg.Error:
            conn.rollback()
        batch: dict[str, list] = {t: [] for t in TABLES}
        for n in range(first, scale, step):
            code, province, district = facilities[n % len(facilities)]
            pid = uuid.UUID(int=rng.getrandbits(128), version=4)
            sex = "female" if rng.random() < 0.49 else "male"
            family = rng.choice(names["family"])
            birth = today - timedelta(days=rng.randrange(0, 3 * 365))
            digit = _PROVINCE_DIGIT.get(province, "2")
            plain = {
                "given_name": rng.choice(names["female_given" if sex == "female" else "male_given"]),
                "family_name": family, "guardian_name": rng.choice(names["female_given"]) + " " + family,
                "guardian_cnic": f"{digit}{rng.randrange(10**12):012d}",
                "phone": f"+923{rng.randrange(0, 50):02d}{rng.randrange(10**7):07d}",
                "address": f"{rng.choice(names['streets'])}, {rng.choice(names['localities'])}",
                "health_id": _health_id(rng), "bform": f"{digit}{rng.randrange(10**12):012d}" if rng.random() < 0.6 else None,
                "cnic": None,
            }
            created = now - timedelta(seconds=scale - n)
            row = {"id": pid, "version": 1, "custodian": province, "province": province, "district": district,
                   "home_facility": code, "sex": sex, "birth_date": birth, "guardian_relationship": "mother",
                   "created_at": created, "updated_at": created, "created_by": LOADER_ID, "unnamed": False, "merged_into": None,
                   "birth_facility": None, **codec.encrypt_fields(rt.cipher, province, pid, {c: plain.get(c) for c in codec.ENCRYPTED})}
            batch["patients"].append(tuple(row[c] for c in cols["patients"]))
            for ix in codec.index_rows(rt.indexer, province, pid, plain):
                batch["patient_identifier_index"].append(tuple(ix[c] for c in cols["patient_identifier_index"]))
            given = 0
            for dose_id, vaccine, dose, when, lot in synthetic_doses(rng, birth, today):
                batch["immunizations"].append((
                    dose_id, 1, pid, province, province, district, code,
                    vaccine, dose, when, lot, LOADER_ID, "completed", None, None, created))
                given += 1
            n_dose += given
            batch["audit_events"].append(_event(rt, rng, created, "patient.create", pid, code, province, district, {"via": "bench"}))
            if given:
                batch["audit_events"].append(_event(rt, rng, created, "immunization.create", pid, code, province, district,
                                                    {"count": given, "via": "bench"}))
            n_pat += 1
            if len(batch["patients"]) >= 5000:
                _flush(conn, cols, batch)
        _flush(conn, cols, batch)
    rt.engine.dispose()
    return n_pat, n_dose


DOSE_COLUMNS = ("id", "version", "patient_id", "custodian", "province", "district", "facility", "vaccine", "dose_number",
                "date_given", "lot_number", "performer_id", "status", "status_reason_ct", "supersedes_id", "recorded_at")
AUDIT_COLUMNS = ("id", "occurred_at", "request_id", "client_address", "actor_user_id", "actor_username", "actor_role",
                 "actor_scope_level", "actor_scope_code", "actor_province", "actor_district", "action", "resource_type",
                 "resource_id", "patient_id", "patient_province", "patient_district", "outcome", "purpose_of_use",
                 "break_glass", "break_glass_reason", "outside_capture_scope", "detail", "mac")


def _columns(table: str) -> tuple[str, ...]:
    if table == "immunizations":
        return DOSE_COLUMNS
    if table == "audit_events":
        return AUDIT_COLUMNS
    from registry.patients.models import Patient, PatientIdentifierIndex

    model = Patient if table == "patients" else PatientIdentifierIndex
    return tuple(c.name for c in model.__table__.columns)


def _event(rt, rng, at, action, pid, code, province, district, detail: dict) -> tuple:
    """One loader event as a COPY row, with its MAC computed by the registry's own code
    (security/audit/event_mac.py, the runtime's key), so the sealer vouches for it rather than
    quarantining it. No subject rows are written, as for the demo loader: the MAC covers none."""
    from registry.demo.generator import LOADER_ID

    values = (uuid.UUID(int=rng.getrandbits(128), version=4), at, "bench-load", "cli", LOADER_ID, LOADER, "system",
              "facility", code, province, district, action, "Patient" if action == "patient.create" else "Immunization",
              str(pid), pid, province, district, "success", "HSYSADMIN", False, None, False, detail)
    row = rt.event_mac.sign(dict(zip(AUDIT_COLUMNS[:-1], values)))
    return (*values[:-1], json.dumps(detail), row["mac"])


def _health_id(rng: random.Random) -> str:
    from registry.identifiers import format_health_id, verhoeff_check_digit

    body = f"{rng.randrange(10**11):011d}"
    return format_health_id(body + verhoeff_check_digit(body))


def _flush(conn, cols: dict, batch: dict) -> None:
    with conn.cursor() as cur:
        for table in TABLES:
            rows = batch[table]
            if not rows:
                continue
            names = ", ".join(f'"{c}"' for c in cols[table])
            with cur.copy(f"COPY {table} ({names}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
            rows.clear()
    conn.commit()


def _bare_table(url: str, rows: int) -> None:
    """The bare baseline's table: the same clinical shape in clear, no encryption, no index table."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS bench_bare_rows")
        c.execute("CREATE TABLE bench_bare_rows (id uuid PRIMARY KEY, version int NOT NULL, given_name text, family_name text,"
                  " guardian_name text, phone text, address text, bform text, sex text, birth_date date, district text,"
                  " home_facility text, created_at timestamptz NOT NULL)")
        c.execute("INSERT INTO bench_bare_rows SELECT gen_random_uuid(), 1, 'Given' || i, 'Family' || i, 'Guardian' || i,"
                  " '+923000000000', 'Street ' || i, lpad(i::text, 13, '0'), 'female', current_date - (i %% 1000),"
                  " 'PK-PB-LAH', %s, now() FROM generate_series(1, %s) i", [BENCH_FACILITY, rows])
        c.execute("VACUUM (ANALYZE) bench_bare_rows")


def _upload_facilities(session) -> list[str]:
    """UPLOAD_CLINICS facilities other than the benchmark facility, those of its district first."""
    from sqlalchemy import text

    return list(session.execute(text(
        "SELECT code FROM facilities WHERE code <> :bench ORDER BY district = :district DESC, code LIMIT :n"),
        {"bench": BENCH_FACILITY, "district": OFFICIALS["district"], "n": UPLOAD_CLINICS}).scalars())


def _sample(pop: Population, rt, n: int = 2000, clinic_children: int = 50_000) -> None:
    """Ids to read, and clear B-form numbers to search for (decrypted with the codec, kept in memory).
    `read_ids` holds up to `clinic_children` of the clinic's facility: the upload workloads give
    each of them doses, and a short list would give the same children a dose in upload after
    upload, judging ever longer histories (bench/RESULTS.md 2026-12-03 14:02)."""
    from registry.patients import codec

    with psycopg.connect(pop.url) as c:
        pop.read_ids = [str(r[0]) for r in c.execute(
            "SELECT id FROM patients WHERE home_facility = %s ORDER BY random() LIMIT %s", [pop.facility, clinic_children])]
        for _, _, code in pop.upload_clinics:
            pop.upload_ids[code] = [str(r[0]) for r in c.execute(
                "SELECT id FROM patients WHERE home_facility = %s ORDER BY random() LIMIT %s", [code, clinic_children])]
        pop.upload_clinics = [c_ for c_ in pop.upload_clinics if pop.upload_ids[c_[2]]]
        pop.any_ids = [str(r[0]) for r in c.execute("SELECT id FROM patients ORDER BY random() LIMIT %s", [n])]
        pop.bare_ids = [str(r[0]) for r in c.execute("SELECT id FROM bench_bare_rows ORDER BY random() LIMIT %s", [n])]
        rows = c.execute("SELECT id, custodian, bform_ct FROM patients WHERE bform_ct IS NOT NULL ORDER BY random() LIMIT %s",
                         [n]).fetchall()
    rt.load_keys()
    for pid, custodian, blob in rows:
        row = type("Row", (), {"id": pid, "custodian": custodian, "bform_ct": blob})
        pop.bforms.append(codec.decrypt_column(rt.cipher, row, "bform"))
    if not pop.read_ids or not pop.bforms:
        raise RuntimeError("the population is too small: no patient at the benchmark facility or none with a B-form")
