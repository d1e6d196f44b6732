"""The acting principal and the request context every access decision and audit event needs.

A `Principal` is built from a verified token only; nothing in it comes from request input.

Scopes (after DHIS2):
- capture scope: where the principal may browse, read and change records. A clinic worker's is
  its facility's catchment (patients whose home facility it is); an official's is its
  jurisdiction (district, province or the nation).
- search scope: where the principal may find a patient by an exact identifier. Clinic workers
  search nationally, because children move; officials only inside their jurisdiction.
- break-glass: an emergency read outside capture scope, with a stated reason, flagged for review.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from security.access.permissions import EMERGENCY_PURPOSE, ROLE_PURPOSES, Permission, Role, permissions_of


@dataclass(frozen=True, slots=True)
class Scope:
    """A node of the jurisdiction tree, or a facility. `province`/`district` are denormalised."""

    level: str  # facility | district | province | national
    code: str  # facility code, jurisdiction code, or the country code
    province: str | None = None
    district: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: uuid.UUID
    username: str
    role: str
    scope: Scope
    permissions: frozenset[Permission] = field(default_factory=frozenset)

    @classmethod
    def build(cls, user_id: uuid.UUID, username: str, role: str, scope: Scope) -> Principal:
        return cls(user_id, username, role, scope, permissions_of(role))

    @property
    def facility(self) -> str | None:
        return self.scope.code if self.scope.level == "facility" else None

    @property
    def search_scope(self) -> Scope:
        if self.role == Role.CLINIC_WORKER:
            return Scope("national", "*")
        return self.scope

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


@dataclass(frozen=True, slots=True)
class AccessContext:
    """Why and from where: travels with every repository call so it can be audited."""

    principal: Principal | None
    purpose: str
    request_id: str
    client_address: str | None
    break_glass_reason: str | None = None

    @property
    def break_glass(self) -> bool:
        return self.break_glass_reason is not None


class PurposeRejected(ValueError):
    """The stated purpose of use is not one the role may state."""


def resolve_purpose(role: str, stated: str | None, break_glass_reason: str | None) -> str:
    allowed = ROLE_PURPOSES.get(role, ())
    if break_glass_reason is not None:
        if stated not in (None, EMERGENCY_PURPOSE):
            raise PurposeRejected("break-glass access must state purpose ETREAT")
        stated = EMERGENCY_PURPOSE
    purpose = stated or (allowed[0] if allowed else None)
    if purpose is None or purpose not in allowed:
        raise PurposeRejected(f"purpose of use must be one of: {', '.join(allowed) or 'none'}")
    return purpose
