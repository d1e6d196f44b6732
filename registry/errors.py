"""Domain errors. `api/problems.py` maps each to an HTTP status in one place.

    DomainError
    ├── NotFound             the record does not exist *or is outside the caller's scope*
    ├── Forbidden            the caller's role may not do this at all (no existence leak)
    ├── Conflict             duplicates an existing record (e.g. same B-form number)
    ├── PreconditionFailed   If-Match does not match the current version
    ├── PreconditionRequired an update without If-Match
    ├── InvalidInput         domain validation failed; names the field
    └── ServiceUnavailable   a dependency (keys, database) is not available
        ├── DatabaseUnavailable  the database cannot be reached: nothing was changed, retry later
        └── OutcomeUnknown       the connection was lost during COMMIT: the change may have been made

Messages are shown to clients: they name fields and rules, never patient data.
"""

from __future__ import annotations

from security.audit import trail as audit


class DomainError(Exception):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    pass


class Forbidden(DomainError):
    pass


class Conflict(DomainError):
    pass


class PreconditionFailed(DomainError):
    pass


class PreconditionRequired(DomainError):
    pass


class InvalidInput(DomainError):
    pass


class ServiceUnavailable(DomainError):
    """`retry_after`: seconds a client should wait before retrying (the Retry-After header)."""

    def __init__(self, message: str, *, field: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class DatabaseUnavailable(ServiceUnavailable):
    pass


class OutcomeUnknown(ServiceUnavailable):
    """A commit whose result is unknown: the client must not be told that nothing was changed."""

    extensions = {"outcome": "unknown"}


class Unauthenticated(DomainError):
    pass


class TooManyAttempts(DomainError):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_AUDIT_OUTCOMES = [
    (Unauthenticated, audit.UNAUTHENTICATED), (Forbidden, audit.DENIED), (TooManyAttempts, audit.DENIED),
    (NotFound, audit.NOT_FOUND), (InvalidInput, audit.INVALID),
    (Conflict, audit.CONFLICT), (PreconditionFailed, audit.CONFLICT), (PreconditionRequired, audit.CONFLICT),
]


def audit_outcome(exc: BaseException) -> str:
    """The audit outcome a refusal is recorded with; anything unexpected is an `error`."""
    for cls, outcome in _AUDIT_OUTCOMES:
        if isinstance(exc, cls):
            return outcome
    return audit.ERROR
