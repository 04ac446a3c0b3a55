"""`/docs` (Swagger UI) served from assets installed with the project.

FastAPI's default pages load Swagger UI and ReDoc from a public CDN, which a closed hospital network
cannot reach: the page stays blank. The PyPI package `fastapi-offline` (pinned in pyproject.toml)
ships the Swagger UI bundle; it is served here under /docs-assets, and the page points at it only.
There is no /redoc: ReDoc's bundle loads its logo from its vendor's CDN whatever its options.
See docs/decisions/clients.md.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from contracts import examples

ASSETS_URL = "/docs-assets"
# Swagger UI's online validator badge would call out to its public service: switched off.
SWAGGER_PARAMETERS = {"validatorUrl": None, "displayRequestDuration": True}


def assets_dir() -> Path:
    """The folder of swagger-ui-bundle.js, swagger-ui.css and favicon.png."""
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Add /docs and /docs/oauth2-redirect to an app built with docs_url=None and redoc_url=None."""
    if app.docs_url or app.redoc_url:
        raise ValueError("build the app with docs_url=None and redoc_url=None: these pages replace them")
    openapi_url = app.openapi_url or "/openapi.json"
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - API",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def with_examples(app: FastAPI) -> None:
    """/openapi.json carries the examples of contracts/examples.py in its component schemas."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = examples.add_to_openapi(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
