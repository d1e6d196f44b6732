"""The node-to-node listener of a provincial node (issue 16 item 4, docs/nodes.md).

A separate ASGI app, served by `nhr node serve` on its own port with mutual TLS required
(uvicorn: `ssl_cert_reqs=CERT_REQUIRED`, the federation CA as the only trust anchor): a client
without a certificate issued by the federation CA never completes the handshake. It shares the
process's Runtime with the public API, so the same keys, rules and audit trail apply.

Invariants:
- Every route reads a caller assertion signed by the calling node (security/nodes/identity.py),
  accepts it only from a node listed in this node's peers file (removing a province from the file
  is how it stops being answered, whatever its certificate), and maps it to a Principal of this node's rules (registry/nodes/remote.py); a rejected assertion
  is answered 401 and audited (`node.assertion`, unauthenticated), a caller this node does not
  accept is 403 and audited (denied).
- The two linkage routes (`/node/v1/linkage/encodings`, `/pairs`: registry/linkage/node_exchange.py)
  also admit the node named by `NHR_NODE_COMPARER`, which is not a peer, and answer only it,
  speaking as the linkage comparer; anyone else, a peer included, is 403 and audited (denied).
  Each calling node may make `NHR_NODE_LINKAGE_RATE_LIMIT_REQUESTS` requests to them per
  `NHR_NODE_LINKAGE_RATE_LIMIT_WINDOW_SECONDS` (registry/rate_limit.py, counted in the database);
  past that, 429 problem+json with Retry-After, audited as denied (`reason: rate_limited`).
- Each request is one transaction with its audit event; refusals are written again after the
  rollback (as in api/deps.py); a database that cannot be reached answers 503.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Callable, Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from api import problems
from registry import database, rate_limit
from registry import errors as e
from registry.context import ServiceContext
from registry.linkage import node_exchange as nodes_linkage
from registry.nodes import remote
from registry.nodes import service as nodes
from registry.runtime import Runtime
from security.access.principal import AccessContext
from security.audit import trail as audit
from security.audit.trail import AuditTrail
from security.nodes.identity import AssertionRejected


class RemoteSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assertion: dict
    system: Literal["nhr", "bform", "cnic"]
    value: str = Field(min_length=1, max_length=32)


class RemoteCoverage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assertion: dict
    cohort: str = Field(pattern=r"^\d{4}(-\d{2})?$")
    denominator: Literal["registered", "target"] = "registered"
    as_of: date | None = None


class EncodingsPull(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assertion: dict
    after: str | None = Field(None, max_length=120)
    limit: int = Field(nodes_linkage.PAGE_MAX, ge=1, le=nodes_linkage.PAGE_MAX)


class PushedPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    local_id: uuid.UUID
    remote_node: str = Field(pattern=r"^[A-Z]{2}(-[A-Z]{2,3})?$")
    remote_id: uuid.UUID
    similarity: float = Field(ge=0, le=1)  # the match probability of the field-level encodings (bloom_fields.score)
    grade: Literal["certain", "probable", "possible"]
    # the comparison levels of the encoded fields (registry/linkage/explain.py reads them as reasons)
    levels: dict[Literal["given_name", "family_name", "guardian_name", "birth_date", "sex"], int] = Field(max_length=5)


class WithdrawnPair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    local_id: uuid.UUID
    remote_node: str = Field(pattern=r"^[A-Z]{2}(-[A-Z]{2,3})?$")
    remote_id: uuid.UUID


class PairsPush(BaseModel):
    model_config = ConfigDict(extra="forbid")
    assertion: dict
    pairs: list[PushedPair] = Field(max_length=nodes_linkage.PAGE_MAX)
    # pairs the comparer withdraws (a record merged, erased or changed): out of the stewards' queue
    withdrawn: list[WithdrawnPair] = Field(default_factory=list, max_length=nodes_linkage.PAGE_MAX)


def _comparer(request: Request) -> Callable:
    """The principal of a linkage exchange: none (a system exchange, audited as the calling node),
    once the asking node is this node's comparer speaking as the linkage comparer."""
    fed = request.app.state.runtime.federation

    def check(claims: dict) -> None:
        nodes_linkage.check_comparer(claims, fed.comparer)
        return None
    return check


def _serve(request: Request, assertion: dict, action: str, principal_of: Callable, use_case: Callable,
           *, comparer_route: bool = False):
    rt: Runtime = request.app.state.runtime
    rid = uuid.uuid4().hex
    session = rt.sessions()
    trail = AuditTrail(AccessContext(None, None, rid, "node:unverified"))
    try:
        try:
            claims = rt.federation.verifier.verify(assertion)
            admitted = set(rt.federation.peers) | ({rt.federation.comparer} if comparer_route and rt.federation.comparer else set())
            if claims["node"] not in admitted:  # removed from the peers file: no longer answered
                raise AssertionRejected("the asking node is not a peer of this node")
        except AssertionRejected as exc:
            trail.record(session, action, audit.UNAUTHENTICATED, resource_type="Node", detail={"reason": str(exc)})
            raise e.Unauthenticated(str(exc)) from None
        trail = AuditTrail(AccessContext(None, None, rid, f"node:{claims['node']}"))
        if comparer_route:  # the linkage routes: a rate limit per calling node, before anything is read
            limits = rt.settings.node
            try:
                rate_limit.check_sync(rt.engine, rate_limit.node_key(claims["node"]), limits.linkage_rate_limit_requests,
                                      limits.linkage_rate_limit_window_seconds)
            except e.TooManyAttempts:
                trail.record(session, action, audit.DENIED, resource_type="Node",
                             detail={**remote.detail(claims), "reason": "rate_limited"})
                raise
        try:
            principal = principal_of(claims)
            purpose = remote.purpose(claims, principal) if principal is not None else "HOPERAT"
        except e.Forbidden as exc:
            trail.record(session, action, audit.DENIED, resource_type="Node", detail={**remote.detail(claims), "reason": exc.message})
            raise
        trail = AuditTrail(AccessContext(principal, purpose, rid, f"node:{claims['node']}"))
        result = use_case(ServiceContext(session, rt, trail), claims)
        database.commit(session)
        return result
    except e.DomainError:
        session.rollback()
        trail.replay_refusals(session)
        database.commit(session)
        raise
    except Exception as exc:
        session.rollback()
        if database.unavailable(exc):
            raise database.unavailable_error() from None
        raise
    finally:
        session.close()


def create_node_app(runtime: Runtime) -> FastAPI:
    if runtime.federation is None or runtime.federation.verifier is None:
        raise ValueError("the node listener needs NHR_NODE_PROVINCE and NHR_NODE_TLS_CERT, _KEY and _CA")
    app = FastAPI(title="NHR node-to-node", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runtime = runtime
    problems.install(app)

    @app.post(nodes.SEARCH_PATH)
    def search(body: RemoteSearch, request: Request) -> dict:
        matches = _serve(request, body.assertion, "patient.search", remote.searcher,
                         lambda ctx, claims: nodes.answer_search(ctx, claims, body.system, body.value))
        return {"matches": [m.model_dump(mode="json", exclude_none=True) for m in matches]}

    @app.post(nodes.COVERAGE_PATH)
    def coverage(body: RemoteCoverage, request: Request) -> dict:
        return _serve(request, body.assertion, "report.coverage", remote.report_reader,
                      lambda ctx, claims: nodes.answer_coverage(ctx, claims, body.cohort, body.denominator, body.as_of))

    @app.post(nodes_linkage.ENCODINGS_PATH)
    def encodings(body: EncodingsPull, request: Request) -> dict:
        province = runtime.federation.province
        return _serve(request, body.assertion, nodes_linkage.PULL, _comparer(request),
                      lambda ctx, claims: nodes_linkage.encodings_page(ctx, claims, province, body.after, body.limit),
                      comparer_route=True)

    @app.post(nodes_linkage.PAIRS_PATH)
    def pairs(body: PairsPush, request: Request) -> dict:
        province = runtime.federation.province
        return _serve(request, body.assertion, nodes_linkage.PUSH, _comparer(request),
                      lambda ctx, claims: nodes_linkage.store_pairs(ctx, claims, province,
                                                                    [p.model_dump() for p in body.pairs],
                                                                    [w.model_dump() for w in body.withdrawn]),
                      comparer_route=True)

    return app
