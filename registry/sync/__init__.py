"""Offline sync (issue 5): idempotency keys for every POST, the batch upload, the changes feed."""
