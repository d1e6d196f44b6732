"""The registry's clock and calendar.

- `utc_now()` is the one clock of the time-sensitive rules (certificate issuance and its signer's
  validity, revocation, verification): code under test reads it, and a test sets it with
  `frozen_at(...)` instead of replacing the code it tests. Outside a test nothing sets it.
- Clinics record by their local date. Pakistan keeps UTC+5 all year (no daylight saving), so
  "today" is the date at UTC+5: a dose given this morning in Karachi, while it is still
  yesterday in UTC, is not "in the future". Another country changes `LOCAL_TZ`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, timezone

LOCAL_TZ = timezone(timedelta(hours=5), "PKT")
_frozen: datetime | None = None


def utc_now() -> datetime:
    """Now, timezone-aware UTC (or the time a test froze the clock at)."""
    return _frozen if _frozen is not None else datetime.now(UTC)


@contextmanager
def frozen_at(at: datetime) -> Iterator[datetime]:
    """Within the block, `utc_now()` answers `at` (process-wide, every thread: the app under test
    runs requests in threads of its own). For tests and replays; never nested across threads."""
    global _frozen
    if at.tzinfo is None:
        raise ValueError("the clock is timezone-aware: give a UTC time")
    before, _frozen = _frozen, at.astimezone(UTC)
    try:
        yield _frozen
    finally:
        _frozen = before


def local_today(now: datetime | None = None) -> date:
    return (now or utc_now()).astimezone(LOCAL_TZ).date()
