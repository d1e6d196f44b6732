"""Plain-language reasons for a candidate pair, from its comparison levels only.

`explain(levels)` -> ["same birth date", "guardian CNIC agrees", "given name differs by one
letter", ...] in English. Every sentence is a fixed message id in `MESSAGES` (no value is ever
interpolated), so a translation catalogue can map them one to one (gettext-ready: `_()` marks
them; the console's Urdu catalogue can add them).
"""

from __future__ import annotations


def _(message: str) -> str:  # marker for message extraction (babel/gettext); identity here
    return message


FIELD_NAMES = {"given_name": _("given name"), "family_name": _("family name"), "guardian_name": _("guardian's name")}

MESSAGES: dict[str, dict[int, str]] = {
    "birth_date": {4: _("same birth date"), 3: _("birth date with day and month swapped"),
                   2: _("birth dates a few days or one digit apart"), 1: _("same birth year only"),
                   0: _("birth dates differ"), -1: _("birth date missing")},
    "sex": {1: _("same sex"), 0: _("sex differs"), -1: _("sex unknown")},
    "guardian_cnic": {2: _("guardian CNIC agrees"), 1: _("guardian CNIC differs by one digit"),
                      0: _("guardian CNIC differs"), -1: _("guardian CNIC missing on one record")},
    "bform": {1: _("same B-form number"), 0: _("B-form numbers differ"), -1: _("B-form missing on one record")},
    "phone": {2: _("same phone number"), 1: _("phone numbers differ by one digit"), 0: _("phone numbers differ"),
              -1: _("phone missing on one record")},
    "place": {3: _("same home facility"), 2: _("same district, another facility"), 1: _("same province, another district"),
              0: _("another province")},
    "given_name": {4: _("same given name (or a known spelling of it)"), 3: _("given names sound alike"),
                   2: _("given name differs by one letter"), 1: _("given name differs by two letters"),
                   0: _("given names differ"), -1: _("given name missing or a newborn's placeholder")},
    "family_name": {5: _("same family name (or a known spelling of it)"), 4: _("family names sound alike"),
                    3: _("family name differs by one letter"), 2: _("family name differs by two letters"),
                    1: _("family name of one is the guardian's name of the other"), 0: _("family names differ"),
                    -1: _("family name missing on one record")},
    "guardian_name": {4: _("same guardian's name (or a known spelling of it)"), 3: _("guardians' names sound alike"),
                      2: _("guardian's name differs by one letter"), 1: _("guardian's name differs by two letters"),
                      0: _("guardians' names differ"), -1: _("guardian's name missing on one record")},
}
# Term-frequency buckets (registry/linkage/term_frequency.py): shown when an exact name agreement
# weighs at least a bit more or less because the name is rare or common among the scored records.
MESSAGES.update({
    "given_name_frequency": {1: _("the given name is rare here, so the agreement weighs more"),
                             -1: _("the given name is common here, so the agreement weighs less")},
    "family_name_frequency": {1: _("the family name is rare here, so the agreement weighs more"),
                              -1: _("the family name is common here, so the agreement weighs less")},
    "guardian_name_frequency": {1: _("the guardian's name is rare here, so the agreement weighs more"),
                                -1: _("the guardian's name is common here, so the agreement weighs less")},
})
# The order stewards read: the strongest evidence first (a name's frequency right after the name).
ORDER = ("birth_date", "given_name", "given_name_frequency", "family_name", "family_name_frequency", "guardian_cnic",
         "guardian_name", "guardian_name_frequency", "bform", "phone", "sex", "place")


BLOOM = ((92, _("privacy-preserving encodings of names and birth date agree very closely")),
         (85, _("privacy-preserving encodings of names and birth date agree closely")),
         (0, _("privacy-preserving encodings of names and birth date partly agree")))


def explain(levels: dict[str, int]) -> list[str]:
    """One sentence per compared field, in ORDER; unknown fields or levels are skipped. A
    cross-province pair (`bloom_dice`, the encodings' similarity in percent) gets one sentence."""
    if "bloom_dice" in levels:
        return [next(msg for floor, msg in BLOOM if int(levels["bloom_dice"]) >= floor)]
    out = []
    for field in ORDER:
        if field in levels:
            msg = MESSAGES[field].get(int(levels[field]))
            if msg:
                out.append(msg)
    return out
