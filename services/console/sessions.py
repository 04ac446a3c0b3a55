"""Server-side sessions: the cookie holds only a random id; the bearer token stays in this process.

The token is never written into a cookie or a page, so no script (nor anyone reading the cookie jar)
can read it. Sessions end at sign-out, at the token's `exp`, or after `console_session_max_s`.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

COOKIE = "aimis_session"
LOGIN_CSRF_COOKIE = "aimis_login_csrf"
ROLES = ("admin", "finance", "org")
OPERATOR_ROLES = ("admin", "finance")
MAX_SESSIONS = 10_000


class TokenRejected(Exception):
    """Why a token cannot open a session (an i18n message key)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


@dataclass
class Session:
    token: str
    role: str
    org_id: str | None
    expires_at: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def is_operator(self) -> bool:
        return self.role in OPERATOR_ROLES

    def may_see(self, org_id: str) -> bool:
        return self.is_operator or self.org_id == org_id


def claims_of(token: str) -> dict[str, Any]:
    """The token's claims, read without the secret (the services verify it; the console only
    needs the role and org to choose pages). Lenient on roles: admin, finance and org."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False, "verify_exp": True})
    except jwt.ExpiredSignatureError:
        raise TokenRejected("login.expired_token") from None
    except jwt.PyJWTError:
        raise TokenRejected("login.bad_token") from None
    role = claims.get("role")
    if role not in ROLES:
        raise TokenRejected("login.bad_role")
    sub = claims.get("sub")
    if role == "org" and not (isinstance(sub, str) and sub):
        raise TokenRejected("login.bad_token")
    return claims


def csrf_ok(expected: str | None, given: object) -> bool:
    if not expected or not isinstance(given, str):
        return False
    # bytes, not str: compare_digest raises TypeError on a str with non-ASCII characters (hostile form input)
    return hmac.compare_digest(expected.encode(), given.encode())


class SessionStore:
    def __init__(self, max_age_s: int):
        self.max_age_s = max_age_s
        self._by_id: dict[str, Session] = {}

    def open(self, token: str, claims: dict[str, Any]) -> tuple[str, Session]:
        now = time.time()
        self._purge(now)
        exp = claims.get("exp")
        until = now + self.max_age_s
        if isinstance(exp, (int, float)):
            until = min(until, float(exp))
        role = str(claims["role"])
        s = Session(token=token, role=role, org_id=claims.get("sub") if role == "org" else None, expires_at=until)
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = s
        return sid, s

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._by_id.get(sid)
        if s is not None and s.expires_at <= time.time():
            del self._by_id[sid]
            return None
        return s

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)

    def _purge(self, now: float) -> None:
        for sid in [k for k, s in self._by_id.items() if s.expires_at <= now]:
            del self._by_id[sid]
        while len(self._by_id) >= MAX_SESSIONS:  # the oldest first (dicts keep insertion order)
            del self._by_id[next(iter(self._by_id))]
