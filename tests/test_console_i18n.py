"""Every string of the console's templates is translated into Urdu, the catalogue compiles
in memory, and Urdu pages are right to left with locale-formatted dates and numbers."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from babel.messages.extract import extract_from_dir

from api.console import i18n
from api.console.templating import environment

ROOT = Path(__file__).resolve().parents[1]


def template_messages() -> set[str]:
    found = extract_from_dir(str(ROOT / "api/console/templates"), method_map=[("**.html", "jinja2")],
                             options_map={"**.html": {"extensions": "jinja2.ext.i18n"}})
    return {msg for _file, _line, msg, _comments, _context in found}


def test_every_template_string_has_an_urdu_translation():
    messages = template_messages()
    assert len(messages) > 50
    ur = i18n.translations("ur")
    missing = sorted(m for m in messages if ur.gettext(m) == m)
    assert not missing, f"untranslated in api/console/locale/ur/LC_MESSAGES/console.po: {missing}"


def test_language_choice_and_locale_formats():
    assert i18n.pick("ur", "en-GB,en") == "ur"
    assert i18n.pick(None, "ur-PK,ur;q=0.9") == "ur" and i18n.pick("xx", None) == "en"
    ur, en = i18n.formatters("ur"), i18n.formatters("en")
    assert en["date"](date(2026, 6, 1)) != ur["date"](date(2026, 6, 1))
    assert "2026" in en["date"](date(2026, 6, 1)) and "جون" in ur["date"](date(2026, 6, 1))
    assert environment("ur").globals["dir"] == "rtl" and environment("en").globals["dir"] == "ltr"
