"""A coverage report as CSV, and coverage by unit as an accessible SVG bar chart.

CSV: one line per unit (then the total) and antigen-dose; a suppressed cell reads `suppressed`,
so a spreadsheet can never mistake it for a zero. SVG: `role="img"` with a <title> and <desc>,
axis labels, and the value printed beside each bar (or "suppressed" / "no data"); every text
is escaped.
"""

from __future__ import annotations

import csv
import io
from xml.sax.saxutils import escape

SUPPRESSED = "suppressed"
CSV_HEADER = ["jurisdiction_code", "jurisdiction_name", "cohort", "denominator_kind", "item", "children",
              "denominator", "any_dose", "valid_dose", "any_dose_pct", "valid_dose_pct"]


_CHILD_LEVEL = {"country": "province", "province": "district", "district": "tehsil", "tehsil": "union council",
                "union_council": "union council"}


def _cell(value) -> str:
    return SUPPRESSED if value is None else str(value)


def to_csv(report: dict) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for row in report["rows"] + [report["total"]]:
        for item in report["items"]:
            cell = row["items"][item]
            den = row["denominator"]
            w.writerow([row["code"], row["name"], report["cohort"], report["denominator"], item, _cell(row["children"]),
                        "" if den is None and report["denominator"] == "target" else _cell(den),
                        _cell(cell["any"]), _cell(cell["valid"]),
                        _pct_cell(cell["any"], cell["any_pct"]), _pct_cell(cell["valid"], cell["valid_pct"])])
    return out.getvalue()


def _pct_cell(count, pct) -> str:
    if count is None:
        return SUPPRESSED
    return "" if pct is None else f"{pct}"


def chart_svg(report: dict, item: str, measure: str) -> str:
    rows = report["rows"]
    key = f"{measure}_pct"
    width, left, right, bar, gap, top = 720, 220, 120, 22, 8, 70
    plot = width - left - right
    height = top + len(rows) * (bar + gap) + 60
    j = report["jurisdiction"]
    by = _CHILD_LEVEL.get(j["level"], "area")
    title = f"{item} coverage ({measure}-dose) by {by} in {j['name']}, birth cohort {report['cohort']}"
    desc = "; ".join(f"{r['name']}: {_label(r['items'][item][measure], r['items'][item][key])}" for r in rows) or "no units"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-labelledby="t d" font-family="sans-serif" font-size="13">',
        f'<title id="t">{escape(title)}</title>', f'<desc id="d">{escape(desc)}</desc>',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{escape(title)}</text>',
        f'<text x="{left + plot / 2}" y="{height - 12}" text-anchor="middle">Coverage (% of {escape(report["denominator"])} '
        f'children)</text>',
        f'<text x="16" y="{top - 16}">{escape(by.capitalize())}</text>',
    ]
    for tick in range(0, 101, 20):
        x = left + plot * tick / 100
        parts.append(f'<line x1="{x}" y1="{top - 6}" x2="{x}" y2="{height - 40}" stroke="#dddddd"/>')
        parts.append(f'<text x="{x}" y="{height - 26}" text-anchor="middle">{tick}%</text>')
    for i, row in enumerate(rows):
        y = top + i * (bar + gap)
        cell = row["items"][item]
        pct = cell[key]
        parts.append(f'<text x="{left - 8}" y="{y + bar * 0.7}" text-anchor="end">{escape(row["name"])}</text>')
        if pct is not None:
            w = plot * min(pct, 100) / 100
            parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="#2b6cb0"/>')
            parts.append(f'<text x="{left + w + 6:.1f}" y="{y + bar * 0.7}">{pct}%</text>')
        else:
            parts.append(f'<text x="{left + 6}" y="{y + bar * 0.7}" fill="#555555">{_label(cell[measure], pct)}</text>')
    parts.append(f'<line x1="{left}" y1="{top - 6}" x2="{left}" y2="{height - 40}" stroke="#333333"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _label(count, pct) -> str:
    if count is None:
        return SUPPRESSED
    return f"{pct}%" if pct is not None else "no denominator"
