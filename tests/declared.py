"""Every answer the API gives is one its OpenAPI document declares: the status for that operation and,
for an error, the code for that status. The integration ``client`` checks each response it receives
with ``undeclared``, so any test that provokes an undeclared status or code fails at that request."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

_PARAM = re.compile(r"{[^}]+}")


@cache
def _template(path: str) -> re.Pattern[str]:
    return re.compile("^" + _PARAM.sub("[^/]+", re.escape(path).replace(r"\{", "{").replace(r"\}", "}")) + "$")


def declared_codes(openapi: dict[str, Any]) -> dict[tuple[str, str], dict[int, frozenset[str]]]:
    """(method, path template) → status → the error codes the document declares for it."""
    out: dict[tuple[str, str], dict[int, frozenset[str]]] = {}
    for path, item in openapi.get("paths", {}).items():
        for method, op in item.items():
            statuses: dict[int, frozenset[str]] = {}
            for status, response in op.get("responses", {}).items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                code = schema.get("properties", {}).get("error", {}).get("properties", {}).get("code", {})
                statuses[int(status)] = frozenset(code.get("enum", ()))
            out[(method.upper(), path)] = statuses
    return out


def operation(document: dict[str, Any], method: str, path: str) -> tuple[str, str] | None:
    """The document's (METHOD, path template) that serves ``method path``, or None. A literal path is its
    own resource, as the router treats it: ``/contracts/batch`` is never ``/contracts/{contract_id}``."""
    matches = [p for p in document["paths"] if _template(p).match(path)]
    if not matches:
        return None
    template = min(matches, key=lambda p: p.count("{"))
    return (method.upper(), template) if method.lower() in document["paths"][template] else None


def undeclared(document: dict[str, Any], method: str, path: str, status: int, body: bytes) -> str | None:
    """Why this answer is not one the document declares, or None when it is (or is no operation's:
    an unknown path, a method the path does not serve)."""
    op = operation(document, method, path)
    if op is None or status == 500:  # a 500 is a bug whatever the document says; other checks catch it
        return None
    statuses = declared_codes(document)[op]
    if status not in statuses:
        return f"{op[0]} {op[1]} answered {status}, which it does not declare (it declares {sorted(statuses)})"
    if status >= 400 and statuses[status]:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return f"{op[0]} {op[1]} answered {status} without the error envelope: {body[:200]!r}"
        if code not in statuses[status]:
            return f"{op[0]} {op[1]} answered {status} {code}, which it does not declare ({sorted(statuses[status])})"
    return None
