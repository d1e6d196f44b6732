"""Document signer keys: a national root (CSCA) and one document signer (DSC) per custodian province.

- Keys are ECDSA P-256 (ES256), kept in the keyring directory (`certificates/`, mode 0600), never
  in the database or the repository. Outside production they are generated on first use (or by
  `nhr certificates keys`); in production a missing key fails loudly (`KeyUnavailable`).
- The CSCA is self-signed (CA, path length 0); each DSC is signed by it, marked for digital
  signature only, with the DCC extended key usage for vaccination certificates
  (1.3.6.1.4.1.1847.2021.1.2). The trust list publishes the DSCs; the CSCA lets a gateway check
  them.
- `kid` = first 8 bytes of SHA-256 over the DSC's DER encoding (`trust.kid_of`).
- Generation is race-safe between processes: each file is created once (O_EXCL) and every
  process re-reads the files, so all use the winner's key; a certificate that does not match its
  key is refused.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from security.certificates.trust import TrustList, kid_of
from security.crypto.errors import KeyUnavailable
from security.crypto.keyring import FileKeyring

_CUSTODIAN = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,8})*$")
DCC_VACCINATION_EKU = x509.ObjectIdentifier("1.3.6.1.4.1.1847.2021.1.2")
ROOT_YEARS, SIGNER_YEARS = 10, 2


@dataclass(frozen=True)
class Signer:
    custodian: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    kid: bytes


def _pem_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyUnavailable("a certificate issuer key is not an ECDSA P-256 key")
    return key


def _name(country: str, common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, country),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "National Health Registry"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: x509.Name, public_key, issuer: x509.Name, issuer_key, years: int, ca: bool) -> bytes:
    now = datetime.now(UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
         .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
         .not_valid_after(now + timedelta(days=365 * years))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([DCC_VACCINATION_EKU]), critical=False)
    return b.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _matching(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, spki) != key.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise KeyUnavailable("a certificate in the keyring does not match its key")
    return cert


class IssuerKeys:
    """The registry's certificate issuers, loaded (or created) from the keyring and cached."""

    def __init__(self, keyring: FileKeyring, country: str = "PK") -> None:
        self.keyring = keyring
        self.country = country
        self._signers: dict[str, Signer] = {}
        self._root: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None
        self._lock = threading.Lock()

    def root(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self._root is None:
            key = _load_key(self.keyring.pem_file(f"csca-{self.country}.key.pem", _pem_key))
            name = _name(self.country, f"NHR CSCA {self.country}")
            cert_pem = self.keyring.pem_file(f"csca-{self.country}.crt.pem",
                                             lambda: _certificate(name, key.public_key(), name, key, ROOT_YEARS, True))
            self._root = (key, _matching(x509.load_pem_x509_certificate(cert_pem), key))
        return self._root

    def signer(self, custodian: str) -> Signer:
        found = self._signers.get(custodian)
        if found is not None:
            return found
        if not _CUSTODIAN.match(custodian):
            raise KeyUnavailable("custodian code is not valid")
        with self._lock:
            root_key, root_cert = self.root()
            key = _load_key(self.keyring.pem_file(f"dsc-{custodian}.key.pem", _pem_key))
            cert_pem = self.keyring.pem_file(
                f"dsc-{custodian}.crt.pem",
                lambda: _certificate(_name(self.country, f"NHR DSC {custodian}"), key.public_key(), root_cert.subject,
                                     root_key, SIGNER_YEARS, False))
            cert = _matching(x509.load_pem_x509_certificate(cert_pem), key)
            found = self._signers.setdefault(custodian, Signer(custodian, key, cert, kid_of(cert)))
        return found

    def custodians(self) -> list[str]:
        """Custodians whose document signer exists in the keyring."""
        return [n[len("dsc-"):-len(".crt.pem")] for n in self.keyring.pem_files("dsc-") if n.endswith(".crt.pem")]

    def trust_list(self) -> TrustList:
        """The registry's own document signers (existing ones only; nothing is generated here)."""
        tl = TrustList()
        for custodian in self.custodians():
            cert = x509.load_pem_x509_certificate(self.keyring.pem_file(f"dsc-{custodian}.crt.pem", _never))
            tl.add(cert, label=f"NHR DSC {custodian}")
        return tl


def _never() -> bytes:
    raise KeyUnavailable("not generated here")
