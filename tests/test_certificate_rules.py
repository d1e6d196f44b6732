"""HC1 verification rules beyond the signature (issue 18): the EU DCC JSON schema, the signer's
extended key usage against the certificate type, and time at the exact second.

Signers here are self-signed document signer certificates built with `cryptography`, each with
the validity window and extended key usage a case needs; the trust list holds only them.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.certificates.payload import Dose, build_dcc, new_uvci
from registry.certificates.valuesets import DISEASES, VACCINE_CODES
from registry.immunizations.vaccines import VACCINES, first_dose
from security.certificates import hcert, schema
from security.certificates.trust import TrustList, kid_of, permitted_types

SCHEMA_CASES = Path(__file__).parent / "data" / "eu-dcc-schema"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NAM = {"fn": "Qizilbash", "fnt": "QIZILBASH", "gn": "Zarnigar", "gnt": "ZARNIGAR"}
ENTRY = {"tg": "398102009", "co": "PK", "is": "NHR PK-PB", "ci": "URN:UVCI:01:PK:PB00000000000000000000000000000000#J"}
PAYLOADS = {
    "v": {"ver": "1.3.0", "nam": NAM, "dob": "2026-01-01",
          "v": [{**ENTRY, "vp": "J07BF04", "mp": "NHR-EPI-OPV", "ma": "NHR-MAH-UNRECORDED", "dn": 1, "sd": 5, "dt": "2026-02-01"}]},
    "t": {"ver": "1.3.0", "nam": NAM, "dob": "2026-01-01",
          "t": [{**ENTRY, "tt": "LP6464-4", "sc": "2026-02-01T10:00:00Z", "tr": "260415000"}]},
    "r": {"ver": "1.3.0", "nam": NAM, "dob": "2026-01-01",
          "r": [{**ENTRY, "fr": "2026-01-20", "df": "2026-02-01", "du": "2026-08-01"}]},
}
DCC_OID = "1.3.6.1.4.1.1847.2021.1.{}"
DCC_OID_ALT = "1.3.6.1.4.1.0.1847.2021.1.{}"


class Signer:
    def __init__(self, *, eku: list[str] | None = None, not_before: datetime = T0 - timedelta(days=30),
                 not_after: datetime = T0 + timedelta(days=365)):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "PK"), x509.NameAttribute(NameOID.COMMON_NAME, "test DSC")])
        b = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after))
        if eku is not None:
            b = b.add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier(o) if isinstance(o, str) else o for o in eku]),
                                critical=False)
        self.certificate = b.sign(self.key, hashes.SHA256())
        self.kid = kid_of(self.certificate)

    def trust(self) -> TrustList:
        tl = TrustList()
        tl.add(self.certificate)
        return tl

    def sign(self, dcc: dict, *, iat: datetime | None = T0, exp: datetime = T0 + timedelta(days=30)) -> str:
        claims = hcert.claims(dcc, issuer="PK", issued_at=iat or T0, expires_at=exp)
        if iat is None:
            del claims[hcert.CLAIM_IAT]
        return hcert.encode(claims, self.key, self.kid)


def code(text: str, trust: TrustList, now: datetime = T0) -> str | None:
    try:
        hcert.verify(text, trust, now=now)
        return None
    except hcert.HcertError as exc:
        return exc.code


@pytest.fixture(scope="module")
def plain():
    return Signer()


# --- the EU DCC JSON schema -----------------------------------------------------------------------

def test_the_vendored_schema_is_the_eus_with_its_licence_and_source():
    folder = Path(schema.__file__).parent / "dcc_schema"
    assert schema.version() == "1.3.3" and schema.schema()["$id"] == "https://id.uvci.eu/DCC.combined-schema.json"
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "9fe38ededb7922644d95743ac31fa04b182f3536" in (folder / "SOURCE.md").read_text()


@pytest.mark.parametrize("path", sorted((SCHEMA_CASES / "valid").glob("*.json")), ids=lambda p: p.name)
def test_the_schema_repositorys_valid_cases_pass(path):
    assert schema.problems(json.loads(path.read_text())) == []


@pytest.mark.parametrize("path", sorted((SCHEMA_CASES / "invalid").glob("*.json")), ids=lambda p: p.name)
def test_the_schema_repositorys_invalid_cases_fail(path):
    assert schema.problems(json.loads(path.read_text()))


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_our_sample_payloads_pass_the_schema(kind):
    assert schema.problems(PAYLOADS[kind]) == []


BROKEN = {
    "dob out of range": lambda d: d.update(dob="1809-02-28"),
    "dose number 0": lambda d: d["v"][0].update(dn=0),
    "impossible vaccination date": lambda d: d["v"][0].update(dt="2026-02-30"),
    "no name": lambda d: d.pop("nam"),
    "lower-case transliteration": lambda d: d["nam"].update(fnt="qizilbash"),
    "two groups": lambda d: d.update(t=PAYLOADS["t"]["t"]),
    "a byte string for a text": lambda d: d["v"][0].update(co=b"PK"),
    "a CBOR date for a text": lambda d: d["v"][0].update(dt=datetime(2026, 2, 1, tzinfo=UTC)),
    "a name of 81 characters": lambda d: d["nam"].update(fn="A" * 81),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_signed_payload_that_breaks_the_schema_is_its_own_error_naming_no_value(plain, case):
    dcc = json.loads(json.dumps(PAYLOADS["v"]))
    BROKEN[case](dcc)
    try:
        hcert.verify(plain.sign(dcc), plain.trust(), now=T0)
        raise AssertionError("verified")
    except hcert.HcertError as exc:
        assert exc.code == "schema", case
        message = str(exc)
    assert "EU DCC schema 1.3.3" in message
    for value in ("1809", "Qizilbash", "qizilbash", "2026-02-30", "AAAA", "Zarnigar"):
        assert value not in message


def test_schema_is_judged_only_after_the_signature(plain):
    dcc = {**PAYLOADS["v"], "dob": "1809-02-28"}
    forged = hcert.encode(hcert.claims(dcc, issuer="PK", issued_at=T0, expires_at=T0 + timedelta(days=1)),
                          Signer().key, plain.kid)
    assert code(forged, plain.trust()) == "signature_mismatch"


NAMES = st.one_of(st.none(), st.text(max_size=120), st.sampled_from(["محمد علی", "Bibi O'Neil-Khan", "Ñuñez Gößinger"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(family=NAMES, given_name=NAMES, born=st.dates(date(1900, 1, 1), date(2099, 12, 31)),
       vaccine=st.sampled_from(sorted(VACCINE_CODES)), data=st.data())
def test_every_payload_nhr_builds_passes_the_schema(family, given_name, born, vaccine, data):
    number = data.draw(st.integers(first_dose(vaccine), VACCINES[vaccine]["max_dose"]))
    disease = data.draw(st.sampled_from(sorted(d for d in DISEASES if d in VACCINE_CODES[vaccine][1])))
    dcc = build_dcc(family_name=family, given_name=given_name, birth_date=born, dose=Dose(vaccine, number, born),
                    disease=disease, country="PK", issuer="National Health Registry PK-PB", uvci=new_uvci("PK", "PK-PB"))
    assert schema.problems(cbor2.loads(cbor2.dumps(dcc))) == []


# --- extended key usage against the certificate type ----------------------------------------------

EKUS = {
    "none": (None, "tvr"),
    "unrelated only (serverAuth)": ([ExtendedKeyUsageOID.SERVER_AUTH], "tvr"),
    "test": ([DCC_OID.format(1)], "t"),
    "test (.0. variant)": ([DCC_OID_ALT.format(1)], "t"),
    "vaccination": ([DCC_OID.format(2)], "v"),
    "vaccination (.0. variant)": ([DCC_OID_ALT.format(2)], "v"),
    "recovery": ([DCC_OID.format(3)], "r"),
    "test and recovery": ([DCC_OID.format(1), DCC_OID_ALT.format(3)], "tr"),
    "all three and serverAuth": ([DCC_OID.format(1), DCC_OID.format(2), DCC_OID.format(3), ExtendedKeyUsageOID.SERVER_AUTH], "tvr"),
}


@pytest.mark.parametrize("usage", sorted(EKUS))
def test_the_signers_extended_key_usage_limits_the_certificate_types(usage):
    eku, allowed = EKUS[usage]
    signer = Signer(eku=eku)
    assert permitted_types(signer.certificate) == frozenset(allowed)
    for kind, dcc in PAYLOADS.items():
        want = None if kind in allowed else "signer_type_mismatch"
        assert code(signer.sign(dcc), signer.trust()) == want, (usage, kind)


def test_a_test_only_signer_cannot_validate_a_vaccination_certificate():
    signer = Signer(eku=[DCC_OID.format(1)])
    assert code(signer.sign(PAYLOADS["v"]), signer.trust()) == "signer_type_mismatch"
    assert code(signer.sign(PAYLOADS["t"]), signer.trust()) is None


def test_nhrs_own_signers_are_limited_to_vaccination_certificates(tmp_path):
    from security.certificates.issuer import IssuerKeys
    from security.crypto.keyring import FileKeyring

    own = IssuerKeys(FileKeyring(tmp_path, create_missing=True)).signer("PK-PB")
    trust = TrustList()
    trust.add(own.certificate)
    now = own.certificate.not_valid_before_utc + timedelta(hours=1)

    def signed(dcc):
        return hcert.encode(hcert.claims(dcc, issuer="PK", issued_at=now, expires_at=now + timedelta(days=1)), own.key, own.kid)

    assert code(signed(PAYLOADS["v"]), trust, now) is None
    assert code(signed(PAYLOADS["t"]), trust, now) == code(signed(PAYLOADS["r"]), trust, now) == "signer_type_mismatch"


# --- time at the exact second ----------------------------------------------------------------------

def test_expired_means_at_or_after_exp(plain):
    exp = T0 + timedelta(days=30)
    text, trust = plain.sign(PAYLOADS["v"], exp=exp), plain.trust()
    assert code(text, trust, exp - timedelta(seconds=1)) is None
    assert code(text, trust, exp - timedelta(microseconds=1)) is None
    assert code(text, trust, exp) == "expired"
    assert code(text, trust, exp + timedelta(seconds=1)) == "expired"


def test_issued_in_the_future_beyond_the_clock_skew_is_not_yet_valid(plain):
    text, trust = plain.sign(PAYLOADS["v"]), plain.trust()
    assert code(text, trust, T0 - timedelta(seconds=hcert.CLOCK_SKEW)) is None
    assert code(text, trust, T0 - timedelta(seconds=hcert.CLOCK_SKEW + 1)) == "not_yet_valid"


def test_the_signer_must_be_valid_at_issuance_both_ends_included():
    start, end = T0 - timedelta(days=10), T0 + timedelta(days=10)
    signer = Signer(not_before=start, not_after=end)
    trust = signer.trust()
    for iat, want in ((start - timedelta(seconds=1), "signer_not_valid"), (start, None), (end, None),
                      (end + timedelta(seconds=1), "signer_not_valid")):
        text = signer.sign(PAYLOADS["v"], iat=iat, exp=iat + timedelta(days=30))
        assert code(text, trust, now=iat) == want, iat
    # issued while the signer was valid, verified after the signer expired: still valid until exp
    text = signer.sign(PAYLOADS["v"], iat=end, exp=end + timedelta(days=30))
    assert code(text, trust, now=end + timedelta(days=29)) is None


def test_a_certificate_without_iat_is_refused(plain):
    assert code(plain.sign(PAYLOADS["v"], iat=None), plain.trust()) == "payload"


# --- the CLI reports the new codes offline, without payload values ----------------------------------

def test_cli_reports_schema_and_signer_type_failures_offline(tmp_path):
    from typer.testing import CliRunner

    from cli import certificates as cli

    signer = Signer(eku=[DCC_OID.format(1)])
    trust = tmp_path / "trust.json"
    trust.write_text(signer.trust().to_json())
    at = ["--trust-list", str(trust), "--at", T0.isoformat()]
    runner = CliRunner()
    ok = runner.invoke(cli.app, ["verify", signer.sign(PAYLOADS["t"]), *at])
    assert ok.exit_code == 0 and "VALID" in ok.output
    wrong_type = runner.invoke(cli.app, ["verify", signer.sign(PAYLOADS["v"]), *at])
    assert wrong_type.exit_code == 1 and "signer_type_mismatch" in wrong_type.output
    broken = runner.invoke(cli.app, ["verify", signer.sign({**PAYLOADS["t"], "dob": "1809-02-28"}), *at])
    assert broken.exit_code == 1 and "INVALID schema" in broken.output and "/dob" in broken.output
    assert "1809" not in broken.output and "Qizilbash" not in broken.output
    at_exp = runner.invoke(cli.app, ["verify", signer.sign(PAYLOADS["t"]), "--trust-list", str(trust),
                                     "--at", (T0 + timedelta(days=30)).isoformat()])
    assert at_exp.exit_code == 1 and "expired" in at_exp.output
