"""Running the audit sealer and verifier for this registry (keys from the keyring, origin from the
country setting).

Invariants:
- The background sealer runs beside the request path, never in it: in `nhr worker`
  (registry/worker.py; production) or in the API process (NHR_IN_PROCESS_WORKER), as an
  asyncio task that seals in a worker thread every `settings.audit.seal_interval_seconds` (0 disables
  it). Several workers or hosts may run it; the sealer's lock lets one seal at a time.
- A failed seal is logged by exception class only (no data) and retried on the next tick.
- Each tick looks for unsealed events near the sealed head (cheap); every `FULL_SCAN_EVERY`
  ticks, and at start, it scans the whole table, so an event committed very late is still sealed.
- Events the sealer cannot vouch for (security/audit/sealer.py: no valid MAC, or back-dated
  beyond `settings.audit.seal_grace_seconds`) are sealed as quarantined, counted in the metric
  `nhr_audit_quarantined_events_total{reason}` and logged by position and reason only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import Counter

from registry import periodic
from registry.runtime import Runtime
from security.audit import sealer, signing_key, verify
from security.audit.checkpoint import Signer, origin_for
from security.audit.checkpoint import verifier as checkpoint_verifier

log = logging.getLogger("nhr.audit.sealer")
LOOKBACK = timedelta(minutes=10)
FULL_SCAN_EVERY = 300
UNREADABLE = Counter("nhr_audit_unreadable_events_total", "Unsealed audit rows the sealer could not read (damaged)")
QUARANTINED = Counter("nhr_audit_quarantined_events_total",
                      "Audit events sealed as quarantined (not vouched for by the registry)", ["reason"])


def origin(rt: Runtime) -> str:
    return origin_for(rt.settings.country)


def signer(rt: Runtime, *, fresh: bool = False) -> Signer:
    """The current checkpoint key (security/audit/signing_key.py: re-read after a rotation)."""
    return Signer(signing_key.load(rt.keyring, fresh=fresh), origin(rt))


def public_key(rt: Runtime) -> Ed25519PublicKey:
    """The current checkpoint key's public half (older checkpoints: follow the key hand-overs)."""
    return signing_key.load(rt.keyring).public_key()


def verifier(rt: Runtime):
    return checkpoint_verifier(origin(rt), public_key(rt))


def seal_once(rt: Runtime, *, full: bool = True) -> sealer.SealResult | None:
    try:
        with rt.sessions.begin() as s:
            result = sealer.seal(s, signer(rt), mac=rt.event_mac, grace=grace(rt), lookback=None if full else LOOKBACK)
    except sealer.KeyHandedOver:  # another process rotated the key: read the new one and seal with it
        with rt.sessions.begin() as s:
            result = sealer.seal(s, signer(rt, fresh=True), mac=rt.event_mac, grace=grace(rt),
                                 lookback=None if full else LOOKBACK)
    if result is not None and result.quarantined:
        _report(result.quarantined)
    if result is not None and result.unreadable:
        UNREADABLE.inc(result.unreadable)
        log.warning("audit sealer skipped %d unsealed row(s) that cannot be read (run `nhr audit verify`)",
                    result.unreadable)
    return result


def grace(rt: Runtime) -> timedelta:
    return timedelta(seconds=rt.settings.audit.seal_grace_seconds)


def _report(quarantined) -> None:
    """A metric and a log line naming positions and reasons, never an event's contents."""
    for _, reason in quarantined:
        QUARANTINED.labels(reason).inc()
    log.warning("audit sealer quarantined %d event(s) it cannot vouch for (written outside the registry?): %s",
                len(quarantined), ", ".join(f"position {p} {r}" for p, r in quarantined[:20]))


def seal_all(rt: Runtime, *, full: bool = True, quarantined: list | None = None) -> int:
    """Seal until nothing is left; returns the number of events sealed. `quarantined` collects
    the (position, reason) of events sealed as quarantined."""
    total = 0
    while (result := seal_once(rt, full=full)) is not None and result.sealed:
        total += result.sealed
        if quarantined is not None:
            quarantined.extend(result.quarantined)
    return total


def verify_database(rt: Runtime, trusted: tuple[int, bytes] | None = None, *, required_witnesses: int = 0) -> verify.Report:
    """Raises verify.Discrepancy at the first disagreement. `required_witnesses`: cosignatures of
    that many witnesses of NHR_AUDIT_WITNESSES_FILE are required on some checkpoint."""
    from registry.audit_log import transparency

    with rt.sessions() as s:
        return verify.verify_database(s, origin(rt), public_key(rt), trusted=trusted,
                                      witnesses=transparency.witnesses(rt) if required_witnesses else None,
                                      required_witnesses=required_witnesses)


def export(rt: Runtime, path: Path) -> int:
    """Write the sealed log as NDJSON (mode 0600: it names actors). Returns the tree size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with rt.sessions() as s, os.fdopen(fd, "w", encoding="utf-8") as f:
        lines = verify.export_lines(s, origin(rt), public_key(rt))
        header = next(lines)
        f.write(header + "\n")
        for line in lines:
            f.write(line + "\n")
    return int(json.loads(header)["tree_size"])


def start_background(rt: Runtime) -> asyncio.Task | None:
    return periodic.start("nhr-audit-sealer", rt.settings.audit.seal_interval_seconds,
                          lambda tick: seal_all(rt, full=tick % FULL_SCAN_EVERY == 0), log, "audit sealing")


stop_background = periodic.stop
