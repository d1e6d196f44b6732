"""A patient's own identifiers are unique: blind-index candidates confirmed by decryption.

The B-form and CNIC of a new or updated patient, and a new health ID, must not belong to another
patient. A blind index value is shared by design (security/crypto/blind_index.py), so every
candidate row is decrypted and compared (`confirm`). Moved out of service.py unchanged.
"""

from __future__ import annotations

import uuid

from registry import identifiers
from registry.context import ServiceContext
from registry.errors import Conflict
from registry.patients import codec
from registry.patients import repository as repo
from security.audit import trail as audit

LABEL = {"bform": "B-form number", "cnic": "CNIC", "health_id": "health ID"}


def confirmed(ctx: ServiceContext, system: str, normalised: str, exclude: uuid.UUID | None = None) -> list:
    rt = ctx.runtime
    rows = repo.candidates(ctx.session, system, rt.indexer.for_all_custodians(system, normalised))
    return confirm(ctx, rows, system, normalised, exclude)


def confirm(ctx: ServiceContext, candidates, system: str, normalised: str, exclude: uuid.UUID | None = None) -> list:
    """Candidates whose decrypted identifier really is `normalised` (a blind index value is shared)."""
    found = {}
    for row, column in candidates:
        if row.id == exclude:
            continue
        value = codec.decrypt_column(ctx.runtime.cipher, row, column)
        if value is not None and identifiers.normalise(system, value) == normalised:
            found[row.id] = row
    return list(found.values())


def check_unique(ctx: ServiceContext, plain: dict, action: str, exclude: uuid.UUID | None = None) -> None:
    """The patient's own identifiers (not the guardian's) must not belong to another patient."""
    for column in ("bform", "cnic"):
        value = plain.get(column)
        if not value:
            continue
        system = codec.INDEXED[column]
        norm = identifiers.normalise(system, value)
        repo.lock_identifier(ctx.session, ctx.runtime.keyring, system, norm)
        if confirmed(ctx, system, norm, exclude):
            ctx.trail.record(ctx.session, action, audit.CONFLICT, resource_id=exclude,
                             detail={"identifier_system": system, "reason": "duplicate"})
            raise Conflict(f"a patient with this {LABEL[column]} is already registered; find it by identifier search",
                           field=column)


def new_health_id(ctx: ServiceContext) -> str:
    for _ in range(8):
        hid = identifiers.new_health_id()
        if not confirmed(ctx, identifiers.HEALTH_ID_SYSTEM, identifiers.normalise(identifiers.HEALTH_ID_SYSTEM, hid)):
            return hid
    raise RuntimeError("could not allocate a unique health ID")  # pragma: no cover - 1e11 id space
