"""Urdu and English for the console: gettext catalogues (.po, kept in the repo) compiled in memory
with Babel at start-up, so there is no build step; one Jinja environment per language, so a
request's language never leaks into another's render; dates and numbers formatted by Babel.

Adding a language: add `locale/<code>/LC_MESSAGES/console.po` and its entry in `LANGUAGES`.
"""

from __future__ import annotations

import gettext
import io
from datetime import date, datetime
from functools import lru_cache
from importlib import resources

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent

# code -> (Babel locale, text direction, name in its own language)
LANGUAGES = {"en": ("en_PK", "ltr", "English"), "ur": ("ur_PK", "rtl", "اردو")}
DEFAULT = "en"
COOKIE = "nhr_lang"


def pick(cookie: str | None, accept_language: str | None) -> str:
    """The remembered choice, else the browser's first supported language, else English."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT


@lru_cache(maxsize=None)
def translations(code: str) -> gettext.NullTranslations:
    if code == DEFAULT:
        return gettext.NullTranslations()
    po = resources.files("api.console").joinpath("locale", code, "LC_MESSAGES", "console.po").read_bytes()
    catalog = read_po(io.BytesIO(po), locale=LANGUAGES[code][0])
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def formatters(code: str) -> dict:
    loc = Locale.parse(LANGUAGES[code][0])

    def fdate(value) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            return format_datetime(value, format="medium", locale=loc)
        return format_date(value if isinstance(value, date) else date.fromisoformat(str(value)), format="medium", locale=loc)

    return {"date": fdate, "number": lambda v: format_decimal(v, locale=loc),
            "percent": lambda v: format_percent(v, locale=loc, format="#,##0.0%")}
