"""Building the DCC payload (schema 1.3.0) from a patient and its doses, and UVCIs.

Only what the format needs: names (as recorded and ICAO 9303 transliterated), date of birth and
one vaccination entry: the most recent *completed* dose against the chosen disease (voided and
superseded doses never count).
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from datetime import date

from registry.certificates.valuesets import DISEASES, NHR_MANUFACTURER_UNRECORDED, NHR_PRODUCT, VACCINE_CODES, vaccines_for
from registry.immunizations.vaccines import VACCINES, first_dose

DCC_SCHEMA_VERSION = "1.3.0"
UVCI_PREFIX = "URN:UVCI:01:"
UVCI_CHECK_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/:"  # EU guidelines, Annex 2 (Luhn mod N)

# ICAO 9303 part 3, section 6: recommended transliterations of Latin characters with diacritics.
_ICAO = {"Ä": "AE", "Æ": "AE", "Å": "AA", "Ö": "OE", "Ø": "OE", "Œ": "OE", "Ü": "UE", "ß": "SS", "Þ": "TH",
         "Ð": "D", "Đ": "D", "Ł": "L", "Ŀ": "L", "Ħ": "H", "Ŋ": "N", "Ŧ": "T", "Ĳ": "IJ", "ı": "I"}


def icao_transliterate(name: str | None, limit: int = 80) -> str:
    """Upper-case A-Z, with '<' for spaces, hyphens and other separators (DCC fnt/gnt).
    Characters outside the Latin script are dropped (ICAO's Arabic table is not implemented)."""
    out: list[str] = []
    for ch in (name or "").upper():
        if ch in _ICAO:
            out.append(_ICAO[ch])
        elif "A" <= ch <= "Z":
            out.append(ch)
        elif ch in " -,<":
            out.append("<")
        elif ch in "'’.`":
            continue
        else:
            base = unicodedata.normalize("NFKD", ch)[:1]
            if "A" <= base <= "Z":
                out.append(base)
    text = "".join(out).strip("<")
    while "<<" in text:
        text = text.replace("<<", "<")
    return text[:limit]


def luhn_mod_n(text: str, alphabet: str = UVCI_CHECK_ALPHABET) -> str:
    n, factor, total = len(alphabet), 2, 0
    for ch in reversed(text):
        code = alphabet.index(ch) * factor
        factor = 1 if factor == 2 else 2
        total += code // n + code % n
    return alphabet[(n - total % n) % n]


def new_uvci(country: str, custodian: str) -> str:
    """URN:UVCI:01:<country>:<province letters><32 hex>#<check>, the check over the whole string.

    No "/" anywhere, so that the UVCI sits in a URL path with only "#" escaped: the Luhn mod N
    alphabet includes "/", so a draw whose check character would be "/" (1 in 38) is redrawn."""
    region = custodian.rsplit("-", 1)[-1]
    while True:
        body = f"{UVCI_PREFIX}{country}:{region}{secrets.token_hex(16).upper()}"
        check = luhn_mod_n(body)
        if check != "/":
            return f"{body}#{check}"


def uvci_is_well_formed(uvci: str) -> bool:
    body, sep, check = uvci.rpartition("#")
    return (bool(sep) and body.startswith(UVCI_PREFIX) and len(uvci) <= 80
            and all(c in UVCI_CHECK_ALPHABET for c in body) and check == luhn_mod_n(body))


@dataclass(frozen=True)
class Dose:
    vaccine: str
    dose_number: int
    date_given: date
    reported: bool = False  # given elsewhere or earlier and reported to NHR (issue 12)


def latest_dose(doses: list, disease: str) -> Dose | None:
    """The most recent completed dose of a vaccine that protects against `disease`, among the
    doses administered here. A reported dose (home card, recall, another system, abroad) is
    never on the HC1 certificate: the DCC has no element that says "reported", its `co`
    (country of vaccination) and `is` (issuer) would present NHR as attesting an administration
    it did not witness, and a verifier cannot tell the difference. It is listed on the card."""
    wanted = vaccines_for(disease)
    valid = [d for d in doses if d.status == "completed" and d.vaccine in wanted and getattr(d, "administered_here", True)]
    if not valid:
        return None
    d = max(valid, key=lambda d: (d.date_given, d.dose_number))
    return Dose(d.vaccine, d.dose_number, d.date_given)


def series(vaccine: str, dose_number: int) -> tuple[int, int]:
    """(dn, sd): dose number in the series and doses in the series, counted from 1 (OPV-0 is 1)."""
    offset = 1 - first_dose(vaccine)
    return dose_number + offset, VACCINES[vaccine]["max_dose"] + offset


def build_dcc(*, family_name: str | None, given_name: str | None, birth_date: date, dose: Dose, disease: str,
              country: str, issuer: str, uvci: str) -> dict:
    dn, sd = series(dose.vaccine, dose.dose_number)
    nam = {"fnt": icao_transliterate(family_name or given_name)}
    if family_name:
        nam["fn"] = family_name[:80]
    if given_name:
        nam["gn"] = given_name[:80]
        nam["gnt"] = icao_transliterate(given_name)
    return {
        "ver": DCC_SCHEMA_VERSION,
        "nam": nam,
        "dob": birth_date.isoformat(),
        "v": [{
            "tg": DISEASES[disease][0], "vp": VACCINE_CODES[dose.vaccine][0],
            "mp": NHR_PRODUCT.format(vaccine=dose.vaccine), "ma": NHR_MANUFACTURER_UNRECORDED,
            "dn": dn, "sd": max(sd, dn), "dt": dose.date_given.isoformat(), "co": country, "is": issuer, "ci": uvci,
        }],
    }
