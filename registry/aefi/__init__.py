"""Adverse events following immunization (AEFI), each linked to a recorded dose (issue 4)."""
