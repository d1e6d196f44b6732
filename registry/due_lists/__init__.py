"""Due and overdue (defaulter) lists per facility and per union council (issue 4)."""
