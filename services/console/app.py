"""The console's composition root: settings, the upstream client, sessions, routes and error pages."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import RequestResponseEndpoint
from starlette.responses import JSONResponse, RedirectResponse, Response

from services.console import buy, ops, pages
from services.console.sessions import (
    COOKIE,
    LOGIN_CSRF_COOKIE,
    SessionStore,
    TokenRejected,
    claims_of,
    csrf_ok,
)
from services.console.settings import SERVICES, ConsoleSettings
from services.console.upstream import Upstream, UpstreamError
from services.console.web import LANG_COOKIE, Ctx, LoginRequired, PageError, ctx, language, safe_next

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
PROBE_ORDER = "console-sign-in-probe"


def create_app(settings: ConsoleSettings | None = None, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    s = settings or ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.upstream.close()

    app = FastAPI(title="AIMIS Billing console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = s
    app.state.upstream = Upstream(s.urls, s.console_upstream_timeout_s, transport)
    app.state.sessions = SessionStore(s.console_session_max_s)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")

    def cookie(resp: Response, name: str, value: str, max_age: int | None = None) -> None:
        resp.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=s.console_secure_cookie)

    @app.middleware("http")
    async def headers(request: Request, call_next: RequestResponseEndpoint) -> Response:
        resp: Response = await call_next(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/static"):
            resp.headers.setdefault("Cache-Control", "no-store")
        lang = request.query_params.get("lang")
        if lang and lang == language(request) and request.cookies.get(LANG_COOKIE) != lang:
            cookie(resp, LANG_COOKIE, lang, max_age=365 * 86400)
        return resp

    # ------------------------------------------------------------ errors

    def to_login(request: Request, next_path: str | None, reason: str | None) -> RedirectResponse:
        q = {k: v for k, v in (("next", safe_next(next_path)), ("reason", reason)) if v}
        return RedirectResponse("/login" + ("?" + urlencode(q) if q else ""), status_code=303)

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        return to_login(request, exc.next_path if request.method == "GET" else None, exc.reason)

    @app.exception_handler(PageError)
    async def _page(request: Request, exc: PageError) -> Response:
        c = ctx(request, login=False)
        return c.render("error.html", exc.status, message=c.t(exc.key, **exc.params), code=exc.status)

    @app.exception_handler(UpstreamError)
    async def _upstream(request: Request, exc: UpstreamError) -> Response:
        if exc.status == 401:  # the token was refused: the session is over
            app.state.sessions.close(request.cookies.get(COOKIE))
            resp = to_login(request, request.url.path if request.method == "GET" else None, "expired")
            resp.delete_cookie(COOKIE, path="/")
            return resp
        c = ctx(request, login=False)
        status, key = {404: (404, "error.not_found"), 403: (403, "error.forbidden")}.get(
            exc.status, (503 if exc.status == 503 else 502, "error.unavailable"))
        return c.render("error.html", status, message=c.t(key, service=exc.service), code=status,
                        detail=f"{exc.service}: {exc.code}" if status >= 500 else None)

    # ------------------------------------------------------------ sign-in

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        c = ctx(request)
        assert c.session
        if c.session.is_operator:
            return RedirectResponse("/ops", status_code=303)
        return RedirectResponse(f"/orgs/{c.session.org_id}", status_code=303)

    def login_page(c: Ctx, status: int = 200, error: str | None = None) -> Response:
        token = c.request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
        reason = c.request.query_params.get("reason")
        notice = {"expired": "login.session_ended", "signed_out": "login.signed_out"}.get(reason or "")
        resp = c.render("login.html", status, login_csrf=token, error=error,
                        notice=c.t(notice) if notice else None,
                        next=safe_next(c.request.query_params.get("next")) or "")
        cookie(resp, LOGIN_CSRF_COOKIE, token, max_age=3600)
        return resp

    @app.get("/login", include_in_schema=False)
    async def login_form(request: Request) -> Response:
        return login_page(ctx(request, login=False))

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        c = ctx(request, login=False)
        form = await request.form()
        if not csrf_ok(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf")):
            raise PageError(403, "error.csrf")
        token = str(form.get("token") or "").strip()
        try:
            claims = claims_of(token)
        except TokenRejected as e:
            return login_page(c, 400, c.t(e.key))
        # The services decide whether the token is genuine: an unknown order answers 404 to a valid
        # token of any role and 401 to a forged or expired one.
        try:
            await app.state.upstream.call("order", "GET", f"/v1/orders/{PROBE_ORDER}", token)
        except UpstreamError as e:
            if e.status == 401:
                return login_page(c, 400, c.t("login.refused"))
            if e.status not in (403, 404):
                return login_page(c, 503, c.t("error.unavailable", service=e.service))
        app.state.sessions.close(request.cookies.get(COOKIE))  # a new sign-in replaces any session
        sid, session = app.state.sessions.open(token, claims)
        target = safe_next(str(form.get("next") or "")) or "/"
        resp = RedirectResponse(target, status_code=303)
        cookie(resp, COOKIE, sid)
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        c = ctx(request, login=False)
        if c.session is not None:
            await c.form()  # 403 without the session's CSRF token
        app.state.sessions.close(request.cookies.get(COOKIE))
        resp = RedirectResponse("/login?reason=signed_out", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # ------------------------------------------------------------ health

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Ready when every service it calls answers /healthz."""
        async def up(name: str) -> bool:
            try:
                r = await app.state.upstream.raw(name, "GET", "/healthz", None)
                return r.status_code == 200
            except UpstreamError:
                return False
        states = dict(zip(SERVICES, await asyncio.gather(*(up(n) for n in SERVICES)), strict=True))
        return JSONResponse({"status": "ready" if all(states.values()) else "not ready", "services": states},
                            status_code=200 if all(states.values()) else 503)

    app.include_router(pages.router)
    app.include_router(buy.router)
    app.include_router(ops.router)
    return app
