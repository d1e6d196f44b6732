"""HCERT format: the public EU DCC test vectors, our own vectors, and fuzzing of the decoder.

The vectors live in tests/data/eu-dcc (a sample of the public EU DCC test data, Apache-2.0, with
its licence); NHR_EU_DCC_VECTORS points at another folder of the same files. EXPECTEDPICTUREDECODE is checked with zxing-cpp (a test dependency: segno only encodes),
which also reads back the QR codes NHR itself draws.
"""

from __future__ import annotations

import base64
import io
import json
import os
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.certificates.payload import icao_transliterate, luhn_mod_n, new_uvci, uvci_is_well_formed
from security.certificates import base45, cose, hcert, schema
from security.certificates.issuer import IssuerKeys
from security.certificates.trust import TrustList, kid_of
from security.crypto.keyring import FileKeyring

VECTORS = Path(os.environ.get("NHR_EU_DCC_VECTORS") or Path(__file__).resolve().parent / "data" / "eu-dcc")
FILES = sorted(VECTORS.glob("*.json")) if VECTORS.is_dir() else []
needs_vectors = pytest.mark.skipif(not FILES, reason=f"EU DCC test vectors not found at {VECTORS} (NHR_EU_DCC_VECTORS)")


def _read_qr(png: bytes) -> str | None:
    zxingcpp = pytest.importorskip("zxingcpp", reason="zxing-cpp (test extra) reads QR pictures")
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    return found[0].text if found else None


def _clock(v) -> datetime:
    return datetime.fromisoformat(v["TESTCTX"]["VALIDATIONCLOCK"].replace("Z", "+00:00"))


def _trust(v) -> TrustList:
    tl = TrustList()
    tl.add(v["TESTCTX"]["CERTIFICATE"], label="vector")
    return tl


@needs_vectors
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_eu_dcc_vector(path):
    v = json.loads(path.read_text())
    expected = v["EXPECTEDRESULTS"]
    text = v["PREFIX"]
    checked = 0

    def outcome(step) -> bool:
        try:
            step()
            return True
        except hcert.HcertError:
            return False

    if "EXPECTEDUNPREFIX" in expected:
        assert outcome(lambda: hcert.unprefix(text)) is expected["EXPECTEDUNPREFIX"]; checked += 1
        if expected["EXPECTEDUNPREFIX"] and "BASE45" in v:
            assert hcert.unprefix(text) == v["BASE45"]
    if "EXPECTEDB45DECODE" in expected:
        assert outcome(lambda: hcert.b45decode(hcert.unprefix(text))) is expected["EXPECTEDB45DECODE"]; checked += 1
        if expected["EXPECTEDB45DECODE"] and "COMPRESSED" in v:
            assert hcert.b45decode(hcert.unprefix(text)).hex() == v["COMPRESSED"].lower()
            assert base45.encode(bytes.fromhex(v["COMPRESSED"])) == v["BASE45"]
    if "EXPECTEDCOMPRESSION" in expected:
        ok = outcome(lambda: hcert.inflate(hcert.b45decode(hcert.unprefix(text))))
        assert ok is expected["EXPECTEDCOMPRESSION"]; checked += 1
        if ok and "COSE" in v:
            assert hcert.inflate(hcert.b45decode(hcert.unprefix(text))).hex() == v["COSE"].lower()
    if "EXPECTEDDECODE" in expected:
        assert outcome(lambda: hcert.decode(text)) is expected["EXPECTEDDECODE"]; checked += 1
        if expected["EXPECTEDDECODE"] and "CBOR" in v:
            assert hcert.decode(text).dcc == cbor2.loads(bytes.fromhex(v["CBOR"]))
    if "EXPECTEDSCHEMAVALIDATION" in expected:
        assert (schema.problems(hcert.decode(text).dcc) == []) is expected["EXPECTEDSCHEMAVALIDATION"]; checked += 1
    if "EXPECTEDVALIDJSON" in expected and "JSON" in v:
        assert (hcert.decode(text).dcc == v["JSON"]) is expected["EXPECTEDVALIDJSON"]; checked += 1
    if "EXPECTEDVERIFY" in expected or "EXPECTEDVALIDSIGNATURE" in expected:
        want = expected.get("EXPECTEDVERIFY", expected.get("EXPECTEDVALIDSIGNATURE"))
        assert outcome(lambda: hcert.check_signature(hcert.decode(text), _trust(v))) is want; checked += 1
    if "EXPECTEDPICTUREDECODE" in expected and "2DCODE" in v:
        assert (_read_qr(base64.b64decode(v["2DCODE"])) == text) is expected["EXPECTEDPICTUREDECODE"]; checked += 1
    if "EXPECTEDEXPIRATIONCHECK" in expected:
        assert outcome(lambda: hcert.check_validity(hcert.decode(text), _clock(v))) is expected["EXPECTEDEXPIRATIONCHECK"]
        checked += 1
    assert checked, "the vector tests nothing we know of"


@needs_vectors
def test_eu_dcc_vectors_fail_with_the_right_code():
    want = {"AT-1.json": None, "common-CO5.json": "signature_mismatch", "common-CO22.json": "unknown_kid",
            "common-CO17.json": "expired"}
    for path in FILES:
        if path.name not in want:
            continue
        v = json.loads(path.read_text())
        try:
            hcert.verify(v["PREFIX"], _trust(v), now=_clock(v))
            got = None
        except hcert.HcertError as exc:
            got = exc.code
        assert got == want[path.name], path.name


@needs_vectors
def test_uvci_check_character_matches_the_eu_examples():
    for path in FILES:
        for uvci in hcert.decode(json.loads(path.read_text())["PREFIX"]).uvcis:
            assert uvci_is_well_formed(uvci), path.name


# --- our own vectors ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    return IssuerKeys(FileKeyring(tmp_path_factory.mktemp("certkeys"), create_missing=True)).signer("PK-PB")


@pytest.fixture(scope="module")
def valid_text(issuer):
    return _make(issuer)


# The verification clock of these tests. The module-scoped signer is created when its first test
# runs, which on a loaded machine can be many minutes after this module is imported, and its
# validity starts 5 minutes before its creation: an hour ahead keeps NOW inside that validity
# however late the fixture runs (a suite that slow would time out first).
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
DCC = {"ver": "1.3.0", "nam": {"fn": "Qizilbash", "fnt": "QIZILBASH", "gn": "Zarnigar", "gnt": "ZARNIGAR"},
       "dob": "2026-06-01", "v": [{"tg": "398102009", "vp": "J07BF04", "mp": "NHR-EPI-OPV", "ma": "NHR-MAH-UNRECORDED",
                                   "dn": 4, "sd": 5, "dt": "2026-09-07", "co": "PK", "is": "NHR PK-PB",
                                   "ci": "URN:UVCI:01:PK:PB00000000000000000000000000000000#J"}]}


def _make(signer, *, iat=NOW, exp=NOW + timedelta(days=365), dcc=DCC) -> str:
    return hcert.encode(hcert.claims(dcc, issuer="PK", issued_at=iat, expires_at=exp), signer.key, signer.kid)


def _trusted(signer) -> TrustList:
    tl = TrustList()
    tl.add(signer.certificate)
    return tl


def _code(text, trust, now=NOW, is_revoked=None):
    try:
        hcert.verify(text, trust, now=now, is_revoked=is_revoked)
        return None
    except hcert.HcertError as exc:
        return exc.code


def test_round_trip(issuer):
    text = _make(issuer)
    assert text.startswith("HC1:")
    v = hcert.verify(text, _trusted(issuer), now=NOW)
    assert v.decoded.dcc == DCC and v.decoded.kid == issuer.kid == kid_of(issuer.certificate)
    assert v.decoded.issuer == "PK" and v.decoded.uvcis == [DCC["v"][0]["ci"]]


def test_failures_have_their_code(issuer, tmp_path):
    text, trust = _make(issuer), _trusted(issuer)
    other = IssuerKeys(FileKeyring(tmp_path, create_missing=True)).signer("PK-SD")
    assert _code("HC2:" + text[4:], trust) == "bad_prefix"
    assert _code("HC1:" + "a" * 10, trust) == "base45"
    assert _code("HC1:" + base45.encode(b"not zlib"), trust) == "zlib"
    assert _code("HC1:" + base45.encode(zlib.compress(b"\xff\xff")), trust) == "cbor"
    assert _code("HC1:" + base45.encode(zlib.compress(cbor2.dumps([1, 2]))), trust) == "cose_structure"
    assert _code(text, _trusted(other)) == "unknown_kid"
    assert _code(text, trust, now=NOW + timedelta(days=366)) == "expired"
    assert _code(text, trust, now=NOW - timedelta(days=1)) == "not_yet_valid"
    assert _code(text, trust, is_revoked=lambda u: u == DCC["v"][0]["ci"]) == "revoked"
    # issued (iat) outside the signer certificate's validity
    late = _make(issuer, iat=NOW + timedelta(days=3 * 365), exp=NOW + timedelta(days=4 * 365))
    assert _code(late, trust, now=NOW + timedelta(days=3 * 365)) == "signer_not_valid"
    revoked = _trusted(issuer)
    revoked.revoked.add(__import__("hashlib").sha256(DCC["v"][0]["ci"].encode()).hexdigest())
    assert _code(text, revoked) == "revoked"
    # a certificate signed by another key but claiming our kid
    forged = hcert.encode(hcert.claims(DCC, issuer="PK", issued_at=NOW, expires_at=NOW + timedelta(days=1)), other.key, issuer.kid)
    assert _code(forged, trust) == "signature_mismatch"


def test_our_qr_codes_read_back(valid_text):
    from registry.certificates import card

    assert _read_qr(card.qr_png(valid_text)) == valid_text


def test_one_changed_byte_in_the_signed_bytes_fails(issuer):
    signed = hcert.inflate(hcert.b45decode(hcert.unprefix(_make(issuer))))
    trust = _trusted(issuer)
    for i in range(len(signed)):
        mutated = bytearray(signed)
        mutated[i] ^= 0x01
        code = _code("HC1:" + base45.encode(zlib.compress(bytes(mutated))), trust)
        assert code in hcert.ERROR_CODES, i


def test_one_changed_character_in_the_text_fails(issuer):
    text, trust = _make(issuer), _trusted(issuer)
    for i in range(4, len(text), 7):
        alt = base45.ALPHABET[(base45.ALPHABET.index(text[i]) + 1) % 45]
        assert _code(text[:i] + alt + text[i + 1:], trust) in hcert.ERROR_CODES, i


def test_payload_change_is_a_signature_mismatch(issuer):
    msg = cose.parse(hcert.inflate(hcert.b45decode(hcert.unprefix(_make(issuer)))))
    tampered = cbor2.dumps(cbor2.CBORTag(18, [msg.protected_raw, {}, msg.payload.replace(b"2026-06-01", b"2016-06-01"), msg.signature]))
    assert _code("HC1:" + base45.encode(zlib.compress(tampered)), _trusted(issuer)) == "signature_mismatch"


def test_zlib_bomb_is_refused(issuer):
    bomb = "HC1:" + base45.encode(zlib.compress(b"\0" * 4_000_000, 9))
    assert len(bomb) <= hcert.MAX_TEXT and _code(bomb, _trusted(issuer)) == "zlib"
    assert _code("HC1:" + "0" * hcert.MAX_TEXT, _trusted(issuer)) == "too_long"


def test_trust_list_round_trips_through_json(issuer):
    tl = _trusted(issuer)
    tl.revoked.add("ab" * 32)
    back = TrustList.from_json(tl.to_json())
    assert set(back.signers) == {issuer.kid} and back.revoked == tl.revoked
    doc = json.loads(tl.to_json())
    doc["signers"][0]["kid"] = base64.b64encode(b"12345678").decode()
    with pytest.raises(ValueError):
        TrustList.from_json(json.dumps(doc))


def test_base45_rfc9285_examples():
    assert base45.encode(b"AB") == "BB8"
    assert base45.encode(b"Hello!!") == "%69 VD92EX0"
    assert base45.encode(b"base-45") == "UJCLQE7W581"
    assert base45.decode("QED8WEX0") == b"ietf!"
    for bad in ("GGW", "A", "abc", "ZZZZ"):
        with pytest.raises(ValueError):
            base45.decode(bad)


def test_icao_transliteration_and_uvci():
    assert icao_transliterate("Musterfrau-Gößinger") == "MUSTERFRAU<GOESSINGER"
    assert icao_transliterate("Zarnigar  O'Brien") == "ZARNIGAR<OBRIEN"
    assert icao_transliterate("Ayşe Çelik") == "AYSE<CELIK"
    u = new_uvci("PK", "PK-PB")
    assert u.startswith("URN:UVCI:01:PK:PB") and uvci_is_well_formed(u)
    assert not uvci_is_well_formed(u[:-1] + ("A" if u[-1] != "A" else "B"))
    assert luhn_mod_n("URN:UVCI:01:AT:10807843F94AEE0EE5093FBC254BD813") == "B"


# --- fuzzing ---------------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


def _never_crashes(text, trust) -> None:
    try:
        hcert.verify(text, trust, now=NOW)
    except hcert.HcertError as exc:
        assert exc.code in hcert.ERROR_CODES


@FUZZ
@given(st.text(max_size=300))
def test_fuzz_random_text(text):
    _never_crashes(text, TrustList())
    _never_crashes("HC1:" + text, TrustList())


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_bytes_through_each_layer(data):
    _never_crashes("HC1:" + base45.encode(data), TrustList())
    _never_crashes("HC1:" + base45.encode(zlib.compress(data)), TrustList())


CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.integers() | st.text(max_size=4), inner, max_size=5)
    | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 18, 24, 61, 258, 1000]), inner),
    max_leaves=20)


@FUZZ
@given(CBOR_VALUES)
def test_fuzz_structured_cbor(value):
    try:
        raw = cbor2.dumps(value)
    except Exception:
        return
    _never_crashes("HC1:" + base45.encode(zlib.compress(raw)), TrustList())
    wrapped = cbor2.dumps(cbor2.CBORTag(18, [b"", {}, raw, b"x" * 64]))
    _never_crashes("HC1:" + base45.encode(zlib.compress(wrapped)), TrustList())


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_valid_certificates(issuer, valid_text, data):
    text = valid_text
    signed = bytearray(hcert.inflate(hcert.b45decode(hcert.unprefix(text))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(signed) - 1))
        signed[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(signed)))
    mutated = "HC1:" + base45.encode(zlib.compress(bytes(signed[:cut] if data.draw(st.booleans()) else signed)))
    trust = _trusted(issuer)
    _never_crashes(mutated, trust)
    i = data.draw(st.integers(0, len(text) - 1))
    _never_crashes(text[:i] + data.draw(st.characters()) + text[i + 1:], trust)
