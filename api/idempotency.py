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
  transaction. So a key never exists without its data, nor data without its key.
- Public POSTs (login, citizen token, certificate verification) have no principal to scope a key
  to; they ignore the header and store nothing (bearer tokens are not kept at rest to be replayed).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from registry.sync import idempotency as store
from security.audit import trail as audit
from security.audit.trail import PatientRef

log = logging.getLogger("nhr.api")
_PENDING = "nhr_idempotency"
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

    def finish(self, status: int, headers: dict, body: bytes) -> bool:
        """Store the response and commit with the data. False: nothing was committed."""
        session, self.done = self.session, True
        try:
            if 200 <= status < 300:
                stored = store.Stored(status, body, headers, tuple(dict.fromkeys(self.trail.touched)))
                if not store.complete(session, self.runtime.keyring, self.claim, stored):
                    raise RuntimeError("the idempotency claim was lost (lock timeout) before the response was stored")
            else:
                store.release(session, self.claim)
            session.commit()
            return True
        except Exception as exc:  # noqa: BLE001 - answered as 500 by the middleware, nothing committed
            log.error("idempotent commit failed: %s", type(exc).__name__)
            session.rollback()
            self._release_quietly(session)
            return False
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
                if await run_in_threadpool(p.finish, start["status"], keep, body):
                    for m in held:
                        await send(m)
                else:
                    await send({"type": "http.response.start", "status": 500, "headers": [
                        (b"content-type", b"application/problem+json"), (b"content-length", str(len(_FAILED)).encode())]})
                    await send({"type": "http.response.body", "body": _FAILED})

        try:
            await self.app(scope, receive, hold)
        finally:
            p = scope["state"].get(_PENDING)
            if p is not None and p.session is not None and not p.done:
                await run_in_threadpool(p.abandon)


def install(app: FastAPI) -> None:
    app.add_exception_handler(IdempotentReplay, _replay)
    app.add_middleware(IdempotencyMiddleware)
