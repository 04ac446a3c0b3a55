"""What every page shares: the language, the session, CSRF, rendering, and the errors that end a request."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from services.console import i18n
from services.console.sessions import COOKIE, Session, csrf_ok
from services.console.upstream import Upstream, UpstreamError

ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LANG_COOKIE = "aimis_lang"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class LoginRequired(Exception):
    """No session (or it ended): back to /login, remembering where the user was going."""

    def __init__(self, next_path: str = "/", reason: str | None = None):
        self.next_path, self.reason = next_path, reason


class PageError(Exception):
    """End the request with an error page: status and a message key."""

    def __init__(self, status: int, key: str, **params: Any):
        self.status, self.key, self.params = status, key, params


@dataclass
class Ctx:
    request: Request
    lang: str
    session: Session | None

    def t(self, key: str, **params: Any) -> str:
        return i18n.t(self.lang, key, **params)

    def error(self, e: UpstreamError, lines: list[dict[str, Any]] | None = None) -> str:
        """A service's error as a sentence in this language (the service's own message if the code is new)."""
        text = i18n.error_sentence(self.lang, e.code, e.message)
        if e.line is not None and lines and len(lines) > 1 and 0 <= e.line < len(lines):
            ln = lines[e.line]
            what = ln.get("feature") or ln.get("sku")
            text = self.t("buy.line_prefix", n=e.line + 1, what=what) + " " + text
        return text

    @property
    def upstream(self) -> Upstream:
        return self.request.app.state.upstream

    @property
    def token(self) -> str:
        assert self.session is not None
        return self.session.token

    async def form(self) -> dict[str, str]:
        """The posted form (first value of each field); 403 unless it carries this session's CSRF token."""
        form = await self.request.form()
        if self.session is None or not csrf_ok(self.session.csrf, form.get("csrf")):
            raise PageError(403, "error.csrf")
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.update(
            t=self.t, lang=self.lang, session=self.session, request=self.request,
            csrf=self.session.csrf if self.session else "", path=self.request.url.path,
            other_lang="en" if self.lang == "zh-CN" else "zh-CN",
        )
        return templates.TemplateResponse(self.request, template, context, status_code=status)


def language(request: Request) -> str:
    q = request.query_params.get("lang")
    if q in i18n.LANGUAGES:
        return q
    c = request.cookies.get(LANG_COOKIE)
    if c in i18n.LANGUAGES:
        return c
    return i18n.from_accept_language(request.headers.get("accept-language", ""))


def ctx(request: Request, *, login: bool = True) -> Ctx:
    session = request.app.state.sessions.get(request.cookies.get(COOKIE))
    if login and session is None:
        raise LoginRequired(request.url.path)
    return Ctx(request, language(request), session)


def org_ctx(request: Request, org: str) -> Ctx:
    """An org page: the org's own token or an operator; another org's pages do not exist (404)."""
    c = ctx(request)
    if not ORG_RE.match(org) or not c.session or not c.session.may_see(org):
        raise PageError(404, "error.not_found")
    return c


def operator_ctx(request: Request) -> Ctx:
    c = ctx(request)
    if not c.session or not c.session.is_operator:
        raise PageError(403, "error.operator_only")
    return c


def org_path(org: str, *rest: str) -> str:
    return "/orgs/" + quote(org, safe="") + "".join("/" + quote(r, safe="") for r in rest)


def safe_next(value: str | None) -> str | None:
    """Only a path on this site (never `//host` or a scheme): no open redirect through /login."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value and len(value) < 512:
        return value
    return None
