"""COSE_Sign1 (RFC 9052 section 4.2) on cbor2 + cryptography: just what HCERT needs.

Why not pycose: it pulls in several dependencies and a large algorithm surface for what is, for
HCERT, one structure and two algorithms. Here the attack surface is ~100 lines we can fuzz.

- ES256 (alg -7, ECDSA P-256 with SHA-256; signature is raw r||s, 64 bytes) signs and verifies;
  PS256 (alg -37, RSASSA-PSS) verifies only, because the DCC specification allows it for issuers.
- Sig_structure = ["Signature1", body_protected (the bytes as received), external_aad b"", payload].
- The key id is taken from the protected header, falling back to the unprotected header only when
  the protected one has none (DCC specification 3.3.1); an algorithm likewise.
- Parsing never raises anything but `CoseError` (malformed) subclasses; verification raises
  `SignatureMismatch` or `UnsupportedAlgorithm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

ES256, PS256 = -7, -37
HEADER_ALG, HEADER_KID = 1, 4
COSE_SIGN1_TAG, CWT_TAG = 18, 61


class CoseError(ValueError):
    """The bytes are not a well-formed COSE_Sign1 structure."""


class CborError(CoseError):
    """The bytes are not CBOR at all."""


class UnsupportedAlgorithm(Exception):
    pass


class SignatureMismatch(Exception):
    pass


def loads(data: bytes):
    """cbor2.loads that raises only `CborError` (cbor2 raises several types on hostile input)."""
    try:
        return cbor2.loads(data, max_depth=32, allow_duplicate_keys=False)
    except Exception as exc:  # CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError...
        raise CborError(f"not valid CBOR ({type(exc).__name__})") from None


@dataclass(frozen=True)
class Sign1:
    protected_raw: bytes
    protected: Mapping
    unprotected: Mapping
    payload: bytes
    signature: bytes

    @property
    def kid(self) -> bytes | None:
        kid = self.protected.get(HEADER_KID, self.unprotected.get(HEADER_KID))
        return kid if isinstance(kid, bytes) else None

    @property
    def alg(self):
        return self.protected.get(HEADER_ALG, self.unprotected.get(HEADER_ALG))

    def to_be_signed(self) -> bytes:
        return _sig_structure(self.protected_raw, self.payload)


def _sig_structure(protected_raw: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected_raw, b"", payload])


def parse(data: bytes) -> Sign1:
    obj = loads(data)
    if isinstance(obj, cbor2.CBORTag) and obj.tag == CWT_TAG:
        obj = obj.value
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:
            raise CoseError(f"CBOR tag {obj.tag} is not COSE_Sign1 (18)")
        obj = obj.value
    if not isinstance(obj, (list, tuple)) or len(obj) != 4:
        raise CoseError("COSE_Sign1 must be an array of four elements")
    protected_raw, unprotected, payload, signature = obj
    if not isinstance(protected_raw, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise CoseError("COSE_Sign1 protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, Mapping):
        raise CoseError("COSE_Sign1 unprotected header must be a map")
    protected = loads(protected_raw) if protected_raw else {}
    if not isinstance(protected, Mapping):
        raise CoseError("COSE_Sign1 protected header must encode a map")
    return Sign1(protected_raw, protected, unprotected, payload, signature)


def sign(payload: bytes, key: ec.EllipticCurvePrivateKey, kid: bytes) -> bytes:
    """A tagged COSE_Sign1 with alg ES256 and kid in the protected header."""
    protected_raw = cbor2.dumps({HEADER_ALG: ES256, HEADER_KID: kid})
    der = key.sign(_sig_structure(protected_raw, payload), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected_raw, {}, payload, signature]))


def verify(msg: Sign1, public_key) -> None:
    """Raise `SignatureMismatch` unless `msg` is signed by `public_key` with its stated algorithm."""
    alg, tbs = msg.alg, msg.to_be_signed()
    try:
        if alg == ES256:
            if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
                raise SignatureMismatch("ES256 needs a P-256 key")
            if len(msg.signature) != 64:
                raise SignatureMismatch("an ES256 signature is 64 bytes")
            r, s = int.from_bytes(msg.signature[:32], "big"), int.from_bytes(msg.signature[32:], "big")
            public_key.verify(encode_dss_signature(r, s), tbs, ec.ECDSA(hashes.SHA256()))
        elif alg == PS256:
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise SignatureMismatch("PS256 needs an RSA key")
            public_key.verify(msg.signature, tbs, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
        else:
            raise UnsupportedAlgorithm(f"COSE algorithm {alg!r:.20} is not supported (ES256, PS256)")
    except InvalidSignature:
        raise SignatureMismatch("the signature does not match the signer's key") from None
    except (ValueError, TypeError) as exc:
        raise SignatureMismatch(f"the signature cannot be checked ({type(exc).__name__})") from None
