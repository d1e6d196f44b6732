"""Bulk import (`nhr import`: CSV, FHIR NDJSON and Bundles) and FHIR Bulk Data `$export` (issue 5)."""
