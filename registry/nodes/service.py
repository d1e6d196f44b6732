"""Federated use cases of a provincial node (issue 16 item 4, docs/nodes.md).

Asking side (the node of the caller's province):
- `search_peers`: an exact-identifier search also asks every peer node; what comes back is
  identity confirmation only (reduced again here, whatever a peer sent), marked `held_by`.
  The caller's own search event (patients/service) records how many remote matches and which
  provinces could not be asked.
- `national_coverage`: this province's coverage report plus each peer's, already suppressed by
  that province under its own rules; a peer that does not answer is `stale` with its last good
  answer and the time of it (or `unavailable` if it never answered), never failing the report.

Answering side (the node that holds the records), for a verified caller assertion:
- `answer_search`, `answer_coverage`: the ordinary use cases under this node's rules, with a
  Principal built from the assertion (remote.py); each writes its one audit event, naming the
  remote caller.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from anyio import to_thread

from registry import identifiers
from registry.context import ServiceContext
from registry.errors import Forbidden, NotFound
from registry.nodes import remote
from registry.nodes import repository as repo
from registry.nodes.federation import Federation, PeerUnavailable, caller_claims, query_digest
from registry.patients import service as patients
from registry.patients.schemas import PatientMatch
from registry.reports import service as reports
from security.audit import trail as audit

SEARCH_PATH = "/node/v1/patients/search"
COVERAGE_PATH = "/node/v1/reports/coverage"
_WITHHELD = {"bform": None, "cnic": None, "phone": None, "address": None, "custodian": None, "version": None}


@dataclass
class PeerSearch:
    matches: list[PatientMatch] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)

    def detail(self, asked: int) -> dict:
        return {"peers_asked": asked, "remote_matches": len(self.matches),
                **({"peers_unreachable": self.unreachable} if self.unreachable else {}),
                **({"remote_subjects": [str(m.id) for m in self.matches]} if self.matches else {})}


def federation(ctx: ServiceContext) -> Federation | None:
    fed = ctx.runtime.federation
    return fed if fed is not None and fed.federated else None


async def search_peers(ctx: ServiceContext, fed: Federation, system: str, normalised: str, value: str) -> PeerSearch:
    caller = caller_claims(ctx.access, ctx.principal)
    digest = query_digest(system, normalised)

    async def one(province: str) -> tuple[str, list | None]:
        body = {"assertion": fed.assertion(province, caller, query=digest), "system": system, "value": value}
        try:
            answer = await fed.ask(province, SEARCH_PATH, body)
            return province, [_identity_only(m, province) for m in answer["matches"]]
        except (PeerUnavailable, KeyError, TypeError, ValueError):
            return province, None

    found = PeerSearch()
    for province, matches in await asyncio.gather(*(one(p) for p in fed.peers)):
        if matches is None:
            found.unreachable.append(province)
        else:
            found.matches.extend(matches)
    return found


def _identity_only(match: dict, province: str) -> PatientMatch:
    guardian = match.get("guardian")
    if isinstance(guardian, dict):  # the guardian's name confirms the child; the guardian's CNIC is withheld
        guardian = {"name": guardian.get("name"), "relationship": guardian.get("relationship")}
    m = PatientMatch.model_validate({**match, **_WITHHELD, "guardian": guardian, "access": "search"})
    m.held_by = province
    return m


async def federated_search(ctx: ServiceContext, fed: Federation, system: str, value: str) -> list[PatientMatch]:
    """This node's search, then every peer's: one audit event here (the peers write theirs)."""
    try:
        norm = identifiers.normalise(system, value)
    except ValueError:  # refused (and audited) by the local search, nobody else is asked
        return await to_thread.run_sync(patients.search, ctx, system, value)
    found = await search_peers(ctx, fed, system, norm, value)
    local = await to_thread.run_sync(lambda: patients.search(ctx, system, value, extra=found.detail(len(fed.peers))))
    return [*local, *found.matches]


def answer_search(ctx: ServiceContext, claims: dict, system: str, value: str) -> list[PatientMatch]:
    if claims["caller"].get("query") != _digest_or_none(system, value):
        ctx.trail.record(ctx.session, patients.SEARCH, audit.DENIED, detail={**remote.detail(claims), "reason": "query"})
        raise Forbidden("the caller assertion was made for another search")
    return patients.search(ctx, system, value, extra=remote.detail(claims))


def _digest_or_none(system: str, value: str) -> str | None:
    try:
        return query_digest(system, identifiers.normalise(system, value))
    except ValueError:
        return None


def answer_coverage(ctx: ServiceContext, claims: dict, cohort: str, denominator: str, as_of: date | None) -> dict:
    fed = ctx.runtime.federation
    return reports.coverage_report(ctx, jurisdiction=fed.province, cohort=cohort, denominator=denominator, as_of=as_of,
                                   extra=remote.detail(claims))


NATIONAL = "report.national"


async def national_coverage(ctx: ServiceContext, *, cohort: str, denominator: str, as_of: date | None) -> dict:
    fed = ctx.runtime.federation
    if fed is None or ctx.principal.scope.level != "national":
        outcome = audit.NOT_FOUND if fed is None else audit.DENIED
        ctx.trail.record(ctx.session, NATIONAL, outcome, resource_type=reports.RESOURCE,
                         detail={"reason": "not a provincial node" if fed is None else "not national scope"})
        raise NotFound("the national report is served by provincial nodes to national officials")
    question = f"{cohort}|{denominator}|{as_of.isoformat() if as_of else ''}"
    caller = caller_claims(ctx.access, ctx.principal)

    async def one(province: str) -> tuple[str, dict | None]:
        body = {"assertion": fed.assertion(province, caller), "cohort": cohort, "denominator": denominator,
                "as_of": as_of.isoformat() if as_of else None}
        try:
            answer = await fed.ask(province, COVERAGE_PATH, body)
            own = isinstance(answer.get("jurisdiction"), dict) and answer["jurisdiction"].get("code") == province
            return province, answer if own and "rows" in answer else None  # a province answers for itself only
        except PeerUnavailable:
            return province, None

    answers = dict(await asyncio.gather(*(one(p) for p in fed.peers)))
    now = datetime.now(UTC)

    def in_transaction() -> tuple[dict, list[dict]]:
        """The fresh answers are kept and the last good ones read in the report's own transaction."""
        for province, answer in answers.items():
            if answer is not None:
                repo.remember(ctx.session, province, question, answer, now)
        kept = repo.last_good(ctx.session, [p for p, a in answers.items() if a is None], question)
        peers = []
        for province, answer in sorted(answers.items()):
            if answer is not None:
                peers.append({"province": province, "status": "fresh", "as_of": now.isoformat(), "report": answer})
            elif province in kept:
                last = kept[province]
                peers.append({"province": province, "status": "stale", "as_of": last.fetched_at.isoformat(),
                              "report": last.report})
            else:
                peers.append({"province": province, "status": "unavailable", "as_of": None, "report": None})
        extra = {"national": True, "stale": [p["province"] for p in peers if p["status"] != "fresh"]}
        own = reports.coverage_report(ctx, jurisdiction=fed.province, cohort=cohort, denominator=denominator,
                                      as_of=as_of, action=NATIONAL, extra=extra)
        return own, peers

    own, peers = await to_thread.run_sync(in_transaction)
    mine = {"province": fed.province, "status": "fresh", "as_of": now.isoformat(), "report": own}
    return {"cohort": cohort, "denominator": denominator, "provinces": sorted([mine, *peers], key=lambda p: p["province"])}
