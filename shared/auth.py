"""HS256 JWT bearer tokens and the role table of SPEC 7.4.

| role       | may                                                                          |
|------------|------------------------------------------------------------------------------|
| `admin`    | everything                                                                   |
| `finance`  | confirm payments, import offline orders, record agreements, read every org  |
| `platform` | POST /v1/usage for any org; read any org's AI allowance and features         |
| `org`      | (`sub` = org id) place and cancel its own orders, read its own account,     |
|            | accept its own services                                                      |

Every route names its rule with one of the dependencies at the end of this module. A role the route
does not admit gets 403; an `org` token naming another organisation's account, order or service
gets the same 404 as a missing one, so ids cannot be probed (docs/decisions/trust.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal, get_args

import jwt
from fastapi import Depends, Path, Request

from contracts.events import ORG_ID_PATTERN
from contracts.http import ErrorCode
from shared.config import DEV_AUTH_SECRET, Settings
from shared.errors import ApiError

Role = Literal["admin", "finance", "platform", "org"]
ROLES: tuple[str, ...] = get_args(Role)
ALGORITHM = "HS256"
MIN_SECRET_BYTES = 32
_ORG = re.compile(ORG_ID_PATTERN)


class InsecureSecret(RuntimeError):
    """The service refuses to start with this secret (SPEC 7.4)."""


def check_secrets(settings: Settings) -> None:
    """Refuse a short or the development auth secret (and a short webhook secret) outside development."""
    if settings.is_development:
        return
    secret = settings.auth_secret.encode()
    if settings.auth_secret == DEV_AUTH_SECRET:
        raise InsecureSecret(
            "AIMIS_AUTH_SECRET is the development default; set a random secret of at least "
            f"{MIN_SECRET_BYTES} bytes (or AIMIS_ENV=development on a developer machine)"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise InsecureSecret(
            f"AIMIS_AUTH_SECRET has {len(secret)} bytes; at least {MIN_SECRET_BYTES} are required "
            "(or AIMIS_ENV=development on a developer machine)"
        )
    hook = settings.payment_webhook_secret
    if hook and len(hook.encode()) < MIN_SECRET_BYTES:
        raise InsecureSecret(f"AIMIS_PAYMENT_WEBHOOK_SECRET must have at least {MIN_SECRET_BYTES} bytes")


def mint(secret: str, role: Role, org_id: str | None = None, ttl: timedelta = timedelta(hours=12)) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    if role == "org" and not org_id:
        raise ValueError("an org token needs an org_id")
    now = datetime.now(timezone.utc)
    claims: dict[str, object] = {"role": role, "iat": now, "exp": now + ttl}
    if org_id:
        claims["sub"] = org_id
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def not_found(message: str) -> ApiError:
    """The one answer for 'missing' and 'not yours'."""
    return ApiError(ErrorCode.NOT_FOUND, message)


def no_org(org_id: str) -> ApiError:
    return not_found(f"no organisation {org_id!r}")


@dataclass(frozen=True)
class Principal:
    role: Role
    org_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def owns(self, org_id: str) -> bool:
        """An org token of exactly this organisation."""
        return self.role == "org" and self.org_id == org_id

    def require_role(self, *roles: Role) -> None:
        if self.role not in roles:
            raise ApiError(ErrorCode.FORBIDDEN,
                           f"role {self.role!r} may not use this endpoint (needs {' or '.join(roles)})")

    def require_org(self, org_id: str) -> None:
        """Acting on `org_id` named in a request body: admin, or the org's own token (else 403: it
        says nothing about whether that org exists)."""
        if not self.is_admin and not self.owns(org_id):
            raise ApiError(ErrorCode.FORBIDDEN, f"this token may not act on org {org_id!r}")

    def require_admin(self) -> None:
        self.require_role("admin")

    def may_see(self, org_id: str, *any_org_roles: Role) -> bool:
        """Whether a resource of `org_id` exists for this caller: roles in `any_org_roles` see every
        org, an org token only its own."""
        return self.role in any_org_roles or self.owns(org_id)


def decode(secret: str, token: str, max_ttl_s: int = 86_400) -> Principal:
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["role", "exp", "iat"]})
    except jwt.PyJWTError as e:
        raise ApiError(ErrorCode.UNAUTHORIZED, f"bad token: {e}") from None
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)) or exp - iat > max_ttl_s:
        raise ApiError(ErrorCode.UNAUTHORIZED,
                       f"bad token: its lifetime (exp - iat) exceeds {max_ttl_s} s")
    role, sub = claims.get("role"), claims.get("sub")
    if role in ("admin", "finance", "platform"):
        return Principal(role, None)
    if role == "org" and isinstance(sub, str) and _ORG.match(sub):
        return Principal("org", sub)
    raise ApiError(ErrorCode.UNAUTHORIZED, "token has no valid role/sub")


def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller, from `Authorization: Bearer <jwt>`."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(ErrorCode.UNAUTHORIZED, "missing bearer token")
    s: Settings = request.app.state.settings
    return decode(s.auth_secret, token.strip(), s.token_max_ttl_s)


Caller = Annotated[Principal, Depends(principal)]


def _roles(*roles: Role):  # type: ignore[no-untyped-def]
    def dep(p: Caller) -> Principal:
        p.require_role(*roles)
        return p
    dep.answers = _answers(roles, org_scoped=False)  # type: ignore[attr-defined]  # read by shared.errors.document
    return Annotated[Principal, Depends(dep)]


def _answers(act: tuple[str, ...], org_scoped: bool) -> frozenset[int]:
    """What a rule answers besides success: 401 (no or bad token); 403 when a role may not call it;
    404 for an org token naming another organisation."""
    return frozenset({401} | ({403} if set(ROLES) - set(act) else set()) | ({404} if org_scoped else set()))


def _org_scoped(act: tuple[Role, ...], any_org: tuple[Role, ...]):  # type: ignore[no-untyped-def]
    """Routes under /v1/orgs/{org_id}: roles in `act` (plus `org`) may call it; `any_org` roles for
    every org, an org token for its own only (another org: 404, as if it did not exist)."""

    def dep(p: Caller, org_id: Annotated[str, Path(pattern=ORG_ID_PATTERN)]) -> Principal:
        p.require_role(*act, "org")
        if not p.may_see(org_id, *any_org):
            raise no_org(org_id)
        return p
    dep.answers = _answers((*act, "org"), org_scoped=True)  # type: ignore[attr-defined]
    return Annotated[Principal, Depends(dep)]


# -- the rules, one per kind of route --------------------------------------------------------------
Admin = _roles("admin")  # admin-only endpoints; any other role: 403
Finance = _roles("admin", "finance")  # confirm a payment, import an order, record an agreement
UsageSender = _roles("admin", "platform")  # POST /v1/usage for any org
OrderActor = _roles("admin", "org")  # place / cancel (own orders: checked against the order's org)
OrderReader = _roles("admin", "finance", "org")  # one order by id (own only for org)
AccountReader = _org_scoped(("admin", "finance"), ("admin", "finance"))  # an org's account
EntitlementReader = _org_scoped(("admin", "finance", "platform"), ("admin", "finance", "platform"))
OrgActor = _org_scoped(("admin",), ("admin",))  # act on the org's own account (accept a service)
