"""Document signer keys: a national root (CSCA) and one document signer (DSC) per custodian province.

- Keys are ECDSA P-256 (ES256), kept in the keyring directory (`certificates/`, mode 0600), never
  in the database or the repository. Outside production they are generated on first use (or by
  `nhr certificates keys`); in production a missing key fails loudly (`KeyUnavailable`).
- The CSCA is self-signed (CA, path length 0); each DSC is signed by it, marked for digital
  signature only, with the DCC extended key usage for vaccination certificates
  (1.3.6.1.4.1.1847.2021.1.2). The trust list publishes the DSCs; the CSCA lets a gateway check
  them.
- `kid` = first 8 bytes of SHA-256 over the DSC's DER encoding (`trust.kid_of`).
- A document signer is used to sign only while it is valid and not about to expire: at a time
  `at` before its notBefore it is refused (`KeyUnavailable`: a clock or keyring fault, never a
  silent new key), and from `notAfter - renew_days` on (the expiry second itself included, even
  with 0 days) it is renewed: a new key and certificate, the next generation of files
  (`dsc-<custodian>.<n>.key.pem`, the first generation keeps its historical name). Old
  generations stay in the keyring and in the trust list, so certificates they signed still verify.
  Renewal writes to the keyring in production too: it replaces a signer that exists, as the
  operator who created it meant (a first signer in production still needs `nhr certificate keys`).
- Generation is race-safe between processes: each file is created once (O_EXCL) and every
  process re-reads the files, so all use the winner's key; a certificate that does not match its
  key is refused.
"""

from __future__ import annotations

import logging
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
log = logging.getLogger("nhr.certificates")


@dataclass(frozen=True)
class Signer:
    custodian: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    kid: bytes
    generation: int = 1

    def usable_at(self, at: datetime, renew_days: int) -> bool:
        """Valid at `at` and before the renewal window (`notAfter - renew_days`, exclusive)."""
        cert = self.certificate
        return cert.not_valid_before_utc <= at < cert.not_valid_after_utc - timedelta(days=renew_days)


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


def _certificate(subject: x509.Name, public_key, issuer: x509.Name, issuer_key, years: int, ca: bool,
                 at: datetime | None = None, not_after: datetime | None = None) -> bytes:
    now = at or datetime.now(UTC)
    end = now + timedelta(days=365 * years)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
         .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
         .not_valid_after(min(end, not_after) if not_after else end)
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

    def root(self, at: datetime | None = None) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        if self._root is None:
            key = _load_key(self.keyring.pem_file(f"csca-{self.country}.key.pem", _pem_key))
            name = _name(self.country, f"NHR CSCA {self.country}")
            cert_pem = self.keyring.pem_file(f"csca-{self.country}.crt.pem",
                                             lambda: _certificate(name, key.public_key(), name, key, ROOT_YEARS, True, at))
            self._root = (key, _matching(x509.load_pem_x509_certificate(cert_pem), key))
        return self._root

    def signer(self, custodian: str, at: datetime | None = None, renew_days: int = 0) -> Signer:
        """The custodian's document signer to sign with at `at` (default now): the newest
        generation, renewed first if `at` is within `renew_days` of its expiry or past it."""
        at = at or datetime.now(UTC)
        found = self._signers.get(custodian)
        if found is not None and found.usable_at(at, renew_days):
            return found
        if not _CUSTODIAN.match(custodian):
            raise KeyUnavailable("custodian code is not valid")
        with self._lock:
            latest = self._latest_generation(custodian) or 1
            # a renewal cut off between its key and its certificate is finished (it is a renewal, not a first key)
            found = self._load(custodian, latest, at, create=None if latest == 1 else True)
            if at < found.certificate.not_valid_before_utc:
                raise KeyUnavailable("the document signer's certificate is not yet valid (check the clock)")
            if not found.usable_at(at, renew_days):
                found = self._load(custodian, found.generation + 1, at, create=True)
                log.info("document signer of %s renewed: generation %d, kid %s, valid until %s", custodian,
                         found.generation, found.kid.hex(), found.certificate.not_valid_after_utc.isoformat())
                if not found.usable_at(at, renew_days):
                    raise KeyUnavailable("the renewed document signer is not usable (the CSCA expires too soon)")
            self._signers[custodian] = found
        return found

    def _load(self, custodian: str, generation: int, at: datetime, create: bool | None) -> Signer:
        root_key, root_cert = self.root(at)
        stem = _stem(custodian, generation)
        key = _load_key(self.keyring.pem_file(f"{stem}.key.pem", _pem_key, create=create))
        cert_pem = self.keyring.pem_file(
            f"{stem}.crt.pem",
            lambda: _certificate(_name(self.country, f"NHR DSC {custodian}"), key.public_key(), root_cert.subject,
                                 root_key, SIGNER_YEARS, False, at, root_cert.not_valid_after_utc),
            create=create)
        cert = _matching(x509.load_pem_x509_certificate(cert_pem), key)
        return Signer(custodian, key, cert, kid_of(cert), generation)

    def _latest_generation(self, custodian: str) -> int:
        """The newest generation with a key in the keyring (0: none yet)."""
        found = [g for name in self.keyring.pem_files(f"dsc-{custodian}.") if (g := _generation(name, custodian, ".key.pem"))]
        return max(found, default=0)

    def _certificate_files(self) -> list[tuple[str, str]]:
        out = []
        for name in self.keyring.pem_files("dsc-"):
            if not name.endswith(".crt.pem"):
                continue
            custodian = name[len("dsc-"):-len(".crt.pem")].split(".")[0]
            if _generation(name, custodian, ".crt.pem"):
                out.append((custodian, name))
        return out

    def custodians(self) -> list[str]:
        """Custodians whose document signer exists in the keyring."""
        return sorted({custodian for custodian, _ in self._certificate_files()})

    def trust_list(self) -> TrustList:
        """The registry's own document signers, every generation (existing ones only; nothing is
        generated here): a renewed signer's predecessor still verifies what it signed."""
        tl = TrustList()
        for custodian, name in self._certificate_files():
            cert = x509.load_pem_x509_certificate(self.keyring.pem_file(name, _never))
            tl.add(cert, label=f"NHR DSC {custodian}")
        return tl


def _stem(custodian: str, generation: int) -> str:
    return f"dsc-{custodian}" if generation == 1 else f"dsc-{custodian}.{generation}"


def _generation(name: str, custodian: str, suffix: str) -> int:
    """The generation a keyring file name holds for `custodian` (0: not one of its files)."""
    if not name.endswith(suffix):
        return 0
    middle = name[len(f"dsc-{custodian}"):-len(suffix)]
    if middle == "":
        return 1
    return int(middle[1:]) if middle.startswith(".") and middle[1:].isdigit() and int(middle[1:]) >= 2 else 0


def _never() -> bytes:
    raise KeyUnavailable("not generated here")
