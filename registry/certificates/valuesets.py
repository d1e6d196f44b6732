"""NHR vaccine codes -> the codes an HCERT vaccination entry carries.

The EU DCC value sets (tg, vp, mp, ma) only define COVID-19 entries, so for the Pakistan EPI
antigens NHR follows the same code systems where codes exist and its own code system otherwise:

- `tg` (disease or agent targeted): SNOMED CT disorder concepts, the code system of the EU `tg`
  value set (840539006 is COVID-19 there).
- `vp` (vaccine or prophylaxis): WHO ATC codes (the EU `vp` value set also admits ATC, J07BX03).
- `mp` (medicinal product): NHR records no product or licence number, so the NHR code system
  `NHR-EPI-<vaccine>` names the EPI product class.
- `ma` (marketing authorisation holder / manufacturer): not recorded in NHR; `NHR-MAH-UNRECORDED`.

A DCC carries one vaccination entry per certificate (the latest dose of one disease's series),
so a certificate is issued for one target disease, `?disease=`. The default is poliomyelitis:
Pakistan is under WHO IHR temporary recommendations that require proof of polio vaccination
from departing travellers, which is the certificate families most need checked at a border.
Codes should be confirmed against licensed SNOMED CT / ATC releases before production use.
"""

from __future__ import annotations

DEFAULT_DISEASE = "polio"

# disease key -> (SNOMED CT code, display)
DISEASES: dict[str, tuple[str, str]] = {
    "polio": ("398102009", "Acute poliomyelitis"),
    "measles": ("14189004", "Measles"),
    "rubella": ("36653000", "Rubella"),
    "tuberculosis": ("56717001", "Tuberculosis"),
    "diphtheria": ("397430003", "Diphtheria"),
    "tetanus": ("76902006", "Tetanus"),
    "pertussis": ("27836007", "Pertussis"),
    "hepatitis-b": ("66071002", "Viral hepatitis type B"),
    "hib": ("709410003", "Haemophilus influenzae type b infection"),
    "pneumococcal": ("16814004", "Pneumococcal infectious disease"),
    "rotavirus": ("18624000", "Disease due to Rotavirus"),
    "typhoid": ("4834000", "Typhoid fever"),
}

# NHR vaccine code -> (ATC code, diseases it protects against)
VACCINE_CODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "BCG": ("J07AN01", ("tuberculosis",)),
    "OPV": ("J07BF04", ("polio",)),          # bivalent OPV, as used by Pakistan's EPI
    "IPV": ("J07BF03", ("polio",)),
    "HEPB": ("J07BC01", ("hepatitis-b",)),
    "PENTA": ("J07CA11", ("diphtheria", "tetanus", "pertussis", "hepatitis-b", "hib")),
    "PCV": ("J07AL02", ("pneumococcal",)),
    "ROTA": ("J07BH01", ("rotavirus",)),
    "MR": ("J07BD53", ("measles", "rubella")),
    "TCV": ("J07AP03", ("typhoid",)),
    "TD": ("J07AM51", ("tetanus", "diphtheria")),
}

NHR_PRODUCT = "NHR-EPI-{vaccine}"
NHR_MANUFACTURER_UNRECORDED = "NHR-MAH-UNRECORDED"


def vaccines_for(disease: str) -> set[str]:
    return {v for v, (_, diseases) in VACCINE_CODES.items() if disease in diseases}
