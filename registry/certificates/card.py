"""Presentation of an issued certificate: QR code (PNG, SVG) and a printable HTML vaccination card.

QR codes use error correction level Q, as the DCC specification recommends; the HC1 text is all
QR alphanumeric characters, so segno encodes it in alphanumeric mode. Every value placed in the
HTML is escaped.
"""

from __future__ import annotations

import html
import io

import segno

from registry.immunizations.vaccines import VACCINES


def _qr(hc1: str):
    return segno.make(hc1, error="q", micro=False)


def qr_png(hc1: str, scale: int = 4) -> bytes:
    buf = io.BytesIO()
    _qr(hc1).save(buf, kind="png", scale=scale, border=4)
    return buf.getvalue()


def qr_svg(hc1: str, scale: int = 4) -> str:
    buf = io.BytesIO()
    _qr(hc1).save(buf, kind="svg", scale=scale, border=4, xmldecl=False, title="Vaccination certificate")
    return buf.getvalue().decode()


def qr_svg_inline(hc1: str) -> str:
    """The QR code as an `<svg>` element for a page: a viewBox and no fixed size, so the page's
    stylesheet sizes it (the page names it for screen readers)."""
    return _qr(hc1).svg_inline(scale=1, border=4, omitsize=True, svgclass="qr")


def html_card(issued) -> str:
    e = html.escape
    dcc = issued.dcc
    name = " ".join(x for x in (dcc["nam"].get("gn"), dcc["nam"].get("fn")) if x)
    rows = "".join(
        f"<tr><td>{e(VACCINES.get(d.vaccine, {}).get('name', d.vaccine))}</td><td>{e(d.vaccine)}-{d.dose_number}</td>"
        f"<td>{e(d.date_given.isoformat())}</td><td>{'reported' if d.reported else 'administered'}</td></tr>"
        for d in issued.doses)
    v = dcc["v"][0]
    svg = _qr(issued.hc1).svg_inline(scale=3, border=4)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Vaccination certificate</title>
<style>body{{font-family:sans-serif;max-width:42em;margin:2em auto}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #999;padding:.3em;text-align:left}}.qr{{float:right;margin-left:1em}}
@media print{{.noprint{{display:none}}}}</style></head>
<body><h1>Vaccination certificate</h1>
<div class="qr">{svg}</div>
<p><strong>Name:</strong> {e(name)}<br><strong>Date of birth:</strong> {e(dcc["dob"])}<br>
<strong>Certificate for:</strong> {e(issued.disease_display)} (dose {v["dn"]} of {v["sd"]}, {e(v["dt"])})<br>
<strong>Issuer:</strong> {e(v["is"])}, {e(v["co"])}<br>
<strong>Certificate identifier:</strong> <code>{e(v["ci"])}</code><br>
<strong>Valid until:</strong> {e(issued.expires_at.date().isoformat())}</p>
<h2>Doses recorded</h2>
<table><tr><th>Vaccine</th><th>Dose</th><th>Date given</th><th>Record</th></tr>{rows}</table>
<p class="noprint"><small>The QR code is an EU DCC / WHO DDCC:VS compatible signed certificate (HC1).
Any verifier holding the registry's trust list can check it offline.</small></p>
</body></html>
"""
