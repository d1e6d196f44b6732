"""Where a province's encoder gets the national linkage secret (issue 13 item 7).

Only the encoding side (`nhr dedupe encode`, bloom.encode) needs the secret; the comparing side
(`nhr dedupe cross-province`, cross_province.compare: LSH bands and Dice) never loads it, so the
national layer, which stores every province's filters, is deployed without it and cannot run a
dictionary attack on them alone.

The secret comes from `NHR_LINKAGE_SECRET_FILE` when set (a province node holding its copy from
the provinces' shared custody: base64 of 32 bytes on the first line), else from the keyring's
named secret `linkage-secret` (a province encoder's key directory). Errors name the source,
never the value.
"""

from __future__ import annotations

import base64
import binascii

from security.crypto.errors import KeyUnavailable

SECRET_NAME = "linkage-secret"
SECRET_BYTES = 32


def load(rt) -> bytes:
    """The linkage secret of this encoder, from NHR_LINKAGE_SECRET_FILE or the keyring."""
    path = rt.settings.linkage_secret_file
    if path is None:
        return rt.keyring.secret(SECRET_NAME)
    try:
        data = path.read_bytes()
    except OSError:
        raise KeyUnavailable("NHR_LINKAGE_SECRET_FILE cannot be read") from None
    first = (data.splitlines() or [b""])[0]
    try:
        value = base64.b64decode(first.strip(), validate=True)
    except (binascii.Error, ValueError):
        value = b""
    if len(value) != SECRET_BYTES:
        raise KeyUnavailable(f"NHR_LINKAGE_SECRET_FILE must hold base64 of {SECRET_BYTES} bytes on its first line")
    return value
