"""`nhr certificate ...`: issuer keys, offline and online verification, trust lists.

Verification prints what failed (a stable code) and the certificate's envelope (signer kid,
issuer country, validity, UVCI); the holder's name and birth date are shown only with --show.
Exit status: 0 valid, 1 invalid, 2 usage error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from registry.certificates import service
from registry.runtime import Runtime
from registry.settings import get_settings
from security.certificates.trust import TrustList, TrustListError

app = typer.Typer(help="Vaccination certificates (EU DCC / WHO DDCC:VS, HC1)", no_args_is_help=True)
trust_app = typer.Typer(help="Trust lists for offline verification", no_args_is_help=True)
app.add_typer(trust_app, name="trust-list")
console = Console()


def _runtime() -> Runtime:
    return Runtime.build(get_settings())


@app.command("keys")
def keys(custodian: list[str] = typer.Option(None, help="province code(s); default every province")):
    """Create missing document signer keys and certificates (a national CSCA signs one per province); renew a signer
    within NHR_CERTIFICATE_SIGNER_RENEW_DAYS of its expiry (the old one stays trusted for what it signed)."""
    rt = Runtime.build(get_settings(), provisioning=True)
    issuers = service.issuer_keys(rt)
    if not custodian:
        rt.load_keys()
        custodian = sorted(rt.keys.custodians())
    for c in custodian:  # renews a signer within NHR_CERTIFICATE_SIGNER_RENEW_DAYS of its expiry
        s = issuers.signer(c, renew_days=rt.settings.certificates.signer_renew_days)
        console.print(f"{c}: kid {s.kid.hex()} valid until {s.certificate.not_valid_after_utc.date()}")


def _clock(at: str | None) -> datetime | None:
    if at is None:
        return None
    try:
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter("--at must be an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@app.command("verify")
def verify(hc1: str = typer.Argument(..., help='the QR code text, "HC1:..."'),
           trust_list: Path = typer.Option(None, "--trust-list", help="verify offline against this trust list JSON (default: none, this registry's own issuers)"),
           at: str = typer.Option(None, help="validation clock (ISO 8601), default now"),
           show: bool = typer.Option(False, help="also print the certificate payload (holder's data)")):
    """Verify a certificate: decode, signature against the trust list, validity, revocation."""
    now = _clock(at)
    if trust_list is not None:
        try:
            tl = TrustList.from_json(trust_list.read_text())
        except (OSError, TrustListError) as exc:
            console.print(f"[red]cannot read the trust list[/red]: {exc}")
            raise typer.Exit(2)
        result = service.verify_text(hc1, tl, now=now)
    else:
        rt = _runtime()
        with rt.sessions() as session:
            result = service.verify(session, rt, hc1, now=now)
    if not result.valid:
        console.print(f"INVALID {result.code}: {result.message}")
        raise typer.Exit(1)
    v = (result.dcc.get("v") or [{}])[0]
    console.print(f"VALID kid={result.kid} iss={result.issuer} issued={result.issued_at:%Y-%m-%d} "
                  f"expires={result.expires_at:%Y-%m-%d} uvci={v.get('ci')}")
    if show:
        console.print_json(json.dumps(result.dcc, default=str))


@trust_app.command("export")
def export(out: Path = typer.Argument(..., help="file to write (JSON)")):
    """Write the registry's trust list (document signer certificates, revoked UVCI hashes)."""
    rt = _runtime()
    with rt.sessions() as session:
        tl = service.trust_list(rt, session)
    out.write_text(tl.to_json())
    console.print(f"{len(tl.signers)} signer(s), {len(tl.revoked)} revocation(s) -> {out}")


@trust_app.command("import")
def import_certificate(certificate: Path = typer.Argument(..., help="a document signer certificate (PEM or base64 DER)")):
    """Trust another issuer's document signer certificate (stored in the keyring)."""
    rt = _runtime()
    kid = service.import_certificate(rt, certificate.read_text())
    console.print(f"trusted kid {kid}")
