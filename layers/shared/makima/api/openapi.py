"""The OpenAPI document: FastAPI's, plus the links from each creating operation to the operations on
what it created (declared once on the creating route: ``raises(..., creates=...)``).

A link says "take this value of the answer as that parameter of that operation"; with them a client
generator, or schemathesis' stateful phase, chains POST /contracts → GET /contracts/{contract_id}/… on
the contract it just made instead of guessing ids. They are derived, not listed: every operation whose
path parameters are all among those the creation supplies gets a link, so a new route on a contract is
linked without anyone remembering to; except that an operation on a sub-resource another operation
creates (``/contracts/{contract_id}/supervisor/...``, made by POST ``/contracts/{contract_id}/supervisor``)
is linked from that creation only: right after POST /contracts there is no supervisor to ask about.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from makima.api.routers._common import CREATES

_PARAM = re.compile(r"{([^}]+)}")
_METHODS = ("get", "put", "post", "patch", "delete")


def _link_name(method: str, path: str) -> str:
    words = [w for w in re.split(r"[^A-Za-z0-9]+", path.removeprefix("/api/v1")) if w]
    return method.capitalize() + "".join(w[:1].upper() + w[1:] for w in words)


def _resource(path: str, creates: dict[str, str]) -> str:
    """The path of what an operation on ``path`` creates: ``/contracts`` → ``/contracts/{contract_id}``;
    a singleton (no new parameter: ``/contracts/{contract_id}/supervisor``) is the path itself."""
    new = sorted(creates.keys() - set(_PARAM.findall(path)))
    return f"{path}/{{{new[0]}}}" if len(new) == 1 else path


def _owner(path: str, resources: dict[str, str]) -> str | None:
    """The creating operation's path whose resource is the longest prefix of ``path`` (not counting the
    creation itself: POST /contracts/{contract_id}/supervisor is linked from POST /contracts)."""
    owning = [
        (len(r), creator)
        for creator, r in resources.items()
        if creator != path and (path == r or path.startswith(r + "/"))
    ]
    return max(owning)[1] if owning else None


def add_links(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with ``links`` on the success response of each operation that declares ``CREATES``."""
    paths: dict[str, dict[str, Any]] = document.get("paths", {})
    creations = {
        (path, method): op.pop(CREATES)
        for path, item in paths.items()
        for method, op in item.items()
        if isinstance(op, dict) and CREATES in op
    }
    resources = {path: _resource(path, creates) for (path, _), creates in creations.items()}
    for (path, method), creates in creations.items():
        op = paths[path][method]
        success = next(code for code in sorted(op["responses"]) if code.startswith("2"))
        links: dict[str, Any] = {}
        for target_path, target_item in paths.items():
            params = set(_PARAM.findall(target_path))
            if target_path == path or not params or not params <= creates.keys():
                continue
            if _owner(target_path, resources) not in (path, None):
                continue
            for target_method in _METHODS:
                target = target_item.get(target_method)
                if target is not None:
                    links[_link_name(target_method, target_path)] = {
                        "operationId": target["operationId"],
                        "parameters": {p: creates[p] for p in sorted(params)},
                    }
        op["responses"][success]["links"] = links
    return document


def install(app: FastAPI) -> None:
    """Serve the document with links (built once, on first request, as FastAPI does)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_links(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
