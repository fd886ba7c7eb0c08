"""The web dashboard on the local stack: the static page of ``makima/web`` served at ``/dashboard``.

The page holds no data: it calls the API (``GET /api/v1/contracts/dashboard``) and the WebSocket monitor
with the token the user pastes into it, so serving it needs no authentication. Where that token may go
is decided here, by the server, never by the page's link: the page's own origin, plus the origins of the
deployment's ``[dashboard]`` settings (``makima.config.DashboardConfig``). Both the page and the browser
are told:

- the page reads them from a ``<meta name="makima-dashboard">`` inserted into ``index.html`` (a link's
  ``?api=`` / ``?ws=`` may only choose among them; anything else is ignored, with a warning on the page);
- the browser enforces them: ``connect-src`` names ``'self'`` and those origins only, so even a page
  tricked into calling another host could not (docs/security.md, "The dashboard page").

Served at ``/dashboard`` (no trailing slash) the page's relative asset links would resolve against
``/``; a ``<base href="/dashboard/">`` is inserted into the HTML here, so the files themselves stay
relative.
"""

from __future__ import annotations

import html
import json
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from makima.config import DashboardConfig

PREFIX = "/dashboard"
MONITOR_PATH = "/api/v1/contracts/monitor"

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def monitor_of(api_base: str) -> str:
    """The monitor an API serves itself (``http(s)://h/p`` → ``ws(s)://h/p/api/v1/contracts/monitor``):
    the page's default when no monitor is configured for that API."""
    return "ws" + api_base.removeprefix("http") + MONITOR_PATH


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL already normalised by ``makima.config.dashboard_url``."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def page_config(dashboard: DashboardConfig) -> dict[str, object]:
    """What the page may use besides its own origin: the default API and monitor (``None``: the page's
    origin and that origin's monitor), and every API and monitor a link may choose."""
    apis = [dashboard.api_url] if dashboard.api_url else []
    apis += [a for a in dashboard.extra_api_urls if a not in apis]
    monitor = dashboard.monitor_url or (monitor_of(dashboard.api_url) if dashboard.api_url else None)
    monitors = [monitor] if monitor else []
    for candidate in [*dashboard.extra_monitor_urls, *(monitor_of(a) for a in apis)]:
        if candidate not in monitors:
            monitors.append(candidate)
    return {"api": dashboard.api_url, "monitor": monitor, "apis": apis, "monitors": monitors}


def connect_sources(dashboard: DashboardConfig) -> list[str]:
    """``'self'`` and the origin of every API and monitor the page may use, once each, in order."""
    config = page_config(dashboard)
    sources = ["'self'"]
    for url in [*_strings(config["apis"]), *_strings(config["monitors"])]:
        origin = _origin(url)
        if origin not in sources:
            sources.append(origin)
    return sources


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def security_headers(dashboard: DashboardConfig) -> dict[str, str]:
    """The headers of the page and of each of its files. The page loads nothing from anywhere else and
    connects only to the configured origins; no referrer, so nothing of its address leaks in a
    Referer header."""
    csp = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {' '.join(connect_sources(dashboard))}; "
        "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": csp,
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


def render_page(index_html: bytes, dashboard: DashboardConfig) -> str:
    """``index.html`` with its ``<base>`` and the deployment's origins as a ``<meta>`` (an attribute,
    HTML-escaped: no inline script, which the CSP forbids anyway)."""
    text = index_html.decode("utf-8")
    config = html.escape(json.dumps(page_config(dashboard), separators=(",", ":")), quote=True)
    head = f'<head>\n<base href="{PREFIX}/">\n<meta name="makima-dashboard" content="{config}">'
    return text.replace("<head>", head, 1)


def mount_dashboard(app: FastAPI, dashboard: DashboardConfig) -> None:
    """Serve the dashboard page at ``GET /dashboard`` (and ``/dashboard/``), its files under
    ``/dashboard/<name>``, every answer with the headers of ``dashboard``; none of it is in the OpenAPI
    document."""
    assets = _assets()
    page = render_page(assets["index.html"][0], dashboard)
    headers = security_headers(dashboard)

    def index() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    def asset(name: str) -> Response:
        found = assets.get(name)
        if found is None:
            return Response(b"not found", status_code=404, media_type="text/plain", headers=headers)
        if name == "index.html":
            return index()
        body, media_type = found
        return Response(body, media_type=media_type, headers=headers)

    for path in (PREFIX, f"{PREFIX}/"):
        app.add_api_route(path, index, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{PREFIX}/{{name}}", asset, methods=["GET"], include_in_schema=False)
