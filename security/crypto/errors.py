"""Crypto failures. Messages name the table/column/key, never a plaintext or ciphertext."""


class CryptoError(Exception):
    """Base of every crypto failure."""


class DecryptionError(CryptoError):
    """A ciphertext failed authentication: wrong row, column, custodian, version, or tampered."""


class KeyUnavailable(CryptoError):
    """A key the operation needs is not in the keyring (custodian or version unknown)."""
