"""Access tokens: short-lived JWTs (RFC 9068 profile, RFC 8725 practices).

Invariants:
- The algorithm is pinned (HS256 with a 256-bit key from the keyring); `alg` in the header is
  never trusted, `none` is never accepted.
- `iss`, `aud`, `exp`, `iat`, `sub`, `jti` are required; the header `typ` must be `at+jwt`.
- Tokens carry the principal's role and scope so that no request needs a user lookup; the price
  is that a disabled user keeps access until the token expires (minutes, a setting).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
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
            options={"require": REQUIRED}, leeway=5,
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(type(exc).__name__) from None
