"""The registry's calendar: which day it is where the doses are given.

Clinics record by their local date. Pakistan keeps UTC+5 all year (no daylight saving), so
"today" is the date at UTC+5: a dose given this morning in Karachi, while it is still
yesterday in UTC, is not "in the future". Another country changes `LOCAL_TZ`.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

LOCAL_TZ = timezone(timedelta(hours=5), "PKT")


def local_today(now: datetime | None = None) -> date:
    return (now or datetime.now(timezone.utc)).astimezone(LOCAL_TZ).date()
