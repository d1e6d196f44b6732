"""NHR benchmark suite: `python -m bench --quick` (see bench/README.md and DESIGN.md section 6)."""
