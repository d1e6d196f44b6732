"""Access tokens (RFC 8725: pinned algorithm, aud/iss/exp/typ checked), passwords (argon2id at
OWASP parameters, NIST SP 800-63B policy) and login throttling (DESIGN section 4)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest

from conftest import PASSWORD, audit_events
from security import tokens
from security.passwords import PasswordHasher, PasswordRejected, check_policy
from security.tokens import InvalidToken, TokenConfig

CONFIG = TokenConfig(key=b"k" * 32, issuer="nhr", audience="nhr-api", ttl_seconds=900)
CLAIMS = {"name": "amina.clinic", "role": "clinic_worker"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _payload(**changes) -> dict:
    now = int(time.time())
    p = {**CLAIMS, "iss": "nhr", "aud": "nhr-api", "sub": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + 600,
         "jti": uuid.uuid4().hex}
    p.update(changes)
    return {k: v for k, v in p.items() if v is not None}


def craft(payload: dict, header: dict, key: bytes | None = CONFIG.key, digest=hashlib.sha256) -> str:
    """A JWS built by hand, so the header can say anything (pyjwt would refuse some of these)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest() if key else b""
    return f"{signing_input}.{_b64(signature)}"


GOOD_HEADER = {"alg": "HS256", "typ": "at+jwt"}


# -- tokens -------------------------------------------------------------------------------------

def test_token_round_trip():
    token, ttl = tokens.issue(CONFIG, "user-1", CLAIMS)
    claims = tokens.verify(CONFIG, token)
    assert claims["sub"] == "user-1" and claims["role"] == "clinic_worker" and ttl == 900
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"]
    assert jwt.get_unverified_header(token) == GOOD_HEADER
    assert tokens.verify(CONFIG, craft(_payload(), GOOD_HEADER))["name"] == "amina.clinic"  # the crafting is sound


REJECTED = {
    "alg-none": lambda: craft(_payload(), {"alg": "none", "typ": "at+jwt"}, key=None),
    "alg-None-capitalised": lambda: craft(_payload(), {"alg": "None", "typ": "at+jwt"}, key=None),
    "other-key": lambda: craft(_payload(), GOOD_HEADER, key=b"x" * 32),
    "wrong-aud": lambda: craft(_payload(aud="fhir-api"), GOOD_HEADER),
    "aud-list-without-ours": lambda: craft(_payload(aud=["other", "more"]), GOOD_HEADER),
    "wrong-iss": lambda: craft(_payload(iss="evil"), GOOD_HEADER),
    "expired": lambda: tokens.issue(CONFIG, "u", CLAIMS, now=time.time() - 2000)[0],
    "not-yet-valid": lambda: tokens.issue(CONFIG, "u", CLAIMS, now=time.time() + 600)[0],
    **{f"missing-{claim}": (lambda c=claim: craft(_payload(**{c: None}), GOOD_HEADER)) for claim in tokens.REQUIRED},
    "typ-JWT": lambda: craft(_payload(), {"alg": "HS256", "typ": "JWT"}),
    "typ-missing": lambda: craft(_payload(), {"alg": "HS256"}),
    "header-says-HS512-signed-HS256": lambda: craft(_payload(), {"alg": "HS512", "typ": "at+jwt"}),
    "genuine-HS512": lambda: craft(_payload(), {"alg": "HS512", "typ": "at+jwt"}, digest=hashlib.sha512),
    "signature-stripped": lambda: craft(_payload(), GOOD_HEADER).rsplit(".", 1)[0] + ".",
    "payload-edited": lambda: _edit_role(craft(_payload(), GOOD_HEADER)),
    "garbage": lambda: "not.a.token",
    "empty": lambda: "",
}


def _edit_role(token: str) -> str:
    h, _, s = token.split(".")
    return f"{h}.{_b64(json.dumps(_payload(role='admin')).encode())}.{s}"


@pytest.mark.parametrize("make", REJECTED.values(), ids=REJECTED.keys())
def test_token_rejected(make):
    with pytest.raises(InvalidToken):
        tokens.verify(CONFIG, make())


def test_remembered_token_still_expires():
    memo = tokens.VerifiedTokens(CONFIG)
    token, ttl = tokens.issue(CONFIG, "u", CLAIMS)
    claims = memo.verify(token)
    assert memo.verify(token, now=claims["exp"] - 1) is claims  # remembered
    with pytest.raises(InvalidToken):
        memo.verify(token, now=claims["exp"] + tokens.LEEWAY_SECONDS + 1)
    assert token not in memo._claims  # forgotten once refused


@pytest.mark.parametrize("make", REJECTED.values(), ids=REJECTED.keys())
def test_remembering_accepts_nothing_verify_refuses(make):
    """A bad token is refused by the memo too, also after a good token with the same claims was
    remembered, and a refused token is not remembered."""
    memo = tokens.VerifiedTokens(CONFIG)
    memo.verify(craft(_payload(), GOOD_HEADER))
    bad = make()
    for _ in range(2):
        with pytest.raises(InvalidToken):
            memo.verify(bad)


def test_remembered_tokens_are_bounded():
    memo = tokens.VerifiedTokens(CONFIG, max_size=3)
    issued = [tokens.issue(CONFIG, f"u{i}", CLAIMS)[0] for i in range(7)]
    for t in issued:
        memo.verify(t)
    assert len(memo._claims) <= 3
    assert all(memo.verify(t)["sub"] == f"u{i}" for i, t in enumerate(issued))


def test_bad_tokens_over_http_are_401(world, runtime):
    c = world.client
    me = c.get("/api/v1/me", headers=world.h("clinic_a"))
    assert me.status_code == 200
    real = tokens.verify(runtime.tokens, world.token("clinic_a"))
    claims = {k: real[k] for k in ("name", "role", "scope_level", "scope_code", "prov", "dist", "tgen")}
    key, cfg = runtime.tokens.key, runtime.tokens
    fresh = tokens.issue(cfg, real["sub"], claims)[0]
    assert c.get("/api/v1/me", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200, "control token refused"
    now = int(time.time())
    full = {**claims, "iss": cfg.issuer, "aud": cfg.audience, "sub": real["sub"], "iat": now, "nbf": now, "exp": now + 600,
            "jti": uuid.uuid4().hex, "role": "health_official", "scope_level": "national", "scope_code": "PK"}
    bad = {
        "expired": tokens.issue(cfg, real["sub"], claims, now=time.time() - cfg.ttl_seconds - 60)[0],
        "forged": craft(full, GOOD_HEADER, key=b"\x00" * 32),
        "alg-none": craft(full, {"alg": "none", "typ": "at+jwt"}, key=None),
        "wrong-aud": craft({**full, "aud": "other"}, GOOD_HEADER, key=key),
    }
    for why, token in bad.items():
        r = c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, why
        assert r.headers["content-type"].startswith("application/problem+json"), why
        assert r.json()["type"] == "urn:nhr:problem:unauthenticated", why
        assert r.headers.get("www-authenticate") == "Bearer", why
    r = c.get("/api/v1/me")
    assert r.status_code == 401 and r.json()["type"] == "urn:nhr:problem:unauthenticated"


# -- passwords ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def owasp() -> PasswordHasher:
    return PasswordHasher()  # the defaults: what production runs


def test_argon2id_at_owasp_parameters(owasp):
    h = owasp.hash("correct horse battery staple orbit")
    assert h.startswith("$argon2id$")
    assert "$m=19456,t=2,p=1$" in h
    assert owasp.verify("correct horse battery staple orbit", h)
    assert not owasp.verify("correct horse battery staple orbiT", h)
    assert not owasp.verify("correct horse battery staple orbit", "not a hash")
    assert owasp.hash("same input twice") != owasp.hash("same input twice"), "hashes are not salted"
    weak = PasswordHasher(memory_kib=1024, time_cost=1).hash("correct horse battery staple orbit")
    assert owasp.needs_rehash(weak) and not owasp.needs_rehash(h)
    assert owasp.verify("correct horse battery staple orbit", weak), "old hashes must still verify before an upgrade"


USER = "amina.clinic"


@pytest.mark.parametrize("password", [
    "Xk9#mQ2$vL7@pR",                   # 14 characters
    "passwordpassword",                # common (and made of the service's words)
    "PakistanZindabad",                # common, whatever the case
    "1q2w3e4r5t6y7u8i",                # keyboard walk from the list
    "my-name-is-Amina.Clinic-2026",    # contains the username
    "abababababababababab",            # repetitive
    "zzzzzzzzzzzzzzzzzzzzzzz",         # repetitive
    "registryregistry",                # the service name
    "x" * 60 + "yzw" * 30,             # over 128 characters
])
def test_policy_rejects(password):
    with pytest.raises(PasswordRejected) as exc:
        check_policy(password, username=USER, min_length=15)
    assert password not in str(exc.value), "the message echoes the password"


@pytest.mark.parametrize("password", [
    "Xk9#mQ2$vL7@pR!",                  # exactly 15
    "monsoon rain over the ravi river",
    "چائے کا کپ اور بارش کی شام",         # any script: length over composition
])
def test_policy_accepts_long_passphrases(password):
    check_policy(password, username=USER, min_length=15)


def test_common_list_is_enforced_for_every_listed_password_long_enough():
    from importlib import resources
    words = resources.files("security").joinpath("data/common-passwords.txt").read_text().split()
    long_enough = [w for w in words if len(w) >= 15]
    assert long_enough, "no listed password is long enough to reach the list check"
    for w in long_enough:
        with pytest.raises(PasswordRejected):
            check_policy(w, username=USER, min_length=15)


# -- login throttling -----------------------------------------------------------------------------

def test_login_is_throttled_per_account_and_every_attempt_audited(world, runtime):
    c, user = world.client, world.users["clinic_a"]
    limit = runtime.settings.login.max_failures_per_pair
    rids = []

    def attempt(password: str, username: str = user):
        rid = f"login-{uuid.uuid4().hex}"
        rids.append(rid)
        return c.post("/api/v1/auth/token", data={"username": username, "password": password}, headers={"X-Request-ID": rid})

    for i in range(limit):
        r = attempt(f"wrong password number {i}")
        assert r.status_code == 401, f"failure {i + 1} answered {r.status_code}"
        assert r.json()["type"] == "urn:nhr:problem:unauthenticated"
    r = attempt(PASSWORD)
    assert r.status_code == 429, "the correct password got through a throttled account"
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "urn:nhr:problem:too-many-attempts"
    assert int(r.headers["retry-after"]) == runtime.settings.login.window_seconds
    assert "access_token" not in r.text
    assert attempt("wrong again, still throttled").status_code == 429

    # throttling is per account: another account from the same client still logs in
    other = attempt(PASSWORD, world.users["clinic_b"])
    assert other.status_code == 200 and other.json()["access_token"]

    outcomes = []
    for rid in rids:
        events = audit_events(runtime, request_id=rid)
        assert [e.action for e in events] == ["auth.login"], "each login attempt writes exactly one auth.login event"
        outcomes.append(events[0].outcome)
    assert outcomes == ["unauthenticated"] * limit + ["denied", "denied", "success"]
    for rid in rids[:limit]:
        assert audit_events(runtime, request_id=rid)[0].resource_id is not None, "failed login does not name the account"
    for rid in rids:
        assert PASSWORD not in json.dumps(audit_events(runtime, request_id=rid)[0].detail)
