"""What the console's HTTP layer gets back from the session service."""

from __future__ import annotations

from dataclasses import dataclass

from security.access.principal import Principal


@dataclass(frozen=True)
class StartedSession:
    token: str  # goes into the cookie, and nowhere else
    csrf: str
    max_age: int  # seconds until the absolute lifetime ends


@dataclass(frozen=True)
class LiveSession:
    id: str
    principal: Principal
    csrf: str
    generation: int | None = None  # a guardian session's access-code generation
