"""Anomaly flags for auditors, computed in SQL over the audit table within the auditor's scope.
Nothing is decrypted: only audit rows are read. Each flag explains itself in plain words.

Flags (thresholds are `settings.audit.*`, set by `NHR_AUDIT_*`):
- outside_capture_scope: an actor's events flagged outside its capture scope that were not
  break-glass (break-glass accesses have their own review queue). Includes refused attempts.
- many_distinct_patients: on one local day an actor read more distinct patients than
  max(`distinct_patients_min`, `distinct_patients_peer_factor` x the median of its
  peers that day), peers being the other actors with the same role, scope level and, for staff
  bound to a facility, the same kind of facility (a teaching hospital is compared with teaching
  hospitals, a BHU with BHUs) seen in the auditor's scope that day (median 0 when there are none). Reads are successful `patient.read`
  and `immunization.list` events.
- outside_working_hours: patient-data events (actions `patient.*`, `immunization.*`) at a local
  time outside [`working_hours_start`, `working_hours_end`) in `timezone`.
- repeated_refusals: at least `refusals_per_hour` denied or not-found outcomes by one
  actor within one clock hour (UTC).

Local time in SQL: PostgreSQL converts with the named zone; SQLite shifts by the zone's UTC
offset at the start of the window (exact for zones without daylight saving, such as Asia/Karachi).
"""

from __future__ import annotations

import statistics
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import Integer, and_, cast, func, or_, select

from registry.audit_log import repository as repo
from registry.context import ServiceContext
from registry.errors import InvalidInput
from registry.facilities.models import Facility
from security.audit import trail as audit

EVENTS = repo.EVENTS
FACILITIES = Facility.__table__
MAX_WINDOW = timedelta(days=92)
_PATIENT_DATA = or_(EVENTS.c.action.like("patient.%"), EVENTS.c.action.like("immunization.%"))


class Flag(BaseModel):
    kind: str
    actor_user_id: uuid.UUID | None
    actor_username: str | None
    actor_role: str | None
    actor_scope_level: str | None
    actor_scope_code: str | None
    count: int
    threshold: float | None = None
    day: str | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None
    explanation: str


class AnomalyReport(BaseModel):
    since: datetime
    until: datetime
    settings: dict
    flags: list[Flag]


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _local(session, tz: str, since: datetime):
    """SQL expressions for (local date as 'YYYY-MM-DD', local hour as integer) of occurred_at."""
    col = EVENTS.c.occurred_at
    if session.get_bind().dialect.name == "postgresql":
        local = func.timezone(tz, col)
        return func.to_char(local, "YYYY-MM-DD"), cast(func.extract("hour", local), Integer)
    minutes = int(ZoneInfo(tz).utcoffset(since.replace(tzinfo=None)).total_seconds() // 60)
    shift = f"{minutes:+d} minutes"
    return func.strftime("%Y-%m-%d", col, shift), cast(func.strftime("%H", col, shift), Integer)


def _actor_cols():
    return (EVENTS.c.actor_user_id, EVENTS.c.actor_username, EVENTS.c.actor_role,
            EVENTS.c.actor_scope_level, EVENTS.c.actor_scope_code)


def _actor(r) -> dict:
    return {"actor_user_id": r.actor_user_id, "actor_username": r.actor_username, "actor_role": r.actor_role,
            "actor_scope_level": r.actor_scope_level, "actor_scope_code": r.actor_scope_code}


def report(ctx: ServiceContext, since: datetime | None, until: datetime | None) -> AnomalyReport:
    until = _utc(until) or datetime.now(UTC)
    since = _utc(since) or until - timedelta(days=1)
    if not since < until or until - since > MAX_WINDOW:
        ctx.trail.record(ctx.session, "audit.anomalies", audit.INVALID, resource_type="AuditEvent", detail={"field": "since"})
        raise InvalidInput(f"`since` must be before `until`, at most {MAX_WINDOW.days} days apart", field="since")
    s = ctx.runtime.settings
    base = and_(repo._scope(ctx.principal), EVENTS.c.occurred_at >= since, EVENTS.c.occurred_at < until,
                EVENTS.c.actor_user_id.is_not(None))
    flags = (_outside_scope(ctx, base) + _many_patients(ctx, base, since) + _after_hours(ctx, base, since)
             + _refusals(ctx, base))
    used = {"timezone": s.audit.timezone, "working_hours": [s.audit.working_hours_start, s.audit.working_hours_end],
            "distinct_patients_min": s.audit.distinct_patients_min,
            "distinct_patients_peer_factor": s.audit.distinct_patients_peer_factor,
            "refusals_per_hour": s.audit.refusals_per_hour}
    counts = defaultdict(int)
    for f in flags:
        counts[f.kind] += 1
    ctx.trail.record(ctx.session, "audit.anomalies", audit.SUCCESS, resource_type="AuditEvent",
                     detail={"count": len(flags), "by_kind": dict(sorted(counts.items()))})
    return AnomalyReport(since=since, until=until, settings=used, flags=flags)


def _outside_scope(ctx, base) -> list[Flag]:
    refused = func.sum(cast(EVENTS.c.outcome != audit.SUCCESS, Integer))
    q = (select(*_actor_cols(), func.count().label("n"), refused.label("refused"),
                func.min(EVENTS.c.occurred_at).label("first"), func.max(EVENTS.c.occurred_at).label("last"))
         .where(base, EVENTS.c.outside_capture_scope.is_(True), EVENTS.c.break_glass.is_(False))
         .group_by(*_actor_cols()))
    out = []
    for r in ctx.session.execute(q):
        out.append(Flag(kind="outside_capture_scope", **_actor(r), count=r.n, threshold=None,
                        first_at=_utc(r.first), last_at=_utc(r.last),
                        explanation=(f"{r.n} access(es) to patients outside this actor's capture scope without a "
                                     f"break-glass reason ({int(r.refused or 0)} of them refused). Exact-identifier searches "
                                     "outside the catchment are allowed for children who move; check that each had a reason.")))
    return out


def _many_patients(ctx, base, since) -> list[Flag]:
    s = ctx.runtime.settings
    day, _ = _local(ctx.session, s.audit.timezone, since)
    kind = FACILITIES.c.kind
    at_facility = and_(EVENTS.c.actor_scope_level == "facility", FACILITIES.c.code == EVENTS.c.actor_scope_code)
    q = (select(*_actor_cols(), kind.label("facility_kind"), day.label("day"),
                func.count(func.distinct(EVENTS.c.patient_id)).label("n"))
         .select_from(EVENTS.outerjoin(FACILITIES, at_facility))
         .where(base, EVENTS.c.outcome == audit.SUCCESS, EVENTS.c.patient_id.is_not(None),
                EVENTS.c.action.in_(("patient.read", "immunization.list")))
         .group_by(*_actor_cols(), kind, day))
    rows = ctx.session.execute(q).all()
    groups = defaultdict(list)
    for r in rows:
        groups[(r.day, r.actor_role, r.actor_scope_level, r.facility_kind)].append(r)
    out = []
    for (d, role, level, facility_kind), members in groups.items():
        where = f"{facility_kind} facilities" if facility_kind else f"{level} level"
        for r in members:
            peers = [m.n for m in members if m is not r]
            median = statistics.median(peers) if peers else 0
            threshold = max(s.audit.distinct_patients_min, s.audit.distinct_patients_peer_factor * median)
            if r.n > threshold:
                out.append(Flag(kind="many_distinct_patients", **_actor(r), count=r.n, threshold=threshold, day=d,
                                explanation=(f"Read {r.n} distinct patients on {d} ({s.audit.timezone}); the threshold is "
                                             f"{threshold:g} = max({s.audit.distinct_patients_min}, "
                                             f"{s.audit.distinct_patients_peer_factor:g} x median {median:g} of "
                                             f"{len(peers)} peer(s) with role {role} at {where} that day).")))
    return out


def _after_hours(ctx, base, since) -> list[Flag]:
    s = ctx.runtime.settings
    _, hour = _local(ctx.session, s.audit.timezone, since)
    start, end = s.audit.working_hours_start, s.audit.working_hours_end
    q = (select(*_actor_cols(), func.count().label("n"), func.min(EVENTS.c.occurred_at).label("first"),
                func.max(EVENTS.c.occurred_at).label("last"))
         .where(base, _PATIENT_DATA, or_(hour < start, hour >= end))
         .group_by(*_actor_cols()))
    return [Flag(kind="outside_working_hours", **_actor(r), count=r.n, first_at=_utc(r.first), last_at=_utc(r.last),
                 explanation=(f"{r.n} access(es) to patient data outside working hours ({start:02d}:00-{end:02d}:00 "
                              f"{s.audit.timezone}), between {_utc(r.first):%Y-%m-%d %H:%M} and {_utc(r.last):%Y-%m-%d %H:%M} UTC."))
            for r in ctx.session.execute(q)]


def _hour_bucket(session):
    col = EVENTS.c.occurred_at
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", col), "YYYY-MM-DD HH24:00")
    return func.strftime("%Y-%m-%d %H:00", col)


def _refusals(ctx, base) -> list[Flag]:
    n_min = ctx.runtime.settings.audit.refusals_per_hour
    hour = _hour_bucket(ctx.session)
    q = (select(*_actor_cols(), hour.label("hour"), func.count().label("n"),
                func.min(EVENTS.c.occurred_at).label("first"), func.max(EVENTS.c.occurred_at).label("last"))
         .where(base, EVENTS.c.outcome.in_((audit.DENIED, audit.NOT_FOUND)))
         .group_by(*_actor_cols(), hour).having(func.count() >= n_min))
    return [Flag(kind="repeated_refusals", **_actor(r), count=r.n, threshold=n_min, day=str(r.hour)[:10],
                 first_at=_utc(r.first), last_at=_utc(r.last),
                 explanation=(f"{r.n} refused requests (denied or not found) in the hour from {r.hour} UTC; "
                              f"the threshold is {n_min} per hour. Repeated refusals can mean probing for records."))
            for r in ctx.session.execute(q)]
