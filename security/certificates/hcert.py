"""HCERT (EU DCC / WHO DDCC:VS): CWT claims -> COSE_Sign1 -> zlib -> base45 -> "HC1:".

Decoding untrusted text raises only `HcertError` subclasses, each with a stable `code` that the
API and CLI report as is. Messages never include payload content (names, dates of birth).

Verification order: decode (prefix, base45, zlib, CBOR, COSE structure, CWT claims) -> signer
(kid in the trust list) -> signature -> the signer's certificate valid at issuance -> the EU DCC
JSON schema (`schema`) -> the signer's extended key usage allows the certificate's type ->
validity window -> revocation. The first failure is reported. The payload's content is judged
only once its signature holds: a forged or damaged payload answers `signature_mismatch`, not a
statement about what it claims.

Time, precisely (all in whole UTC seconds as the CWT carries them):
- `exp` is the first second at which the certificate is no longer valid (RFC 8392 3.1.4, "on or
  after which ... MUST NOT be accepted"): valid while now < exp, `expired` at exp itself. No clock
  skew is granted on expiry.
- `iat` more than CLOCK_SKEW (300 s) after now is `not_yet_valid`.
- `iat` is required, and the signer's certificate must have been valid at it:
  notBefore <= iat <= notAfter, both ends included (RFC 5280 4.1.2.5), else `signer_not_valid`.
  Only validity at issuance is checked: a certificate outlives its signer's certificate until its
  own exp, unless revoked (a compromised signer is taken off the trust list).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Callable

import cbor2

from security.certificates import base45, cose, schema
from security.certificates.trust import TrustedSigner, TrustList

PREFIX = "HC1:"
MAX_TEXT = 8192          # a QR code holds at most 4,296 alphanumeric characters
MAX_INFLATED = 65536     # zlib bomb guard; a DCC is well under 2 kB
CLOCK_SKEW = 300         # seconds of tolerance for iat in the future
CLAIM_ISS, CLAIM_EXP, CLAIM_IAT, CLAIM_HCERT = 1, 4, 6, -260
HCERT_DCC = 1


class HcertError(Exception):
    code = "invalid"


class BadPrefix(HcertError):
    code = "bad_prefix"


class TooLong(HcertError):
    code = "too_long"


class Base45Error(HcertError):
    code = "base45"


class ZlibError(HcertError):
    code = "zlib"


class CborError(HcertError):
    code = "cbor"


class CoseStructureError(HcertError):
    code = "cose_structure"


class PayloadError(HcertError):
    code = "payload"


class UnknownKid(HcertError):
    code = "unknown_kid"


class UnsupportedAlgorithm(HcertError):
    code = "unsupported_algorithm"


class SignatureMismatch(HcertError):
    code = "signature_mismatch"


class SignerNotValid(HcertError):
    code = "signer_not_valid"


class SchemaInvalid(HcertError):
    code = "schema"


class SignerTypeMismatch(HcertError):
    code = "signer_type_mismatch"


class Expired(HcertError):
    code = "expired"


class NotYetValid(HcertError):
    code = "not_yet_valid"


class Revoked(HcertError):
    code = "revoked"


ERROR_CODES = tuple(c.code for c in (BadPrefix, TooLong, Base45Error, ZlibError, CborError, CoseStructureError, PayloadError,
                                     UnknownKid, UnsupportedAlgorithm, SignatureMismatch, SignerNotValid, SchemaInvalid,
                                     SignerTypeMismatch, Expired, NotYetValid, Revoked))


@dataclass(frozen=True)
class Decoded:
    message: cose.Sign1
    claims: dict
    issuer: str | None
    issued_at: datetime | None
    expires_at: datetime | None
    dcc: dict

    @property
    def kid(self) -> bytes | None:
        return self.message.kid

    @property
    def types(self) -> frozenset[str]:
        """The DCC groups present: "v" vaccination, "t" test, "r" recovery."""
        return frozenset(group for group in ("v", "t", "r") if group in self.dcc)

    @property
    def uvcis(self) -> list[str]:
        out = []
        for group in ("v", "t", "r"):
            entries = self.dcc.get(group)
            if isinstance(entries, (list, tuple)):
                out += [e["ci"] for e in entries if isinstance(e, Mapping) and isinstance(e.get("ci"), str)]
        return out


@dataclass(frozen=True)
class Verified:
    decoded: Decoded
    signer: TrustedSigner


# --- encoding ------------------------------------------------------------------------------------

def claims(dcc: dict, *, issuer: str, issued_at: datetime, expires_at: datetime) -> dict:
    return {CLAIM_ISS: issuer, CLAIM_IAT: int(issued_at.timestamp()), CLAIM_EXP: int(expires_at.timestamp()),
            CLAIM_HCERT: {HCERT_DCC: dcc}}


def encode(cwt_claims: dict, key, kid: bytes) -> str:
    signed = cose.sign(cbor2.dumps(cwt_claims), key, kid)
    return PREFIX + base45.encode(zlib.compress(signed, 9))


# --- decoding ------------------------------------------------------------------------------------

def unprefix(text: str) -> str:
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise BadPrefix("the text does not start with HC1:")
    if len(text) > MAX_TEXT:
        raise TooLong(f"the text is longer than {MAX_TEXT} characters")
    return text[len(PREFIX):]


def b45decode(text: str) -> bytes:
    try:
        return base45.decode(text)
    except ValueError as exc:
        raise Base45Error(str(exc)) from None


def inflate(data: bytes) -> bytes:
    try:
        d = zlib.decompressobj()
        out = d.decompress(data, MAX_INFLATED)
        if d.unconsumed_tail:
            raise ZlibError(f"the decompressed certificate exceeds {MAX_INFLATED} bytes")
        out += d.flush()
        if not d.eof:
            raise ZlibError("the zlib stream is truncated")
        return out
    except zlib.error:
        raise ZlibError("not a valid zlib stream") from None


def parse_cose(data: bytes) -> cose.Sign1:
    try:
        return cose.parse(data)
    except cose.CborError as exc:
        raise CborError(str(exc)) from None
    except cose.CoseError as exc:
        raise CoseStructureError(str(exc)) from None


def _time(value, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise PayloadError(f"CWT claim {name} must be a number")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise PayloadError(f"CWT claim {name} is out of range") from None


def parse_claims(message: cose.Sign1) -> Decoded:
    try:
        body = cose.loads(message.payload)
    except cose.CborError as exc:
        raise CborError(f"payload: {exc}") from None
    if not isinstance(body, Mapping):
        raise PayloadError("the CWT payload must be a map")
    hcert = body.get(CLAIM_HCERT)
    dcc = hcert.get(HCERT_DCC) if isinstance(hcert, Mapping) else None
    if not isinstance(dcc, Mapping):
        raise PayloadError("the CWT has no hcert (-260) claim holding a DCC (1)")
    iss = body.get(CLAIM_ISS)
    if iss is not None and not isinstance(iss, str):
        raise PayloadError("CWT claim iss must be a text string")
    return Decoded(message, body, iss, _time(body.get(CLAIM_IAT), "iat"), _time(body.get(CLAIM_EXP), "exp"), dcc)


def decode(text: str) -> Decoded:
    """Text -> decoded certificate, without checking the signature."""
    return parse_claims(parse_cose(inflate(b45decode(unprefix(text)))))


# --- verifying -----------------------------------------------------------------------------------

def check_signature(decoded: Decoded, trust: TrustList) -> TrustedSigner:
    signer = trust.get(decoded.kid)
    if signer is None:
        raise UnknownKid("no trusted signer has this key identifier")
    try:
        cose.verify(decoded.message, signer.public_key)
    except cose.UnsupportedAlgorithm as exc:
        raise UnsupportedAlgorithm(str(exc)) from None
    except cose.SignatureMismatch as exc:
        raise SignatureMismatch(str(exc)) from None
    if decoded.issued_at is None:
        raise PayloadError("the CWT has no issued-at (iat) claim: the signer's validity at issuance cannot be checked")
    cert = signer.certificate
    if not cert.not_valid_before_utc <= decoded.issued_at <= cert.not_valid_after_utc:
        raise SignerNotValid("the signer's certificate was not valid when the certificate was issued")
    return signer


def check_schema(decoded: Decoded) -> None:
    found = schema.problems(decoded.dcc)
    if found:
        raise SchemaInvalid(f"the payload does not match the EU DCC schema {schema.version()}: {'; '.join(found[:3])}")


def check_usage(decoded: Decoded, signer: TrustedSigner) -> None:
    """The signer's extended key usage must allow every group the certificate carries."""
    if not decoded.types <= signer.permitted_types:
        raise SignerTypeMismatch("the signer's extended key usage does not allow this certificate type")


def check_validity(decoded: Decoded, now: datetime) -> None:
    if decoded.expires_at is None:
        raise PayloadError("the CWT has no expiry (exp) claim")
    if now >= decoded.expires_at:
        raise Expired("the certificate has expired")
    if decoded.issued_at is not None and (decoded.issued_at - now).total_seconds() > CLOCK_SKEW:
        raise NotYetValid("the certificate is issued in the future")


def verify(text: str, trust: TrustList, *, now: datetime | None = None,
           is_revoked: Callable[[str], bool] | None = None) -> Verified:
    decoded = decode(text)
    signer = check_signature(decoded, trust)
    check_schema(decoded)
    check_usage(decoded, signer)
    check_validity(decoded, now or datetime.now(UTC))
    for uvci in decoded.uvcis:
        if trust.is_revoked(uvci) or (is_revoked is not None and is_revoked(uvci)):
            raise Revoked("the certificate has been revoked by its issuer")
    return Verified(decoded, signer)
