"""What a service call needs: the transaction, the process's keys, and the request's audit trail.

Services never commit: the unit of work that created the session does (api/deps.py, or the
CLI), so that the data and its audit event commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from registry.async_database import AsyncDatabase
from registry.async_unit import AsyncUnit
from registry.runtime import Runtime
from security.access.principal import AccessContext, Principal
from security.audit.trail import AuditTrail


@dataclass
class ServiceContext:
    session: Session
    runtime: Runtime
    trail: AuditTrail
    # The event loop's pool for the async hot paths (registry/async_database.py), or None: on
    # SQLite, in the CLI, and for a request whose response must commit in the same transaction
    # as its data (an Idempotency-Key claim), where everything goes through `session`.
    aio: AsyncDatabase | None = None
    # The transaction on the async connection (registry/async_unit.py) for the routes that write
    # on the event loop (register, record a dose) on PostgreSQL; None elsewhere (sync path).
    unit: AsyncUnit | None = None

    @property
    def access(self) -> AccessContext:
        return self.trail.context

    @property
    def principal(self) -> Principal:
        p = self.trail.context.principal
        assert p is not None, "services run only for an authenticated principal"
        return p
