"""The registrations (`patient.create` items) of a batch upload on the event loop (issue 17):
`service.register` item by item as `batch._one` calls it, judged against the one snapshot the
upload reads (registry/sync/batch_async.py) and written in its one statement with the doses.

The checks are the event-loop registration's (registry/patients/async_register.py), in the sync
path's order: the receipt (a resend: `duplicate`, or `rejected: conflict` for other content);
bound to a facility; the district; an unnamed child's guardian; the birth facility; the
patient's own identifiers (B-form, CNIC) unique; a client id not taken; the probabilistic
duplicate check (registry/linkage). The sync path writes each registration before judging the
next, so a later one sees the earlier ones: here each accepted registration adds its rows to what
the next ones are checked against (`_Seen`: its blind-index rows for the uniqueness check, its
blocking keys, if in the caller's scopes, for the duplicate check), so the same child twice in one
upload is refused `likely_duplicate_in_file` (or the identifier conflict) exactly as there.

Reads (`statements`, sent in the upload's first message): the advisory locks of every
registration's own identifiers (`repository.lock_identifier`'s keys, sorted), then, after the
upload's snapshot, async_register's one read for all the registrations at once (its `id` arm
unused: a taken client id is a patient of the upload's snapshot, which reads the registrations'
ids too) and the birth facilities named. A newly drawn health ID already held (one in 1e11) makes
the whole upload judged again with new draws (`Retry`), as a concurrent writer does.

Refusals go to the upload's `refuse(action, outcome, subjects=(), **event)`, written with the
rest. Access codes (registry/citizens/code_pool.py): the first message also takes up to one pool
row per registration that may be accepted (`FOR UPDATE SKIP LOCKED`); a registration that passed
every check takes the oldest left (`code_pool.issued_from`, as the sync path's `code_pool.issue`),
and the rows no registration took are put back, unissued, by the upload's write (a rollback puts
them all back).
"""

from __future__ import annotations

import uuid
from collections import namedtuple
from dataclasses import dataclass, field
from datetime import UTC, datetime

from registry import identifiers
from registry.async_database import Compiled
from registry.citizens import code_pool
from registry.context import ServiceContext
from registry.errors import DomainError, Forbidden, InvalidInput
from registry.facilities.models import Facility
from registry.linkage import lookup as linkage_lookup
from registry.linkage import service as linkage
from registry.patients import async_register as reg
from registry.patients import codec, newborns
from registry.patients import service as svc
from registry.patients.repository import PATIENTS, Access, access_to
from registry.sync import batch
from registry.sync.schemas import ItemResult, PatientItem
from security.audit import trail as audit

ACTION = reg.ACTION
Row = namedtuple("Row", ["arm", *PATIENTS.c.keys(), "key_kind", "key_custodian", "key_bidx"])  # `reg._reads`' columns
_FACILITIES = f"SELECT code FROM {Facility.__table__.name} WHERE code = ANY(%(birth_facilities)s::text[])"
# `code_pool.take_statement` for up to `pool_n` rows (the registrations that may be accepted)
POOL = code_pool.POOL
_TAKE = (f"DELETE FROM {POOL.name} WHERE id IN (SELECT id FROM {POOL.name} ORDER BY id LIMIT %(pool_n)s"
         f" FOR UPDATE SKIP LOCKED) RETURNING id, code_hash, code_ct, created_at")
POOL_COLUMNS = ("id", "code_hash", "code_ct", "created_at")


class Retry(Exception):
    """A health ID drawn for this attempt is held already: judge the upload again."""


@dataclass
class Pending:
    """A registration as prepared before the reads (`prepare`)."""

    index: int
    item: PatientItem
    refused: tuple[DomainError, str, dict] | None = None  # decided before any read: (error, outcome, event fields)
    where: tuple[str, str, str] | None = None  # custodian, province, district
    plain: dict = field(default_factory=dict)
    own: dict = field(default_factory=dict)  # column -> normalised value of the patient's own identifiers
    locks: list[int] = field(default_factory=list)
    rec: dict | None = None
    want: set = field(default_factory=set)
    hid: str = ""

    @property
    def id(self) -> uuid.UUID:
        return self.item.data.id


@dataclass
class Registered:
    """An accepted registration: its rows for the upload's statement."""

    row: dict
    index_rows: list[dict]
    code: dict
    keys: list[dict]
    pairs: list[dict]
    event: dict


async def prepare(ctx: ServiceContext, regs: list[tuple[int, PatientItem]]) -> list[Pending]:
    """Everything before the reads, on the loop (the districts through the jurisdiction cache)."""
    p, rt = ctx.principal, ctx.runtime
    out = []
    for index, item in regs:
        data, one = item.data, Pending(index, item)
        out.append(one)
        if p.facility is None:
            one.refused = (Forbidden("only staff bound to a facility can register patients"), audit.DENIED,
                           {"detail": {"reason": "not bound to a facility"}})
            continue
        try:
            province, district = svc.residence_of(ctx, await reg._jurisdiction(rt, data.district or p.scope.district))
        except InvalidInput as exc:
            one.refused = (exc, audit.INVALID, {"detail": {"field": "district"}})
            continue
        raw = data.model_dump()
        refused = newborns.guardian_refusal(raw.get("guardian")) if raw.get("unnamed") else None
        if refused is not None:
            one.refused = (refused, audit.INVALID, {"detail": {"field": refused.field}})
            continue
        one.where = (p.scope.province, province, district)
        one.plain = plain = svc.plaintext_columns(raw)
        one.own = {c: identifiers.normalise(codec.INDEXED[c], plain[c]) for c in reg._OWN if plain.get(c)}
        one.locks = [reg._lock_key(rt.keyring, codec.INDEXED[c], n) for c, n in one.own.items()]
        one.rec = reg._linkage_record(ctx, data, plain, province, district) if rt.settings.linkage_check else None
        one.want = reg._link_keys(rt, one.rec)
    return out


def draw_health_ids(pending: list[Pending]) -> None:
    for one in pending:
        one.hid = identifiers.new_health_id()


def statements(ctx: ServiceContext, pending: list[Pending]) -> tuple[Compiled | None, dict, list[Compiled], dict]:
    """(the locks' statement or None, its values, the reads after the snapshot, their values)."""
    p, rt = ctx.principal, ctx.runtime
    locks = sorted({k for one in pending for k in one.locks})
    systems, bidx = set(), set()
    for one in pending:
        if one.where is None:
            continue
        for system, norm in _wanted(one).values():
            systems.add(system)
            bidx.update(rt.indexer.for_all_custodians(system, norm).values())
    reads = reg._reads(p.scope, p.search_scope)
    values = {"id_systems": sorted(systems), "id_bidx": sorted(bidx), "pid": None,
              "bidx": sorted({v for one in pending for _, _, v in one.want}),
              "birth_facilities": sorted({one.item.data.birth_facility for one in pending if one.item.data.birth_facility})}
    first = reg._first(len(locks), False) if locks else None  # the pool rows are taken with the reads
    after = [reads, Compiled(_FACILITIES, {}, frozenset())]
    if rt.settings.citizen.code_pool_size > 0:
        after.append(Compiled(_TAKE, {}, frozenset()))
        values["pool_n"] = sum(one.where is not None for one in pending)
    return first, {f"k{i}": k for i, k in enumerate(locks)}, after, values


def _wanted(one: Pending) -> dict[str, tuple[str, str]]:
    wanted = {c: (codec.INDEXED[c], n) for c, n in one.own.items()}
    wanted["health_id"] = (identifiers.HEALTH_ID_SYSTEM, identifiers.normalise(identifiers.HEALTH_ID_SYSTEM, one.hid))
    return wanted


@dataclass
class _Seen:
    """What a registration is checked against: the rows read, and the batch's accepted ones."""

    ident: list
    link: list
    created: set = field(default_factory=set)


def judge(ctx: ServiceContext, pending: list[Pending], receipts: dict, existing: set, read_rows: list, facilities: set,
          model, refuse, pool: list) -> tuple[dict[int, tuple[ItemResult, uuid.UUID | None]], list[Registered], dict]:
    """Each registration in order (see the module docstring): (index -> (result, patient id for
    the batch event's subjects), the accepted ones' rows, index -> receipt row). `pool`: the
    access-code pool rows taken in the first message, oldest first; each accepted registration
    takes the next (`code_pool.issued_from`: hashed now when none is left or it does not open),
    and the rows left are the caller's to put back in its write."""
    p = ctx.principal
    judgement = Judgement(ctx, existing, read_rows, facilities, model, refuse, pool)
    out, accepted, receipts_out = {}, [], {}
    for one in pending:
        item, mac = one.item, batch._mac(ctx, one.item)
        base = {"index": one.index, "op": item.op, "id": one.id}
        if one.id in receipts:
            out[one.index] = batch._seen(ctx, one.index, item, receipts[one.id], mac, refuse)
            continue
        try:
            registered = judgement.register(one)
        except DomainError as exc:
            out[one.index] = ItemResult(**base, result="rejected", **batch.refusal_reason(exc, judgement.created)), None
            continue
        accepted.append(registered[0])
        out[one.index] = ItemResult(**base, result="created", version=1, health_id=one.hid,
                                    access_code=registered[1]), one.id
        receipts_out[one.index] = {"kind": "patient", "record_id": one.id, "content_mac": mac, "result_id": one.id,
                                   "user_id": p.user_id}
    return out, accepted, receipts_out


class Judgement:
    """The registrations of one request judged in order against its snapshot (the batch upload's,
    the FHIR Bundle's: registry/fhir/bundle_async.py): `existing` (the ids read), `read_rows`
    (`statements`' read), `facilities` (the birth facilities found), `pool` (the access-code pool
    rows taken, oldest first; the rows left are the caller's to put back). Each accepted
    registration is visible to the next (`_Seen`)."""

    def __init__(self, ctx: ServiceContext, existing: set, read_rows: list, facilities: set, model, refuse,
                 pool: list) -> None:
        rows = [Row(*r) for r in read_rows]
        self.ctx, self.existing, self.facilities, self.model, self.refuse, self.pool = (
            ctx, existing, facilities, model, refuse, pool)
        self.seen = _Seen([r for r in rows if r.arm == "ident"], [r for r in rows if r.arm == "link"])

    @property
    def created(self) -> set[str]:
        """The ids (str) of the registrations accepted so far: a likely duplicate of one is "in file"."""
        return self.seen.created

    def register(self, one: Pending) -> tuple[Registered, str]:
        """(its rows, its access code), or raise its refusal after giving its event to `refuse`;
        `Retry` when its health ID is held already."""
        registered = _one(self.ctx, one, self.existing, self.seen, self.facilities, self.model, self.refuse, self.pool)
        _add(self.ctx.runtime, self.ctx.principal, self.seen, registered[0])
        return registered


def _one(ctx: ServiceContext, one: Pending, existing: set, seen: _Seen, facilities: set, model, refuse, pool: list):
    """One registration's checks after its receipt: (its rows, its access code), or raise the
    refusal after giving its event to `refuse`."""
    rt, data = ctx.runtime, one.item.data

    def refused(exc: DomainError, outcome: str, event: dict):
        refuse(ACTION, outcome, **event)
        raise exc

    if one.refused is not None:
        refused(*one.refused)
    if data.birth_facility is not None and data.birth_facility not in facilities:
        exc = InvalidInput("must be the code of a registered facility", field="birth_facility")
        refused(exc, audit.INVALID, {"detail": {"field": exc.field}})
    wanted = _wanted(one)
    by_custodian = {c: rt.indexer.for_all_custodians(s, n) for c, (s, n) in wanted.items()}
    taken = reg._identifier_taken(ctx, one.own, wanted, by_custodian, seen.ident)
    if taken is not None:
        refused(taken[0], audit.CONFLICT, taken[1])
    if one.id in existing:
        exc, event = reg._id_taken(one.id)
        refused(exc, audit.CONFLICT, event)
    found = []
    if one.rec is not None:
        candidates = linkage_lookup.matching_triples(seen.link, one.want)
        if candidates:
            found = linkage.scored(rt, ctx.principal, model, one.rec, candidates)
            likely = linkage.likely_refusal(ctx, found, action=ACTION, confirmed=data.confirm_not_duplicate)
            if likely is not None:
                refused(likely[1], audit.CONFLICT, likely[0])
    system, norm = wanted["health_id"]
    if reg._confirmed(ctx, seen.ident, system, norm, by_custodian["health_id"]):
        raise Retry()
    one.plain["health_id"] = one.hid
    access_code, code_hash = code_pool.issued_from(rt.keyring, rt.code_hasher, pool.pop(0) if pool else None)
    rows = reg._new_rows(ctx, data, one.id, one.where, one.plain, one.rec, found, model, code_hash, datetime.now(UTC))
    return Registered(*rows), access_code


def _add(rt, principal, seen: _Seen, r: Registered) -> None:
    """An accepted registration's rows as the next ones' check reads them: its blind-index rows
    (uniqueness), its blocking keys when the caller's scopes reach it (the lookup's scope clause)."""
    values = {c.name: r.row.get(c.name) for c in PATIENTS.columns}
    seen.created.add(str(r.row["id"]))
    for ix in r.index_rows:
        seen.ident.append(Row(arm="ident", **values, key_kind=f"{ix['system']}:{ix['column']}",
                              key_custodian=ix["custodian"], key_bidx=ix["bidx"]))
    if access_to(principal, Row(arm="link", **values, key_kind=None, key_custodian=None, key_bidx=None)) is Access.NONE:
        return
    for k in r.keys:
        seen.link.append(Row(arm="link", **values, key_kind=k["kind"], key_custodian=k["custodian"], key_bidx=k["bidx"]))


def needs_model(pending: list[Pending]) -> bool:
    return any(one.rec is not None for one in pending)
