"""The trust list: key identifier -> document signer certificate.

- `kid` is the first 8 bytes of SHA-256 over the DER certificate (DCC specification 3.3.1).
- A trust list holds the registry's own document signers and any certificates loaded from other
  issuers (another country's DSC, a test vector's signer). It is exported as JSON so that a
  verifier can check certificates offline: public certificates and revoked UVCI hashes only.
- Revocations travel as SHA-256 of the UVCI (as the EU DCC revocation lists do), so the list
  discloses no certificate identifiers.
- A signer's extended key usage limits the certificate types it may sign (`permitted_types`), as
  the EU reference verifiers read it: the DCC OIDs 1.3.6.1.4.1.1847.2021.1.{1 test, 2 vaccination,
  3 recovery} and their 1.3.6.1.4.1.0.1847.2021.1.x variants. No extended key usage, or one with
  none of these OIDs, permits every type; otherwise only the types named. A certificate whose
  extensions cannot be parsed permits none (fail closed).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

FORMAT = "nhr-dcc-trust-list/1"
ALL_TYPES = frozenset("tvr")  # the DCC payload groups: t test, v vaccination, r recovery
DCC_EKU_TYPES = {f"1.3.6.1.4.1.{arc}1847.2021.1.{n}": kind
                 for arc in ("", "0.") for n, kind in ((1, "t"), (2, "v"), (3, "r"))}


def kid_of(certificate: x509.Certificate) -> bytes:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()[:8]


def uvci_hash(uvci: str) -> str:
    return hashlib.sha256(uvci.encode()).hexdigest()


class TrustListError(ValueError):
    pass


@dataclass(frozen=True)
class TrustedSigner:
    kid: bytes
    certificate: x509.Certificate
    label: str = ""

    @property
    def public_key(self):
        return self.certificate.public_key()

    @property
    def permitted_types(self) -> frozenset[str]:
        return permitted_types(self.certificate)


@dataclass
class TrustList:
    signers: dict[bytes, TrustedSigner] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)  # SHA-256 hex of revoked UVCIs

    def add(self, certificate: x509.Certificate | bytes | str, label: str = "") -> TrustedSigner:
        """Add a certificate (object, DER bytes, PEM text or base64 DER text)."""
        cert = load_certificate(certificate)
        signer = TrustedSigner(kid_of(cert), cert, label)
        self.signers[signer.kid] = signer
        return signer

    def get(self, kid: bytes | None) -> TrustedSigner | None:
        return self.signers.get(kid) if kid is not None else None

    def is_revoked(self, uvci: str) -> bool:
        return uvci_hash(uvci) in self.revoked

    def merge(self, other: TrustList) -> TrustList:
        return TrustList({**self.signers, **other.signers}, self.revoked | other.revoked)

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT,
            "signers": [{"kid": base64.b64encode(s.kid).decode(), "label": s.label,
                         "certificate": base64.b64encode(s.certificate.public_bytes(serialization.Encoding.DER)).decode()}
                        for s in sorted(self.signers.values(), key=lambda s: s.kid)],
            "revoked_uvci_sha256": sorted(self.revoked),
        }, indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrustList:
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise TrustListError(f"not an {FORMAT} document")
            tl = cls()
            for entry in doc.get("signers", []):
                signer = tl.add(entry["certificate"], entry.get("label", ""))
                if "kid" in entry and base64.b64decode(entry["kid"]) != signer.kid:
                    raise TrustListError("a trust list entry's kid does not match its certificate")
            tl.revoked = {str(h) for h in doc.get("revoked_uvci_sha256", [])}
            return tl
        except TrustListError:
            raise
        except Exception as exc:
            raise TrustListError(f"the trust list cannot be read ({type(exc).__name__})") from None


def permitted_types(certificate: x509.Certificate) -> frozenset[str]:
    """The DCC types ("t", "v", "r") this signer may sign, from its extended key usage."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ALL_TYPES
    except ValueError:  # malformed or duplicate extensions
        return frozenset()
    named = frozenset(DCC_EKU_TYPES[oid.dotted_string] for oid in usage if oid.dotted_string in DCC_EKU_TYPES)
    return named or ALL_TYPES


def load_certificate(value: x509.Certificate | bytes | str) -> x509.Certificate:
    if isinstance(value, x509.Certificate):
        return value
    if isinstance(value, str):
        value = value.strip()
        if value.startswith("-----BEGIN"):
            return x509.load_pem_x509_certificate(value.encode())
        value = base64.b64decode(value, validate=True)
    return x509.load_der_x509_certificate(value)
