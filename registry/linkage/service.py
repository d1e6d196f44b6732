"""Matching use cases: the duplicate check at registration, Patient/$match, candidates in scope.

Matching runs here, in the custodian's process: candidate rows are found by keyed blocking
keys (records.lookup_keys) within the caller's capture or search scope, decrypted in memory,
scored with the active model (scoring.py) and dropped. What leaves: ids, scores, levels, and for
the caller the identity-confirmation view search already returns (codec.to_match, full=False).

Audit: these functions run inside another use case (registration) or are one (`match`, which
writes exactly one `patient.search` event with `via: $match`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

from registry.context import ServiceContext
from registry.errors import Conflict
from registry.linkage import lookup, records
from registry.linkage import repository as repo
from registry.linkage.scoring import DEFAULT_THRESHOLDS, Model, Scored, default_parameters, score
from registry.patients import codec
from registry.patients.repository import Access, access_to
from registry.patients.repository import get as get_patient
from registry.patients.schemas import PatientMatch
from security.audit import trail as audit
from security.crypto.errors import DecryptionError
from security.audit.trail import PatientRef

log = logging.getLogger("nhr.linkage")
CONFIGURED_VERSION = "configured-2"  # configured-1: the same m and u, `possible` at weight 0
LIKELY = ("certain", "probable")
CONFIRM = ("register anyway with \"confirm_not_duplicate\": true (FHIR: header X-Confirm-Not-Duplicate: true; "
           "recorded in the audit log), or record the dose on the child found (FHIR: Patient/$match lists the candidates)")
_CACHE_SECONDS = 30.0
# A pair a steward decided is not the same child, as $match grades it: no score, no levels.
CERTAINLY_NOT = Scored(levels={}, weight=float("-inf"), probability=0.0, grade="certainly-not")


class LikelyDuplicate(Conflict):
    """A registration that looks like a child already registered (grade certain or probable).
    `in_file`: the child it looks like was registered by an earlier entry of the same upload (a
    FHIR Bundle, an import file, a sync batch): code `likely_duplicate_in_file`."""

    code = "likely_duplicate"

    def __init__(self, candidates: list[dict], *, in_file: bool = False) -> None:
        where = "by an earlier entry of this upload" if in_file else "already"
        super().__init__(f"this child may {where} be registered: see `candidates`; " + CONFIRM, field="confirm_not_duplicate")
        self.code = "likely_duplicate_in_file" if in_file else "likely_duplicate"
        self.candidates = candidates
        self.extensions = {"code": self.code, "candidates": candidates, "confirm": CONFIRM}

    def in_file(self) -> LikelyDuplicate:
        """The same refusal, as a duplicate of a record created earlier in the same upload."""
        return LikelyDuplicate(self.candidates, in_file=True)

    @property
    def detail_code(self) -> str:
        """For FHIR: OperationOutcome.issue.details (registry/fhir/outcome.py)."""
        return self.code


@dataclass
class Candidate:
    row: object
    access: Access
    scored: Scored
    not_same: bool = False  # a steward decided this record is not the same child as `exclude`


class _ModelCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Model | None = None
        self._until = 0.0

    def get(self, session) -> Model:
        now = time.monotonic()
        with self._lock:
            if self._model is not None and now < self._until:
                return self._model
        row = repo.active_model(session)
        model = Model.from_parameters(row.version, row.parameters, row.thresholds) if row is not None else \
            Model.from_parameters(CONFIGURED_VERSION, default_parameters(), DEFAULT_THRESHOLDS)
        with self._lock:
            self._model, self._until = model, now + _CACHE_SECONDS
        return model

    def cached(self) -> Model | None:
        """The model while it is fresh, else None (the event loop then loads it in a worker thread)."""
        with self._lock:
            return self._model if self._model is not None and time.monotonic() < self._until else None

    def clear(self) -> None:
        with self._lock:
            self._model, self._until = None, 0.0


models = _ModelCache()


def active_model(session) -> Model:
    """The active stored model (re-read at most every 30 s), or the configured defaults."""
    return models.get(session)


def candidates(ctx: ServiceContext, rec: dict, *, exclude: uuid.UUID | None = None) -> list[Candidate]:
    """Records in the caller's capture or search scope that score as at least `possible`
    against the prepared record `rec`, best first; pairs decided `not_same` are left out."""
    return find(ctx.session, ctx.runtime, ctx.principal, rec, exclude=exclude)


def find(session, rt, principal, rec: dict, *, exclude: uuid.UUID | None = None,
         keep_not_same: bool = False, store: list[dict] | None = None) -> list[Candidate]:
    """`candidates` for callers without a ServiceContext (bulk import: one event per chunk).
    `keep_not_same`: return the pairs decided `not_same` with `exclude` too, flagged (`$match`
    grades them certainly-not) instead of leaving them out. `store`: a new record's blocking-key
    rows (records.key_rows), written by the lookup's own statement (lookup.py)."""
    rows = lookup.run(session, principal, records.lookup_keys(rt.indexer, rec), store, exclude=exclude)
    if not rows:
        return []
    model = active_model(session)
    not_same = repo.not_same_pairs(session, [exclude]) if exclude else set()
    return scored(rt, principal, model, rec, rows, exclude=exclude, not_same=not_same, keep_not_same=keep_not_same)


def scored(rt, principal, model: Model, rec: dict, rows, *, exclude: uuid.UUID | None = None, not_same=frozenset(),
           keep_not_same: bool = False) -> list[Candidate]:
    """`find`'s scoring of the candidate rows it read (shared with the registration on the event loop)."""
    out = []
    for row in rows:
        decided_not_same = bool(exclude) and repo.ordered(exclude, row.id) in not_same
        if decided_not_same and not keep_not_same:
            continue
        try:
            other = records.from_row(rt.cipher, row)
        except DecryptionError as exc:  # a damaged record must not block registering another child
            log.error("linkage: candidate skipped, integrity failure: %s", exc)  # table, column, row id only
            continue
        s = score(model, rec, other)
        if s.grade is not None:
            out.append(Candidate(row, access_to(principal, row), s, decided_not_same))
    out.sort(key=lambda c: (c.not_same, -c.scored.weight))
    return out


def confirmation_view(ctx: ServiceContext, c: Candidate) -> dict:
    """What the caller is shown of a candidate: identity confirmation only (as search shows a
    visiting child), its grade and score, and the reasons in plain language."""
    from registry.linkage.explain import explain

    view = codec.to_match(ctx.runtime.cipher, c.row, full=False).model_dump(mode="json", exclude_none=True)
    return {**view, "match_grade": c.scored.grade, "match_probability": round(c.scored.probability, 6),
            "reasons": explain(c.scored.levels)}


def check_registration(ctx: ServiceContext, rec: dict, *, action: str, confirmed: bool,
                       store: tuple[str, uuid.UUID] | None = None) -> list[Candidate]:
    """Before a registration is written: refuse (LikelyDuplicate, audited as a conflict) when a
    certain or probable match exists and the caller has not confirmed; otherwise return the
    candidates to propose once the new record exists (`propose_for`).
    `store`: (custodian, id) of the record about to be inserted in this transaction: its blocking
    keys are written by the lookup's statement (one round trip on PostgreSQL), so the caller does
    not `store_keys`; a refusal rolls them back with the rest."""
    return check_registration_probing(ctx, rec, action=action, confirmed=confirmed, store=store)[0]


def check_registration_probing(ctx: ServiceContext, rec: dict, *, action: str, confirmed: bool,
                               store: tuple[str, uuid.UUID] | None = None,
                               probe: tuple[str, dict[str, int]] | None = None) -> tuple[list[Candidate], list]:
    """`check_registration`, and with `probe` (system, custodian -> blind-index value of an exact
    identifier, e.g. the new health ID) the rows holding that value, in the same round trip on
    PostgreSQL (lookup.registration_statement): (candidates, [(row, column)] unconfirmed)."""
    keys = records.key_rows(ctx.runtime.indexer, store[0], store[1], rec) if store else None
    wanted = records.lookup_keys(ctx.runtime.indexer, rec)
    if probe is None:
        rows, held = lookup.run(ctx.session, ctx.principal, wanted, keys), []
    else:
        rows, held = lookup.run(ctx.session, ctx.principal, wanted, keys, probe=probe)
    found = scored(ctx.runtime, ctx.principal, active_model(ctx.session), rec, rows) if rows else []
    refused = likely_refusal(ctx, found, action=action, confirmed=confirmed)
    if refused is not None:
        event, exc = refused
        ctx.trail.record(ctx.session, action, audit.CONFLICT, **event)
        raise exc
    return found, held


def likely_refusal(ctx: ServiceContext, found: list[Candidate], *, action: str, confirmed: bool):
    """None, or (the conflict event's fields, the LikelyDuplicate to raise) when a certain or
    probable match exists and the caller has not confirmed (`check_registration`'s rule)."""
    likely = [c for c in found if c.scored.grade in LIKELY]
    if not likely or confirmed:
        return None
    event = dict(subjects=[c.row.id for c in likely], outside_capture_scope=any(c.access is not Access.CAPTURE for c in likely),
                 detail={"reason": "likely_duplicate", "candidates": len(likely)})
    return event, LikelyDuplicate([confirmation_view(ctx, c) for c in likely])


def propose_for(ctx: ServiceContext, patient_id: uuid.UUID, found: list[Candidate], source: str = "registration") -> int:
    """Queue the new record's candidates for the stewards (ids, scores and levels only)."""
    return propose_found(ctx.session, patient_id, found, source)


def propose_found(session, patient_id: uuid.UUID, found: list[Candidate], source: str = "registration") -> int:
    model = active_model(session)
    for c in found:
        repo.propose(session, patient_id, c.row.id, weight=c.scored.weight, probability=c.scored.probability,
                     grade=c.scored.grade, levels=c.scored.levels, model_version=model.version, source=source)
    return len(found)


def store_keys(ctx: ServiceContext, custodian: str, patient_id: uuid.UUID, rec: dict, *, replace: bool = False) -> None:
    rows = records.key_rows(ctx.runtime.indexer, custodian, patient_id, rec)
    if replace:
        repo.replace_keys(ctx.session, patient_id, rows)
    else:
        repo.insert_keys(ctx.session, rows)


def match(ctx: ServiceContext, rec: dict, *, only_certain: bool, count: int,
          subject: uuid.UUID | None = None) -> list[tuple[PatientMatch, Scored]]:
    """Patient/$match: candidates in search scope, identity confirmation only outside capture
    scope (the full record inside it, as search returns it). One `patient.search` event.

    `subject`: the id the Patient resource carries, when it is a record the caller may reach
    (capture or search scope; otherwise it is ignored, revealing nothing). That record itself is
    not returned, and a candidate a steward decided is `not_same` as it is returned graded
    `certainly-not` (FHIR match-grade: "known not to be a match"), after every match, with score
    0, but only when the engine would have returned it anyway (at least `possible`): records
    below the possible threshold are never returned. `onlyCertainMatches` returns `certain`
    ones only; `count` caps the whole list."""
    if subject is not None:
        row, access = get_patient(ctx.session, ctx.principal, subject)
        if row is None or access is Access.NONE:
            subject = None
    found = find(ctx.session, ctx.runtime, ctx.principal, rec, exclude=subject, keep_not_same=True)
    if only_certain:
        found = [c for c in found if c.scored.grade == "certain" and not c.not_same]
    found = found[:count]
    out = [(codec.to_match(ctx.runtime.cipher, c.row, full=c.access is Access.CAPTURE),
            CERTAINLY_NOT if c.not_same else c.scored) for c in found]
    ctx.trail.record(ctx.session, "patient.search", audit.SUCCESS,
                     patient=PatientRef(found[0].row.id, found[0].row.province, found[0].row.district) if len(found) == 1 else None,
                     subjects=[c.row.id for c in found], outside_capture_scope=any(c.access is Access.SEARCH for c in found),
                     detail={"via": "$match", "matches": len(found), "only_certain": only_certain,
                             "certainly_not": sum(c.not_same for c in found)})
    return out
