"""Immunization schedules: versioned data (data/*.json) loaded into the database, and a pure
engine that evaluates a patient's doses against the schedule in force (issue 4)."""
