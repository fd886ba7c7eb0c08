"""ASGI middleware that refuses oversized request bodies with 413 before anything parses them."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def _body(limit: int) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": "PAYLOAD_TOO_LARGE",
                "message": f"request body exceeds {limit} bytes",
                "details": {"max_bytes": limit},
            }
        }
    ).encode()


class BodySizeLimit:
    """``max_bytes`` for every request, but those whose path starts with a prefix of ``larger``
    (``{prefix: limit}``): the LangGraph checkpoint routes carry checkpoints of up to megabytes, and
    only they may."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = tuple((larger or {}).items())

    def _limit(self, scope: Scope) -> int:
        path = str(scope.get("path") or "")
        for prefix, limit in self.larger:
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.max_bytes

    async def _reject(self, send: Send, limit: int) -> None:
        body = _body(limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        headers: dict[bytes, bytes] = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(send, limit)
            return

        if declared is not None:
            # The server holds the client to its declared length, so the check above is enough.
            await self.app(scope, receive, send)
            return

        # No declared length (chunked): read the body here, up to the limit, then replay it. Raising
        # from inside the app's receive would be turned into a 400 by the framework's body parser.
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnected: let the app see it
                return
            body = message.get("body", b"")
            seen += len(body)
            if seen > limit:
                await self._reject(send, limit)
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
