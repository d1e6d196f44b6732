"""Coverage, dropout and zero-dose reports from maintained aggregates (issue 4)."""
