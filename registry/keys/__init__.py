"""Data-key rotation that finishes: the encrypted columns, re-encryption, status and retirement (issue 16)."""
