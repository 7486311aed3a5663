"""The `mreg ui` server: a Starlette app that answers GET only, with every page from `pages`.

Safe by construction: no route writes to the registry; any other method gets 405 before routing; every
response carries `Content-Security-Policy: default-src 'self'` (pages load only this server's CSS and
copy-button script), `nosniff` and no referrer. Registry calls are blocking and run in Starlette's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mreg.errors import InvalidInputError, MregError, NotFoundError
from mreg.ui import pages
from mreg.ui.listing import Query
from mreg.ui.pages import Page, Renderer

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from mreg.engine import Engine
    from mreg.registry import Registry

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
STATIC = Path(__file__).parent / "static"


def create_app(registry: Registry, *, engine: Callable[[], Engine] | None = None) -> Starlette:
    """The read-only UI over `registry`. `engine` opens the container engine for a verify (by default
    `open_engine("auto")`, only when a verify page is asked for)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, RedirectResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    renderer = Renderer()
    open_engine = engine or _default_engine

    def html(page: Page) -> Response:
        return HTMLResponse(renderer.render(page), status_code=page.status)

    def models(request: Request) -> Response:
        return html(pages.models_page(registry))

    def versions(request: Request) -> Response:
        """`?filter=...&order=...`, paged by `before=` (newest first) or `after=` (in the order)."""
        query = Query.from_params(request.query_params)
        return html(pages.versions_page(registry, request.path_params["name"], query))

    def older(request: Request) -> Response:
        """The static export's URL of a page of the plain listing, served too."""
        name, before = request.path_params["name"], request.path_params["before"]
        query = Query.from_params({"before": str(before)})
        return html(pages.versions_page(registry, name, query, here=f"/models/{name}/before/{before}/"))

    def version(request: Request) -> Response:
        return html(pages.version_page(registry, request.path_params["name"], request.path_params["version"]))

    def verify(request: Request) -> Response:
        params = request.path_params
        return html(pages.verify_page(registry, params["name"], params["version"], open_engine))

    def diff(request: Request) -> Response:
        params = request.path_params
        return html(pages.diff_page(registry, params["name"], params["old"], params["new"]))

    def compare(request: Request) -> Response:
        """The versions page's form: `?old=A&new=B`, answered by a redirect to that diff's own page."""
        name, old, new = request.path_params["name"], request.query_params.get("old"), request.query_params.get("new")
        if not (old and new and old.isdigit() and new.isdigit()):
            raise InvalidInputError(f"compare needs two version numbers, got {old!r} and {new!r}.")
        return RedirectResponse(f"/models/{name}/diff/{int(old)}/{int(new)}/", status_code=303)

    def alias(request: Request) -> Response:
        return html(pages.alias_page(registry, request.path_params["name"], request.path_params["alias"]))

    def failed(request: Request, exc: Exception) -> Response:
        status = 404 if isinstance(exc, NotFoundError) else 400 if isinstance(exc, InvalidInputError) else 500
        here = request.url.path if request.url.path.endswith("/") else request.url.path.rsplit("/", 1)[0] + "/"
        page = Page(here, "error.html.j2", "Not found" if status == 404 else "Error", {"message": str(exc)})
        return HTMLResponse(renderer.render(page), status_code=status)

    model = "/models/{name}"
    routes = [
        Route("/", models),
        Route(f"{model}/", versions),
        Route(f"{model}/before/{{before:int}}/", older),
        Route(f"{model}/versions/{{version:int}}/", version),
        Route(f"{model}/versions/{{version:int}}/verify/", verify),
        Route(f"{model}/diff", compare),
        Route(f"{model}/diff/{{old:int}}/{{new:int}}/", diff),
        Route(f"{model}/aliases/{{alias}}/", alias),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(ReadOnly)], exception_handlers={MregError: failed})


class ReadOnly:
    """ASGI middleware: 405 for every method but GET, and the security headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((key.encode(), value.encode()) for key, value in SECURITY_HEADERS.items()),
                ]
            await send(message)

        if scope["method"] != "GET":
            from starlette.responses import PlainTextResponse

            refused = PlainTextResponse("this registry browser is read-only: only GET is allowed.\n", 405)
            refused.headers["allow"] = "GET"
            await refused(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _default_engine() -> Engine:
    from mreg.engine import open_engine

    return open_engine("auto")
