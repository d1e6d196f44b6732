"""The antigens NHR records, with the highest dose number of a primary series.

This is the vocabulary only; *when* a dose is due is the schedule engine's business (issue 4),
which will load versioned schedules from data. `booster` doses use dose_number > series length
and are accepted up to `max_dose`.
"""

VACCINES: dict[str, dict] = {
    "BCG": {"name": "Bacillus Calmette-Guerin", "max_dose": 1},
    "OPV": {"name": "Oral polio vaccine", "max_dose": 4, "first_dose": 0},
    "HEPB": {"name": "Hepatitis B (birth dose)", "max_dose": 1},
    "PENTA": {"name": "DTwP-HepB-Hib (pentavalent)", "max_dose": 3},
    "PCV": {"name": "Pneumococcal conjugate", "max_dose": 3},
    "ROTA": {"name": "Rotavirus", "max_dose": 2},
    "IPV": {"name": "Inactivated polio vaccine", "max_dose": 2},
    "MR": {"name": "Measles-rubella", "max_dose": 2},
    "TCV": {"name": "Typhoid conjugate", "max_dose": 1},
    "TD": {"name": "Tetanus-diphtheria (TT/Td)", "max_dose": 5},
}


def first_dose(vaccine: str) -> int:
    return VACCINES[vaccine].get("first_dose", 1)
