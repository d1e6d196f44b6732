"""The receiving side: who a verified caller assertion says is asking, as a Principal this node's
own rules apply to (issue 16 item 4, docs/nodes.md).

Invariants:
- A calling node speaks only for its own staff: a searching caller must be scoped inside the
  calling node's province (so it can never claim this province's capture scope), and a report
  caller must be national (the national coverage report). Anything else is Forbidden.
- The permission is this node's: the caller's role is mapped through this node's role table,
  and its stated purpose must be one that role may state here.
- The audit event names the remote caller: its username is prefixed with the calling node
  (`PK-SD:clinic.karachi`), its user id is the caller's own, and the event detail carries the
  calling node and caller as asserted.
"""

from __future__ import annotations

import uuid

from registry.errors import Forbidden
from security.access.permissions import ROLE_PERMISSIONS, Permission
from security.access.principal import Principal, PurposeRejected, Scope, resolve_purpose


def _principal(claims: dict) -> Principal:
    c = claims["caller"]
    try:
        user_id = uuid.UUID(str(c.get("user_id")))
    except ValueError:
        raise Forbidden("the caller assertion names no user") from None
    role = c.get("role")
    if role not in ROLE_PERMISSIONS:
        raise Forbidden("the caller's role is not one this node knows")
    level, code = c.get("scope_level"), c.get("scope_code")
    if level not in ("facility", "district", "province", "national") or not isinstance(code, str):
        raise Forbidden("the caller's scope is not one this node knows")
    scope = Scope(level, code[:32], str(c.get("province") or "")[:16] or None, str(c.get("district") or "")[:32] or None)
    return Principal.build(user_id, f"{claims['node']}:{str(c.get('username', ''))[:64]}", role, scope)


def purpose(claims: dict, principal: Principal) -> str:
    try:
        return resolve_purpose(principal.role, claims["caller"].get("purpose"), None)
    except PurposeRejected:
        raise Forbidden("the caller's purpose of use is not one its role may state") from None


def searcher(claims: dict) -> Principal:
    p = _principal(claims)
    if p.scope.level == "national" or p.scope.province != claims["node"]:
        raise Forbidden("a node speaks only for staff scoped inside its own province")
    if not p.can(Permission.PATIENT_SEARCH):
        raise Forbidden("the caller's role may not search")
    return p


def report_reader(claims: dict) -> Principal:
    p = _principal(claims)
    if p.scope.level != "national" or not p.can(Permission.REPORT_READ):
        raise Forbidden("only a national report reader may ask for a province's aggregates")
    return p


def detail(claims: dict) -> dict:
    """What the audit event keeps of the assertion: the calling node and the caller as asserted."""
    c = claims["caller"]
    return {"remote_node": claims["node"], "remote_caller": {
        "user_id": str(c.get("user_id"))[:36], "role": str(c.get("role"))[:32],
        "scope": f"{c.get('scope_level')}:{c.get('scope_code')}"[:48], "purpose": str(c.get("purpose"))[:16]}}
