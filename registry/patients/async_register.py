"""Registration on the event loop (issue 17): `service.register` on the async unit of work
(registry/async_unit.py), PostgreSQL only; on SQLite `register_async` runs `service.register` in
a worker thread. Same checks in the same order, same refusals and events, same rows.

Round trips (the sync path makes 8-9, each a thread hand-off):
1. BEGIN, the advisory locks of the patient's own identifiers (`repository.lock_identifier`'s
   keys) and the taking of a ready access code from the pool (registry/citizens/code_pool.py: the
   row is deleted in this transaction; a rollback puts it back), one message;
2. one read (`_reads`): the patients holding the blind-index values of those identifiers and of
   the new health ID (the exact-identifier uniqueness check), the registration check's
   blocking-key candidates (registry/linkage's own statement), and a client-chosen id if taken;
   (an empty pool: the code is hashed here, on the loop, inside the transaction; before the pool
   it was hashed before BEGIN)
3. one write (`_write`): the patient, its blind-index rows, its access code, the dirty-patient
   mark, its blocking keys, the candidate pairs for the stewards and the audit event with its
   subjects, as data-modifying CTEs;
4. COMMIT, by the unit of work (after the Idempotency-Key's stored response, when there is one).

Refusals are booked on the trail, not written: the unit of work rolls back and writes them, as
for every refusal (api/deps.py). A birth facility costs one more read, a taken health ID (one in
1e11) one more read per retry.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import uuid
import weakref
from datetime import UTC, datetime
from functools import lru_cache
from types import SimpleNamespace

from anyio import to_thread
from sqlalchemy import ARRAY, BigInteger, Integer, String, Uuid, any_, bindparam, cast, func, insert, literal, null, select, union_all

from registry import identifiers
from registry.async_database import Compiled
from registry.async_unit import AsyncUnit
from registry.audit_log import async_events
from registry.citizens import code_pool
from registry.citizens import codes as access_codes
from registry.citizens.repository import CODES
from registry.context import ServiceContext
from registry.errors import Conflict, Forbidden, InvalidInput
from registry.facilities.models import Facility
from registry.linkage import lookup as linkage_lookup
from registry.linkage import records as linkage_records
from registry.linkage import repository as linkage_repo
from registry.linkage import service as linkage
from registry.patients import codec, newborns
from registry.patients import service as svc
from registry.patients.repository import INDEX, PATIENTS
from registry.patients.schemas import PatientCreate, PatientRegistered
from registry.reports.models import DirtyPatient
from security.audit import trail as audit
from security.audit.trail import PatientRef

ACTION = "patient.create"
DIRTY = DirtyPatient.__table__
FACILITIES = Facility.__table__
_OWN = ("bform", "cnic")  # the identifiers that must be unique (not the guardian's)


async def register_async(ctx: ServiceContext, data: PatientCreate) -> PatientRegistered:
    if ctx.unit is None:
        return await to_thread.run_sync(svc.register, ctx, data)
    return await _register(ctx, ctx.unit, data)


def _refuse(ctx: ServiceContext, exc: Exception, outcome: str, **event):
    """Book the refusal's event (the unit of work writes it after its rollback) and raise."""
    async_events.book_refusal(ctx.trail, ACTION, outcome, **event)
    raise exc


async def _register(ctx: ServiceContext, unit: AsyncUnit, data: PatientCreate) -> PatientRegistered:
    p, rt = ctx.principal, ctx.runtime
    if p.facility is None:
        _refuse(ctx, Forbidden("only staff bound to a facility can register patients"), audit.DENIED,
                detail={"reason": "not bound to a facility"})
    pooled = rt.settings.citizen.code_pool_size > 0
    if not pooled:
        access_code, code_hash = access_codes.issue(rt.code_hasher)
    try:
        province, district = svc.residence_of(ctx, await _jurisdiction(rt, data.district or p.scope.district))
    except InvalidInput as exc:
        _refuse(ctx, exc, audit.INVALID, detail={"field": "district"})
    custodian = p.scope.province
    patient_id = data.id or uuid.uuid4()
    raw = data.model_dump()
    refused = newborns.guardian_refusal(raw.get("guardian")) if raw.get("unnamed") else None
    if refused is None and data.birth_facility is not None and not await unit.all(_FACILITY, {"code": data.birth_facility}):
        refused = InvalidInput("must be the code of a registered facility", field="birth_facility")
    if refused is not None:
        _refuse(ctx, refused, audit.INVALID, detail={"field": refused.field})
    plain = svc.plaintext_columns(raw)
    own = {c: identifiers.normalise(codec.INDEXED[c], plain[c]) for c in _OWN if plain.get(c)}
    locks = [_lock_key(rt.keyring, codec.INDEXED[c], n) for c, n in own.items()]
    first = await unit.begin(_first(len(locks), pooled), {f"k{i}": k for i, k in enumerate(locks)}) if locks or pooled \
        else await unit.begin()
    if pooled:  # the pool row is the last result; nothing taken: hash one now
        taken = first[-1]
        access_code, code_hash = code_pool.issued_from(rt.keyring, rt.code_hasher, taken[0] if taken else None)
    rec = _linkage_record(ctx, data, plain, province, district) if rt.settings.linkage_check else None
    want = _link_keys(rt, rec)
    hid = identifiers.new_health_id()
    for attempt in range(8):
        wanted = {c: (codec.INDEXED[c], n) for c, n in own.items()} if attempt == 0 else {}
        wanted["health_id"] = (identifiers.HEALTH_ID_SYSTEM, identifiers.normalise(identifiers.HEALTH_ID_SYSTEM, hid))
        by_custodian = {c: rt.indexer.for_all_custodians(s, n) for c, (s, n) in wanted.items()}
        rows = await unit.all(_reads(p.scope, p.search_scope), {
            "id_systems": sorted({s for s, _ in wanted.values()}),
            "id_bidx": _int_array({b for m in by_custodian.values() for b in m.values()}),
            "bidx": _int_array({v for _, _, v in want} if attempt == 0 else ()), "pid": patient_id})
        ident = [r for r in rows if r.arm == "ident"]
        if attempt == 0:
            taken = _identifier_taken(ctx, own, wanted, by_custodian, ident)
            if taken is not None:
                _refuse(ctx, taken[0], audit.CONFLICT, **taken[1])
            if data.id is not None and any(r.arm == "id" for r in rows):
                exc, event = _id_taken(patient_id)
                _refuse(ctx, exc, audit.CONFLICT, **event)
            found = await _link_candidates(ctx, rec, [r for r in rows if r.arm == "link"], want, data.confirm_not_duplicate)
        system, norm = wanted["health_id"]
        if not _confirmed(ctx, ident, system, norm, by_custodian["health_id"]):
            break
        hid = identifiers.new_health_id()
    else:  # pragma: no cover - 1e11 id space
        raise RuntimeError("could not allocate a unique health ID")
    plain["health_id"] = hid
    now = datetime.now(UTC)
    model = (linkage.models.cached() or await _model(rt)) if rec is not None and found else None
    row, index, code, keys, pairs, event = _new_rows(ctx, data, patient_id, (custodian, province, district), plain,
                                                     rec, found, model, code_hash, now)
    await unit.execute(_write(tuple(row), len(index), len(keys), len(pairs)),
                       _write_values(row, index, code, keys, pairs, event, unit.db.event_mac))
    ctx.trail.written(event, [])
    view = codec.to_view(rt.cipher, SimpleNamespace(**row))
    return PatientRegistered.model_construct(**view.__dict__, access_code=access_code)


def _identifier_taken(ctx: ServiceContext, own: dict, wanted: dict, by_custodian: dict, ident: list):
    """The uniqueness check of the patient's own identifiers, in the sync path's order, over the
    `ident` rows read: None, or (the Conflict to raise, its event's fields) for the first taken."""
    for column in own:
        system, norm = wanted[column]
        if _confirmed(ctx, ident, system, norm, by_custodian[column]):
            return (Conflict(f"a patient with this {svc._LABEL[column]} is already registered; find it by "
                             "identifier search", field=column),
                    {"detail": {"identifier_system": system, "reason": "duplicate"}})
    return None


def _id_taken(patient_id: uuid.UUID) -> tuple[Conflict, dict]:
    """A client-chosen id that exists: (the Conflict to raise, its event's fields)."""
    return Conflict("a patient with this id already exists", field="id"), {"resource_id": patient_id,
                                                                           "detail": {"reason": "id exists"}}


def _new_rows(ctx: ServiceContext, data: PatientCreate, patient_id: uuid.UUID, where: tuple[str, str, str], plain: dict,
              rec: dict | None, found: list, model, code_hash: str, now: datetime):
    """A registration's rows, once every check passed: (patient row, blind-index rows, access
    code row, blocking-key rows, candidate pairs, success event built by the trail). `where`:
    (custodian, province, district); `model`: the linkage model when there are candidates."""
    p, rt = ctx.principal, ctx.runtime
    custodian, province, district = where
    row = svc.new_row(rt.cipher, p, data, patient_id, custodian, province, district, plain, now)
    detail = {"access_code_issued": True, **({"unnamed": True} if data.unnamed else {})}
    pairs, keys = [], []
    if rec is not None:
        keys = linkage_records.key_rows(rt.indexer, custodian, patient_id, rec)
        if found:
            pairs = _pairs(patient_id, found, model, now)
            detail["link_candidates"] = len(found)
            if data.confirm_not_duplicate and any(c.scored.grade in linkage.LIKELY for c in found):
                detail["confirmed_not_duplicate"] = True
    event = ctx.trail.build(ACTION, audit.SUCCESS, resource_id=patient_id,
                            patient=PatientRef(patient_id, province, district), detail=detail)
    index = codec.index_rows(rt.indexer, custodian, patient_id, plain)
    code = {"patient_id": patient_id, "code_hash": code_hash, "issued_at": now, "issued_by_user_id": p.user_id,
            "generation": 1}
    return row, index, code, keys, pairs, event


_REFRESHING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop -> its refresh lock


async def _jurisdiction(rt, code: str | None):
    """`JurisdictionCache.get` on the loop: a stale cache is refreshed in a worker thread (once a
    minute, or for an unknown code), by one request at a time; the others wait for it."""
    if not code:
        return None
    ok, node = rt.jurisdictions.fresh(code)
    if ok:
        return node
    lock = _REFRESHING.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        ok, node = rt.jurisdictions.fresh(code)
        if ok:
            return node
        await to_thread.run_sync(rt.jurisdictions.refresh)
    return rt.jurisdictions.fresh(code)[1]


@lru_cache(maxsize=8)
def _first(n: int, pooled: bool) -> Compiled:
    """The statements sent with BEGIN: the advisory locks `k0`..`k<n-1>`, then, if `pooled`, the
    taking of one pool row (its `code_hash`, `code_ct`; no row when the pool is empty)."""
    parts = [Compiled.of(select(*(func.pg_advisory_xact_lock(bindparam(f"k{i}", type_=BigInteger())) for i in range(n))))] if n else []
    if pooled:
        parts.append(Compiled.of(code_pool.take_statement(postgresql=True)))
    defaults = {k: v for c in parts for k, v in c.defaults.items()}
    return Compiled("; ".join(c.sql for c in parts), defaults, frozenset())


def _lock_key(keyring, system: str, normalised: str) -> int:
    """`repository.lock_identifier`'s advisory lock key (a keyed hash: pg_locks shows no identifier)."""
    digest = hmac.new(keyring.secret("lock-key"), f"{system}\x00{normalised}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _linkage_record(ctx: ServiceContext, data: PatientCreate, plain: dict, province: str, district: str) -> dict:
    return linkage_records.from_input(
        given_name=data.given_name, family_name=data.family_name, guardian_name=plain.get("guardian_name"),
        guardian_cnic=plain.get("guardian_cnic"), bform=plain.get("bform"), phone=plain.get("phone"),
        birth_date=data.birth_date, sex=data.sex, facility=ctx.principal.facility, district=district, province=province)


def _link_keys(rt, rec: dict | None) -> set[tuple[str, str, int]]:
    if rec is None:
        return set()
    return {(kind, c, v) for kind, pairs in linkage_records.lookup_keys(rt.indexer, rec).items() for c, v in pairs}


def _confirmed(ctx: ServiceContext, ident: list, system: str, normalised: str, by_custodian: dict[str, int]) -> list:
    """`service._confirmed` over the rows already read: the candidates of `system` whose index
    value is their custodian's, confirmed by decryption."""
    candidates = []
    for r in ident:
        r_system, column = r.key_kind.split(":", 1)
        if r_system == system and by_custodian.get(r.key_custodian) == r.key_bidx:
            candidates.append((r, column))
    return svc._confirm(ctx, candidates, system, normalised)


async def _link_candidates(ctx: ServiceContext, rec: dict | None, rows: list, want, confirmed: bool) -> list:
    """`linkage.check_registration` over the rows already read: refuse a likely duplicate, or
    return the candidates to queue for the stewards."""
    if rec is None:
        return []
    rows = linkage_lookup.matching_triples(rows, want)
    if not rows:
        return []
    found = linkage.scored(ctx.runtime, ctx.principal, linkage.models.cached() or await _model(ctx.runtime), rec, rows)
    refused = linkage.likely_refusal(ctx, found, action=ACTION, confirmed=confirmed)
    if refused is not None:
        event, exc = refused
        _refuse(ctx, exc, audit.CONFLICT, **event)
    return found


async def _model(rt):
    """The active linkage model, loaded in a worker thread when the cache is stale (every 30 s)."""
    def load():
        with rt.sessions() as session:
            return linkage.models.get(session)
    return await to_thread.run_sync(load)


def _pairs(patient_id: uuid.UUID, found: list, model, now: datetime) -> list[dict]:
    """`linkage.propose_for`'s rows: the new record's pairs are new, so each is an INSERT."""
    out = []
    for c in found:
        left, right = linkage_repo.ordered(patient_id, c.row.id)
        out.append({"id": uuid.uuid4(), "version": 1, "left_id": left, "right_id": right, "source": "registration",
                    "status": "open", "created_at": now, "match_weight": c.scored.weight,
                    "match_probability": c.scored.probability, "grade": c.scored.grade,
                    "levels": {k: int(v) for k, v in c.scored.levels.items()}, "model_version": model.version})
    return out


_FACILITY = Compiled.of(select(FACILITIES.c.code).where(FACILITIES.c.code == bindparam("code", type_=String())))


@lru_cache(maxsize=512)
def _reads(capture, search) -> Compiled:
    """One statement, three arms told apart by `arm`: `ident` (patients holding one of the blind
    index values `id_bidx` of the systems `id_systems`; `key_kind` is "system:column"), `link`
    (registry/linkage's blocking-key statement for the caller's scopes, values `bidx`), `id`
    (the patient `pid`, if it exists)."""
    link = linkage_lookup.statement(capture, search, "postgresql").subquery("lk")
    link_sel = select(literal("link").label("arm"), *link.c)  # its values: the array parameter `bidx`
    ident = (select(literal("ident").label("arm"), PATIENTS, (INDEX.c.system + literal(":") + INDEX.c.column).label("key_kind"),
                    INDEX.c.custodian.label("key_custodian"), INDEX.c.bidx.label("key_bidx"))
             .join(INDEX, INDEX.c.patient_id == PATIENTS.c.id)
             .where(INDEX.c.system == any_(bindparam("id_systems", type_=ARRAY(String()))),
                    INDEX.c.bidx == any_(bindparam("id_bidx", type_=ARRAY(Integer)))))
    by_id = select(literal("id").label("arm"), PATIENTS, cast(null(), String).label("key_kind"),
                   cast(null(), String).label("key_custodian"), cast(null(), Integer).label("key_bidx")) \
        .where(PATIENTS.c.id == bindparam("pid", type_=Uuid()))
    return Compiled.of(union_all(ident, link_sel, by_id))


def _int_array(values) -> str:
    """An `integer[]` parameter as PostgreSQL's array literal (`{1,-2}`), sent as text of unknown
    type that the statement's cast parses: psycopg's list dumper spent about 0.2 ms a
    registration on the ~100 blind-index values (a regular expression per element)."""
    return "{" + ",".join(map(str, sorted(values))) + "}"


def _rows_cte(table, name: str, columns: tuple[str, ...], n: int):
    return insert(table).values([{c: bindparam(f"{name}{i}_{c}", type_=table.c[c].type) for c in columns}
                                 for i in range(n)]).cte(name)


_INDEX_COLS = ("patient_id", "column", "system", "custodian", "bidx")
_CODE_COLS = ("patient_id", "code_hash", "issued_at", "issued_by_user_id", "generation")
_KEY_COLS = ("patient_id", "kind", "custodian", "bidx")
_PAIR_COLS = ("id", "version", "left_id", "right_id", "source", "status", "created_at", "match_weight",
              "match_probability", "grade", "levels", "model_version")


@lru_cache(maxsize=256)
def _write(columns: tuple[str, ...], n_index: int, n_keys: int, n_pairs: int) -> Compiled:
    """The registration's writes as one statement (see the module docstring), per row shape."""
    ctes = [insert(PATIENTS).values({c: bindparam(f"p_{c}", type_=PATIENTS.c[c].type) for c in columns}).cte("p"),
            _rows_cte(CODES, "ac", _CODE_COLS, 1),
            insert(DIRTY).values(patient_id=bindparam("p_id", type_=DIRTY.c.patient_id.type)).cte("dp")]
    for table, name, cols, n in ((INDEX, "ix", _INDEX_COLS, n_index), (linkage_repo.KEYS, "lk", _KEY_COLS, n_keys),
                                 (linkage_repo.CANDIDATES, "lc", _PAIR_COLS, n_pairs)):
        if n:
            ctes.append(_rows_cte(table, name, cols, n))
    return Compiled.of(async_events.after(ctes))


def _write_values(row: dict, index: list, code: dict, keys: list, pairs: list, event: dict, mac) -> dict:
    out = {f"p_{k}": v for k, v in row.items()}
    out.update({f"ac0_{k}": v for k, v in code.items()})
    for name, rows in (("ix", index), ("lk", keys), ("lc", pairs)):
        for i, r in enumerate(rows):
            out.update({f"{name}{i}_{k}": v for k, v in r.items()})
    out.update(async_events.after_values(event, [], mac))
    return out
