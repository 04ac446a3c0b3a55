"""HS256 JWT bearer tokens (SPEC 5.3): role admin, or role org with sub = org_id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

import jwt
from fastapi import Depends, Request

from contracts.http import ErrorCode
from shared.errors import ApiError

Role = Literal["admin", "org"]


def mint(secret: str, role: Role, org_id: str | None = None, ttl: timedelta = timedelta(hours=12)) -> str:
    if role == "org" and not org_id:
        raise ValueError("an org token needs an org_id")
    now = datetime.now(timezone.utc)
    claims: dict[str, object] = {"role": role, "iat": now, "exp": now + ttl}
    if org_id:
        claims["sub"] = org_id
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True)
class Principal:
    role: Role
    org_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require_org(self, org_id: str) -> None:
        """403 unless admin or the token's own org."""
        if not self.is_admin and self.org_id != org_id:
            raise ApiError(ErrorCode.FORBIDDEN, f"this token may not act on org {org_id!r}")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError(ErrorCode.FORBIDDEN, "this endpoint needs role admin")


def decode(secret: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["role"]})
    except jwt.PyJWTError as e:
        raise ApiError(ErrorCode.UNAUTHORIZED, f"bad token: {e}") from None
    role = claims.get("role")
    if role == "admin":
        return Principal("admin", claims.get("sub"))
    if role == "org" and isinstance(claims.get("sub"), str) and claims["sub"]:
        return Principal("org", claims["sub"])
    raise ApiError(ErrorCode.UNAUTHORIZED, "token has no valid role/sub")


def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, from `Authorization: Bearer <jwt>`."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(ErrorCode.UNAUTHORIZED, "missing bearer token")
    return decode(request.app.state.settings.auth_secret, token.strip())


def admin(p: Annotated[Principal, Depends(principal)]) -> Principal:
    p.require_admin()
    return p


Caller = Annotated[Principal, Depends(principal)]
Admin = Annotated[Principal, Depends(admin)]
