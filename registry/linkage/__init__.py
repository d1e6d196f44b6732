"""Record linkage: one record per child (issue 13). See models.py for what is stored."""
