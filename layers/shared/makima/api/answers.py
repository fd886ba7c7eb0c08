"""Answers serialised before the transaction commits.

FastAPI validates and serialises a route's return value after the route returns, which is after the
service's transaction committed: an answer that fails there (a stored value pydantic cannot
serialise) reached the client as a 500 while the write stood, and a client retrying a restore bumped
the generation each time. A service that takes an ``answer`` calls it inside its transaction; a route
passes one that ends in ``serialized``, so the body is complete bytes before the commit, and the only
thing left after it is sending them. Docs: docs/architecture.md, "Answers are built before commit".
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def serialized(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as the JSON response FastAPI would send (its response model, by alias), built now;
    raises (pydantic's serialisation error) when it cannot be."""
    return Response(model.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json")
