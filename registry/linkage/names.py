"""Name keys for matching: Pakistani romanisation variants, Urdu script, unnamed newborns.

Two keys per name, both plain ASCII so the same comparison runs in Python (the per-record
scorer) and in DuckDB SQL (Splink's estimation and batch prediction):

- `key(name)`: lower case, punctuation gone, Urdu transliterated, every token replaced by the
  canonical spelling of its variant group (data/name_variants.json: Muhammad/Mohammad/Md,
  Ayesha/Aisha/Aysha, Rehman/Rahman, Khan/Kh., ...), "Abdul"/"Abdur" joined to the next token
  and "-ullah"/"-ulla"/"-uddin" to the previous one: "Abdur Rahman" and "Abdul Rehman" both give
  "abdulrahman", "Rahmat Ulla" and "Rahmatullah" both "rahmatullah".
- `skeleton(key)`: a consonant skeleton (vowels dropped, kh/gh/sh/ch as one sound, q=k,
  v=w, doubles collapsed). Urdu is written mostly without vowels, so محمد and "Muhammad" meet
  here ("mhmd"), as do spellings no variant group lists.

Urdu script is normalised before transliteration: Arabic and Persian forms of yeh (ي ى ې ے),
kaf (ك), heh (ه ة ۀ ھ) and alef (أ إ آ ٱ) become the Urdu letters, and diacritics (harakat,
superscript alef, tatweel) are dropped.

`key` returns None for an absent name and for a placeholder of an unnamed newborn ("Baby of
Sana", "B/O Sana", "Baby girl", "بے بی"): the comparison is then "null" (no evidence), never a
disagreement. Nothing here logs or keeps a name.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from importlib import resources

_UNNAMED = re.compile(r"^\s*(baby|infant|newborn|new born|b/o|d/o|s/o|bo|child)\b|^\s*(بے\s*بی|بچہ|بچی|نومولود)", re.I)

# Arabic-script variants -> the Urdu letter (yeh, kaf, heh, alef, waw with hamza)
_URDU_FORMS = str.maketrans({
    "ي": "ی", "ى": "ی", "ې": "ی", "ے": "ی", "ئ": "ی",
    "ك": "ک",
    "ه": "ہ", "ة": "ہ", "ۀ": "ہ", "ھ": "ہ", "ۂ": "ہ",
    "أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا",
    "ؤ": "و",
})
_DIACRITICS = re.compile("[\u064b-\u065f\u0670\u0640\u06d6-\u06ed]")
# Urdu letter -> Latin (consonants as written; vowels are rarely written, see `skeleton`)
_TRANSLIT = {
    "ا": "a", "ب": "b", "پ": "p", "ت": "t", "ٹ": "t", "ث": "s", "ج": "j", "چ": "ch", "ح": "h", "خ": "kh",
    "د": "d", "ڈ": "d", "ذ": "z", "ر": "r", "ڑ": "r", "ز": "z", "ژ": "zh", "س": "s", "ش": "sh", "ص": "s",
    "ض": "z", "ط": "t", "ظ": "z", "ع": "a", "غ": "gh", "ف": "f", "ق": "q", "ک": "k", "گ": "g", "ل": "l",
    "م": "m", "ن": "n", "ں": "n", "و": "o", "ہ": "a", "ی": "i", "ء": "",
}
_ARABIC = re.compile("[\u0600-\u06ff]")
_JOIN_NEXT = {"abdul"}
_JOIN_PREV = {"ullah", "uddin"}


@lru_cache(maxsize=1)
def _variants() -> dict[str, str]:
    data = json.loads(resources.files("registry.linkage").joinpath("data/name_variants.json").read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for group in data["groups"]:
        for spelling in group:
            out.setdefault(spelling, group[0])
    return out


def is_unnamed(name: str | None) -> bool:
    """A placeholder for a newborn without a name yet ("Baby of <mother>"), or no name at all."""
    return not name or not name.strip() or bool(_UNNAMED.match(name))


def normalise_urdu(text: str) -> str:
    return _DIACRITICS.sub("", unicodedata.normalize("NFC", text)).translate(_URDU_FORMS)


def _transliterate_word(word: str) -> str:
    out = []
    for i, ch in enumerate(word):
        if ch == "و":
            out.append("w" if i == 0 else "o")
        elif ch == "ی":
            out.append("y" if i == 0 else "i")
        elif ch == "ہ" and i == len(word) - 1 and i > 0:
            out.append("a")  # a final heh is a vowel: فاطمہ = Fatima
        else:
            out.append(_TRANSLIT.get(ch, ""))
    return "".join(out)


def _latin_tokens(name: str) -> list[str]:
    if _ARABIC.search(name):
        name = " ".join(_transliterate_word(w) for w in normalise_urdu(name).split())
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    ascii_ = ascii_.replace("-", " ").replace("'", "")
    return [t for t in re.split(r"[^a-z0-9]+", ascii_) if t]


@lru_cache(maxsize=65536)
def key(name: str | None) -> str | None:
    """The canonical key of a name, or None if absent or a newborn's placeholder."""
    if is_unnamed(name):
        return None
    variants = _variants()
    tokens = [variants.get(t, t) for t in _latin_tokens(name)]
    tokens = [variants.get(_suffix(t), _suffix(t)) for t in tokens]
    out: list[str] = []
    for t in tokens:
        if out and (t in _JOIN_PREV or out[-1] in _JOIN_NEXT):
            out[-1] += t
        else:
            out.append(t)
    return " ".join(out) or None


def _suffix(token: str) -> str:
    for tail, canon in (("ullah", "ullah"), ("ulla", "ullah"), ("uddin", "uddin"), ("udin", "uddin")):
        if token.endswith(tail) and len(token) > len(tail) + 1:
            return token[: -len(tail)] + canon
    return token


_DIGRAPHS = (("kh", "x"), ("gh", "g"), ("sh", "s"), ("ch", "c"), ("th", "t"), ("dh", "d"), ("ph", "f"), ("bh", "b"),
             ("zh", "z"), ("q", "k"), ("v", "w"), ("ck", "k"))


@lru_cache(maxsize=65536)
def skeleton(name_key: str | None) -> str | None:
    """Consonant skeleton of a key, word by word: "muhammad ali" -> "mhmd l"."""
    if not name_key:
        return None
    words = []
    for w in name_key.split():
        lead_w = w.startswith("w")
        for a, b in _DIGRAPHS:
            w = w.replace(a, b)
        if w.endswith("h") and len(w) > 1 and w[-2] in "aeiou":
            w = w[:-1]
        core = re.sub(r"[aeiouy]", "", w[1:] if lead_w else w)
        core = ("w" + core) if lead_w else core
        core = re.sub(r"(.)\1+", r"\1", core)
        words.append(core or w[:1])
    return " ".join(words)
