"""Server-side sessions of the web console (issue 14): see service.py for the invariants."""
