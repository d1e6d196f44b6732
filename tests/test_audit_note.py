"""C2SP signed notes, checkpoints and cosignatures (security/audit/note.py) against published vectors.

The vectors are golang.org/x/mod/sumdb/note's own example (package documentation and note_test.go):
the PeterNeumann signer and verifier keys and the signed note they produce; Ed25519 signatures are
deterministic, so our signature must equal theirs byte for byte."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from security.audit import note
from security.audit.checkpoint import Signer, origin_for, signed_note, verifier

SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
SIGNED = TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"


def test_known_answer_signer_and_verifier_keys():
    skey = note.parse_signer_key(SKEY)
    assert skey.verifier.vkey() == VKEY
    assert skey.encode() == SKEY
    assert note.parse_vkey(VKEY).key_id == "c74f20a3"


def test_known_answer_signed_note():
    skey = note.parse_signer_key(SKEY)
    assert note.format_note(TEXT, [note.sign(TEXT, skey)]) == SIGNED
    text, good = note.open_note(SIGNED, [note.parse_vkey(VKEY)])
    assert text == TEXT and len(good) == 1


def test_tampered_note_or_wrong_key_is_refused():
    with pytest.raises(note.NoteError):
        note.open_note(SIGNED.replace("cryptography", "cryptographY"), [note.parse_vkey(VKEY)])
    other = note.generate("PeterNeumann", note.ED25519).verifier
    with pytest.raises(note.NoteError):
        note.open_note(SIGNED, [other])


@pytest.mark.parametrize("bad", ["PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong hash
                                 "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
                                 "PeterNeumann+c74f20a3+AhpcAQ==", "PeterNeumann+c74f20a3"])
def test_malformed_verifier_keys_are_refused(bad):
    with pytest.raises(note.NoteError):
        note.parse_vkey(bad)


def test_cosignature_v1_format_and_verification():
    """tlog-cosignature: key hash over type 0x04, 8-byte big-endian timestamp, Ed25519 over
    'cosignature/v1\\ntime <t>\\n' || checkpoint text; 76 bytes after base64."""
    w = note.generate("witness.example/pb", note.COSIGNATURE_V1)
    text = "example.com/log\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    sig = note.sign(text, w, timestamp=1_679_315_147)
    raw = base64.b64decode(sig.line().split(" ")[2])
    assert len(raw) == 76 and raw[4:12] == (1_679_315_147).to_bytes(8, "big")
    msg = b"cosignature/v1\ntime 1679315147\n" + text.encode()
    w.verifier.public_key.verify(raw[12:], msg)  # raises if the message were anything else
    assert note.signature_verifies(text, sig, w.verifier) == 1_679_315_147
    assert note.signature_verifies(text.replace("20852163", "20852164"), sig, w.verifier) is None
    # the same key as a plain note signer is a different key hash: a cosignature is not a note signature
    plain = note.Verifier(w.name, note.ED25519, w.verifier.public_key)
    assert plain.hash != w.verifier.hash and note.signature_verifies(text, sig, plain) is None
    assert w.verifier.vkey().startswith("witness.example/pb+") and note.parse_vkey(w.verifier.vkey()).sig_type == 4


def test_registry_checkpoint_is_a_c2sp_signed_note():
    """The checkpoint the registry signs opens as a C2SP note under its vkey and parses as a
    tlog-checkpoint (origin, size, base64 root, one extension line with the signing time)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    origin = origin_for("PK")
    signer = Signer(Ed25519PrivateKey.generate(), origin)
    cp = signer.sign(7, bytes(range(32)), datetime(2026, 12, 3, 6, 0, tzinfo=UTC))
    text, good = note.open_note(signed_note(origin, cp), [verifier(origin, signer.public_key)])
    parsed = note.parse_checkpoint(text)
    assert (parsed.origin, parsed.tree_size, parsed.root_hash) == (origin, 7, bytes(range(32)))
    assert parsed.extensions == ("time 2026-12-03T06:00:00.000000Z",)
    assert verifier(origin, signer.public_key).key_id == cp.key_id


@pytest.mark.parametrize("text", ["o\n01\n" + base64.b64encode(bytes(32)).decode() + "\n",
                                  "o\n1\n" + base64.b64encode(bytes(31)).decode() + "\n", "o\n1\n", "\n1\nAA==\n"])
def test_malformed_checkpoints_are_refused(text):
    with pytest.raises(note.NoteError):
        note.parse_checkpoint(text)
