"""`Idempotency-Key` on every POST (issue 5, DESIGN invariant 7), for every route behind `require`.

How it fits the unit of work (api/deps.py):
- The gate, once the principal is known and allowed, calls `begin`: it validates the key, claims
  it in its own short transaction (committed before the work) or finds the stored response. A
  replay is audited (`idempotency.replay`, with the original request's patients as subjects) and
  raised as `IdempotentReplay`, which the unit of work commits and the handler here answers.
- On success the unit of work does not commit: it hands its session to the `Pending` of the
  request. This middleware sees the response FastAPI built, stores it (encrypted) on the claim
  in the SAME transaction as the data, commits, and only then lets the response out. A failed
  commit answers 500 and releases the claim; a request that failed releases it in its refusal
  transaction. So a key never exists without its data, nor data without its key. A commit that
  could not reach the database answers 503 `database-unavailable`; one whose connection was lost
  during COMMIT answers 503 `outcome-unknown`: the retry with the same key either replays the
  stored answer (it was committed) or runs once (it was not).
- Public POSTs (login, citizen token, certificate verification) have no principal to scope a key
  to; they ignore the header and store nothing (bearer tokens are not kept at rest to be replayed).
- Routes on the async unit of work (`require(..., on_loop=True)`: register, record a dose; on
  PostgreSQL) do the same on the unit's one connection (`AsyncPending`,
  registry/sync/idempotency_async.py): the claim in autocommit before BEGIN, the stored response
  in the data's transaction, COMMIT, all on the event loop. A failed request's claim is released
  and its refusals written by the unit of work as for every route.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from registry import database
from registry import errors as e
from registry.audit_log import async_events
from registry.sync import idempotency as store
from registry.sync import idempotency_async as store_async
from security.audit import trail as audit
from security.audit.trail import PatientRef

log = logging.getLogger("nhr.api")
_PENDING = "nhr_idempotency"
_CONN = "nhr_idempotency_connection"
_INSTALLED = "nhr_idempotency_installed"
REPLAY_ACTION = "idempotency.replay"


class IdempotentReplay(Exception):
    """Raised by the gate to answer with a stored response (not an error: it commits)."""

    def __init__(self, stored: store.Stored) -> None:
        super().__init__("idempotent replay")
        self.stored = stored


@dataclass
class Pending:
    """A claimed key for the current request, and (after the route succeeded) its open session."""

    runtime: object
    claim: store.Claim
    trail: object
    session: object | None = None
    done: bool = False

    def defer(self, session) -> None:
        self.session = session

    def finish(self, status: int, headers: dict, body: bytes) -> Exception | None:
        """Store the response and commit with the data. None: committed; otherwise the failure
        (`DatabaseUnavailable`/`OutcomeUnknown` as for every commit, anything else: nothing was committed)."""
        session, self.done = self.session, True
        try:
            if 200 <= status < 300:
                stored = store.Stored(status, body, headers, tuple(dict.fromkeys(self.trail.touched)))
                if not store.complete(session, self.runtime.keyring, self.claim, stored):
                    raise RuntimeError("the idempotency claim was lost (lock timeout) before the response was stored")
            else:
                store.release(session, self.claim)
            database.commit(session)
            return None
        except Exception as exc:  # noqa: BLE001 - answered by the middleware
            log.error("idempotent commit failed: %s", type(exc).__name__)
            session.rollback()
            self._release_quietly(session)  # only ever a PENDING claim of ours: a committed one stays DONE
            if isinstance(exc, e.ServiceUnavailable):
                return exc
            return database.unavailable_error() if database.unavailable(exc) else exc
        finally:
            session.close()

    def abandon(self) -> None:
        """The response was never sent (client gone, server error): nothing is committed."""
        if self.session is not None and not self.done:
            self.done = True
            self.session.rollback()
            self._release_quietly(self.session)
            self.session.close()

    def _release_quietly(self, session) -> None:
        try:
            store.release(session, self.claim)
            session.commit()
        except Exception:  # noqa: BLE001 - the claim then expires after its lock timeout
            session.rollback()


async def begin(request: Request, uow, principal) -> None:
    """Called by the gate: claim the key, or audit and raise the replay. No key: nothing to do."""
    key = request.headers.get(store.HEADER)
    if key is None or request.method != "POST":
        return
    store.validate_key(key)
    if not request.scope.get("state", {}).get(_INSTALLED):
        raise RuntimeError("Idempotency-Key needs IdempotencyMiddleware (api/idempotency.install)")
    rt = request.app.state.runtime
    path = request.url.path
    target = path + ("?" + request.url.query if request.url.query else "")
    kh = store.key_hash(principal.user_id, request.method, path, key)
    fp = store.fingerprint(request.method, target, await request.body())
    if getattr(uow, "unit", None) is not None:
        await _begin_on_unit(request, uow, rt, kh, fp)
        return
    if rt.engine.dialect.name == "postgresql" and not uow.session.in_transaction():
        # One connection for the claim and the work: the claim names its backend, so a claim whose
        # backend is gone (worker killed, connection dropped) is released at once (store.claim).
        conn = request.scope["state"][_CONN] = await run_in_threadpool(rt.engine.connect)
        uow.session.bind = conn
    result = await run_in_threadpool(_claim, uow.session, rt, kh, fp)
    if isinstance(result, store.Claim):
        request.scope["state"][_PENDING] = uow.idempotency = Pending(rt, result, uow.trail)
        return
    subjects = list(result.subjects)
    await run_in_threadpool(
        uow.trail.record, uow.session, REPLAY_ACTION, audit.SUCCESS, resource_type=_resource(uow.action),
        patient=PatientRef(subjects[0]) if len(subjects) == 1 else None, subjects=subjects,
        detail={"replayed_action": uow.action, "status": result.status})
    raise IdempotentReplay(result)


class AsyncPending:
    """`Pending` for a route on the async unit of work (registry/async_unit.py, PostgreSQL): the
    claim was made on the unit's connection, the data waits in its open transaction, and the
    response is stored and committed there, without a thread hand-off."""

    def __init__(self, runtime, claim: store.Claim, trail, unit) -> None:
        self.runtime, self.claim, self.trail, self.unit = runtime, claim, trail, unit
        self.session = None  # set (to the unit) once the route succeeded: the middleware holds the response
        self.done = False

    def defer(self, _session) -> None:
        self.session = self.unit

    async def finish_async(self, status: int, headers: dict, body: bytes) -> Exception | None:
        unit, self.done = self.unit, True
        try:
            if 200 <= status < 300:
                stored = store.Stored(status, body, headers, tuple(dict.fromkeys(self.trail.touched)))
                if not await store_async.complete(unit, self.runtime.keyring, self.claim, stored):
                    raise RuntimeError("the idempotency claim was lost (lock timeout) before the response was stored")
            else:
                await store_async.release(unit, self.claim)
            await unit.commit()
            return None
        except Exception as exc:  # noqa: BLE001 - answered by the middleware
            log.error("idempotent commit failed: %s", type(exc).__name__)
            await unit.rollback()
            await self._release_quietly()
            if isinstance(exc, e.ServiceUnavailable):
                return exc
            return database.unavailable_error() if database.unavailable(exc) else exc
        finally:
            await unit.close()

    async def abandon_async(self) -> None:
        if self.session is not None and not self.done:
            self.done = True
            await self.unit.rollback()
            await self._release_quietly()
            await self.unit.close()

    async def _release_quietly(self) -> None:
        try:
            await store_async.release(self.unit, self.claim)
        except Exception:  # noqa: BLE001 - the claim then expires after its lock timeout
            pass


async def _begin_on_unit(request: Request, uow, rt, kh: bytes, fp: bytes) -> None:
    """`begin` for a route on the async unit of work: the claim in autocommit on its connection."""
    s = rt.settings
    result = await store_async.claim(uow.unit, rt.keyring, kh, fp, lock_seconds=s.idempotency.lock_seconds,
                                     ttl_seconds=s.idempotency.ttl_seconds)
    if isinstance(result, store.Claim):
        request.scope["state"][_PENDING] = uow.idempotency = AsyncPending(rt, result, uow.trail, uow.unit)
        return
    subjects = list(result.subjects)
    lease = await uow.unit._conn()
    await async_events.record(uow.unit.db, lease, uow.trail, REPLAY_ACTION, audit.SUCCESS, resource_type=_resource(uow.action),
                              patient=PatientRef(subjects[0]) if len(subjects) == 1 else None, subjects=subjects,
                              detail={"replayed_action": uow.action, "status": result.status})
    raise IdempotentReplay(result)


def _resource(action: str | None) -> str:
    prefix = (action or "").split(".")[0]
    return {"immunization": "Immunization", "sync": "Bundle", "certificate": "Certificate", "user": "User"}.get(prefix, "Patient")


def _claim(session, rt, kh, fp):
    if session.in_transaction():  # pragma: no cover - the gate is the first to use the session
        raise RuntimeError("the idempotency claim must be its own transaction")
    s = rt.settings
    try:
        result = store.claim(session, rt.keyring, kh, fp, lock_seconds=s.idempotency.lock_seconds,
                             ttl_seconds=s.idempotency.ttl_seconds)
        session.commit()
        return result
    except BaseException:
        session.rollback()
        raise


async def _replay(request: Request, exc: IdempotentReplay) -> Response:
    stored = exc.stored
    headers = {k: v for k, v in stored.headers.items() if k != "content-type"}
    headers["Idempotent-Replayed"] = "true"
    return Response(stored.body, status_code=stored.status, headers=headers, media_type=stored.headers.get("content-type"))


_FAILED = json.dumps({"type": "urn:nhr:problem:internal-error", "title": "Internal error", "status": 500,
                      "detail": "the request failed; nothing was changed"}).encode()


def _failure_messages(exc: Exception, request_id: str | None) -> list[dict]:
    """The raw ASGI answer to a commit that failed: 503 with Retry-After when the database was
    unreachable or the outcome is unknown (api/problems.py's shape), else 500."""
    if isinstance(exc, e.ServiceUnavailable):
        unknown = isinstance(exc, e.OutcomeUnknown)
        body = {"type": f"urn:nhr:problem:{'outcome-unknown' if unknown else 'database-unavailable'}",
                "title": "Outcome unknown" if unknown else "Database unavailable", "status": 503, "detail": exc.message}
        if request_id:
            body["request_id"] = request_id
        if unknown:
            body["outcome"] = "unknown"
        raw, status = json.dumps(body).encode(), 503
        extra = [(b"retry-after", str(exc.retry_after or database.RETRY_AFTER_SECONDS).encode())]
    else:
        raw, status, extra = _FAILED, 500, []
    return [{"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/problem+json"), (b"content-length", str(len(raw)).encode()), *extra]},
            {"type": "http.response.body", "body": raw}]


class IdempotencyMiddleware:
    """Holds back the response of a request whose unit of work deferred its commit, until the
    response is stored with the data and committed (see the module docstring)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[_INSTALLED] = True
        held: list = []

        async def hold(message):
            p = scope["state"].get(_PENDING)
            if p is None or p.session is None or p.done:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                start = held[0]
                body = b"".join(m.get("body", b"") for m in held[1:])
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start.get("headers", [])}
                keep = {k: v for k, v in headers.items() if k in store.STORED_HEADERS}
                if isinstance(p, AsyncPending):
                    failure = await p.finish_async(start["status"], keep, body)
                else:
                    failure = await run_in_threadpool(p.finish, start["status"], keep, body)
                for m in held if failure is None else _failure_messages(failure, scope["state"].get("request_id")):
                    await send(m)

        try:
            await self.app(scope, receive, hold)
        finally:
            p = scope["state"].get(_PENDING)
            if p is not None and p.session is not None and not p.done:
                if isinstance(p, AsyncPending):
                    await p.abandon_async()
                else:
                    await run_in_threadpool(p.abandon)
            conn = scope["state"].pop(_CONN, None)
            if conn is not None:  # the request's pinned connection (begin), after its session was closed
                await run_in_threadpool(conn.close)


def install(app: FastAPI) -> None:
    app.add_exception_handler(IdempotentReplay, _replay)
    app.add_middleware(IdempotencyMiddleware)
