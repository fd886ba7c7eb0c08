"""The web dashboard on the local stack: the static page of ``makima/web`` served at ``/dashboard``.

The page holds no data: it calls the API (``GET /api/v1/contracts/dashboard``) and the WebSocket monitor
with the token the user gives it, so serving it needs no authentication. The same files deploy as they
are to any static host (S3 + CloudFront, …), pointed at the API with ``?api=`` and ``?ws=``.

Served at ``/dashboard`` (no trailing slash) the page's relative asset links would resolve against
``/``; a ``<base href="/dashboard/">`` is inserted into the HTML here, so the files themselves stay
relative and deployable anywhere.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

PREFIX = "/dashboard"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# The page may talk to an API on another origin (?api=, ?ws=), but loads nothing from anywhere else;
# no referrer, so a token still in the address bar (?token=) never leaks in a Referer header.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self' http: https: ws: wss:; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _assets() -> dict[str, tuple[bytes, str]]:
    """Every file of ``makima/web`` by name, read once: the page is a handful of small files."""
    root = resources.files("makima") / "web"
    out: dict[str, tuple[bytes, str]] = {}
    for entry in root.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _MEDIA_TYPES:
            out[entry.name] = (entry.read_bytes(), _MEDIA_TYPES[suffix])
    return out


def _with_base(html: bytes) -> str:
    text = html.decode("utf-8")
    return text.replace("<head>", f'<head>\n<base href="{PREFIX}/">', 1)


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard page at ``GET /dashboard`` (and ``/dashboard/``), its files under
    ``/dashboard/<name>``; none of it is in the OpenAPI document."""
    assets = _assets()
    page = _with_base(assets["index.html"][0])

    def index() -> HTMLResponse:
        return HTMLResponse(page, headers=_HEADERS)

    def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            return Response(b"not found", status_code=404, media_type="text/plain", headers=_HEADERS)
        if name == "index.html":
            return index()
        body, media_type = found
        return Response(body, media_type=media_type, headers=_HEADERS)

    for path in (PREFIX, f"{PREFIX}/"):
        app.add_api_route(path, index, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{PREFIX}/{{name}}", asset, methods=["GET"], include_in_schema=False)
