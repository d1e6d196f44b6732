"""Node identities for provincial nodes (issue 16 item 4): a federation CA, one certificate per
node, and the caller assertion a node signs when it asks another node on behalf of its user.

Invariants:
- A node's certificate names its province twice: the subject CN and a URI SAN `nhr-node:<province>`;
  the province is read from the URI SAN only, and only from a certificate issued by the
  federation CA (checked directly, no chain building: the CA signs node certificates itself).
- The same key serves the node's TLS identity (server and client, mutual TLS) and signs its
  caller assertions (ECDSA P-256, SHA-256), so an assertion is attributable to a node the CA
  admitted, and can be kept in the receiver's audit trail as evidence.
- An assertion is fresh for `MAX_AGE_SECONDS` and names the node that must answer (`audience`):
  one captured in transit cannot be replayed later or against another node.
- Nothing here is generated implicitly by a running node: `nhr node init-tls` or a test creates the
  files; none is committed.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

URI_PREFIX = "nhr-node:"
MAX_AGE_SECONDS = 60


class AssertionRejected(ValueError):
    """The caller assertion is not one this node accepts (the message names the reason, no data)."""


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def create_ca(directory: Path, name: str = "NHR federation CA", days: int = 3650) -> tuple[Path, Path]:
    """A new federation CA in `directory` (ca.pem, ca.key): kept by whoever admits nodes."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "ca.key", key)
    return directory / "ca.pem", directory / "ca.key"


def issue_node(ca_dir: Path, province: str, out_dir: Path, *, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
               days: int = 825) -> tuple[Path, Path]:
    """A node certificate for `province` (node.pem, node.key in `out_dir`), valid as TLS server and client."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(URI_PREFIX + province)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, province)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (out_dir / "node.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(out_dir / "node.key", key)
    return out_dir / "node.pem", out_dir / "node.key"


def province_of(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found = [u[len(URI_PREFIX):] for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith(URI_PREFIX)]
    return found[0] if len(found) == 1 else None


def _canonical(claims: dict) -> bytes:
    return json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True)
class NodeSigner:
    """This node's key and certificate, loaded once per process."""

    province: str
    key: ec.EllipticCurvePrivateKey
    cert_pem: bytes

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> NodeSigner:
        cert_pem = cert_file.read_bytes()
        province = province_of(x509.load_pem_x509_certificate(cert_pem))
        if province is None:
            raise ValueError(f"{cert_file} is not a node certificate (no {URI_PREFIX}<province> name)")
        key = serialization.load_pem_private_key(key_file.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_file} is not an EC private key")
        return cls(province, key, cert_pem)

    def assert_caller(self, audience: str, caller: dict) -> dict:
        """A signed statement: this node, for `audience`, now, on behalf of `caller` (user id, username, role,
        facility, province, district, purpose)."""
        claims = {"node": self.province, "audience": audience, "issued_at": int(time.time()), "caller": caller}
        signature = self.key.sign(_canonical(claims), ec.ECDSA(hashes.SHA256()))
        return {"claims": claims, "signature": base64.b64encode(signature).decode(),
                "certificate": self.cert_pem.decode()}


@dataclass(frozen=True)
class AssertionVerifier:
    """Checks caller assertions addressed to `province` against the federation CA."""

    province: str
    ca: x509.Certificate

    @classmethod
    def load(cls, province: str, ca_file: Path) -> AssertionVerifier:
        return cls(province, x509.load_pem_x509_certificate(ca_file.read_bytes()))

    def verify(self, assertion: object, *, now: float | None = None) -> dict:
        """The verified claims, or AssertionRejected."""
        if not isinstance(assertion, dict) or not {"claims", "signature", "certificate"} <= set(assertion):
            raise AssertionRejected("malformed caller assertion")
        try:
            cert = x509.load_pem_x509_certificate(str(assertion["certificate"]).encode())
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            raise AssertionRejected("the assertion's certificate is not issued by the federation CA") from None
        moment = datetime.fromtimestamp(now or time.time(), UTC)
        if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
            raise AssertionRejected("the assertion's certificate is expired or not yet valid")
        claims = assertion["claims"]
        if not isinstance(claims, dict):
            raise AssertionRejected("malformed caller assertion")
        try:
            public = cert.public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(base64.b64decode(str(assertion["signature"]), validate=True), _canonical(claims),
                          ec.ECDSA(hashes.SHA256()))
        except (ValueError, TypeError, AssertionError, InvalidSignature):
            raise AssertionRejected("the assertion's signature does not verify") from None
        if claims.get("node") != province_of(cert):
            raise AssertionRejected("the assertion names another node than its certificate")
        if claims.get("audience") != self.province:
            raise AssertionRejected("the assertion is addressed to another node")
        issued = claims.get("issued_at")
        if not isinstance(issued, int) or abs(moment.timestamp() - issued) > MAX_AGE_SECONDS:
            raise AssertionRejected("the assertion is stale")
        if not isinstance(claims.get("caller"), dict):
            raise AssertionRejected("malformed caller assertion")
        return claims
