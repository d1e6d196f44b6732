"""Access tokens: short-lived JWTs (RFC 9068 profile, RFC 8725 practices).

Invariants:
- The algorithm is pinned (HS256 with a 256-bit key from the keyring); `alg` in the header is
  never trusted, `none` is never accepted.
- `iss`, `aud`, `exp`, `iat`, `sub`, `jti` are required; the header `typ` must be `at+jwt`.
- Tokens carry the principal's role and scope so that no request needs a user lookup. Revocation
  is not this module's: a staff token also carries its account's token generation (`tgen`),
  which the API checks against a short per-process cache (registry/users/revocation.py).
- `VerifiedTokens` remembers tokens it has verified, so a device's requests do not pay the
  signature and claims checks again (about 60 us each, a tenth of an audited read). A remembered
  token is accepted exactly while `verify` would accept it: the signature, header, issuer and
  audience of a given string never change, `nbf`/`iat` were already past when it was verified,
  and `exp` is checked again on every use.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
LEEWAY_SECONDS = 5
TOKEN_TYPE = "at+jwt"
REQUIRED = ["iss", "aud", "exp", "iat", "sub", "jti"]


class InvalidToken(Exception):
    """The token is missing, malformed, expired, or not ours. The reason is for logs, not users."""


@dataclass(frozen=True, slots=True)
class TokenConfig:
    key: bytes
    issuer: str
    audience: str
    ttl_seconds: int


def issue(config: TokenConfig, subject: str, claims: dict, *, now: float | None = None) -> tuple[str, int]:
    issued = int(now if now is not None else time.time())
    payload = {
        **claims,
        "iss": config.issuer, "aud": config.audience, "sub": subject,
        "iat": issued, "nbf": issued, "exp": issued + config.ttl_seconds, "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(payload, config.key, algorithm=ALGORITHM, headers={"typ": TOKEN_TYPE})
    return token, config.ttl_seconds


def verify(config: TokenConfig, token: str) -> dict:
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != TOKEN_TYPE or header.get("alg") != ALGORITHM:
            raise InvalidToken("unexpected token type or algorithm")
        return jwt.decode(
            token, config.key, algorithms=[ALGORITHM], audience=config.audience, issuer=config.issuer,
            options={"require": REQUIRED}, leeway=LEEWAY_SECONDS,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(type(exc).__name__) from None


class VerifiedTokens:
    """A bounded memo of verified access tokens (per process; nothing to share: a miss verifies)."""

    def __init__(self, config: TokenConfig, max_size: int = 10_000) -> None:
        self.config = config
        self.max_size = max_size
        self._claims: dict[str, dict] = {}

    def verify(self, token: str, *, now: float | None = None) -> dict:
        now = time.time() if now is None else now
        claims = self._claims.get(token)
        if claims is not None:
            if now < claims["exp"] + LEEWAY_SECONDS:
                return claims
            self._claims.pop(token, None)
            raise InvalidToken("ExpiredSignatureError")
        claims = verify(self.config, token)
        if len(self._claims) >= self.max_size:
            self._claims.clear()  # bounded: a burst of distinct tokens only costs re-verification
        self._claims[token] = claims
        return claims
