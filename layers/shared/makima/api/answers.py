"""Answers serialised before the transaction commits.

FastAPI validates and serialises a route's return value after the route returns, which is after the
service's transaction committed: an answer that fails there (a stored value pydantic cannot
serialise) reached the client as a 500 while the write stood, and a client retrying a restore bumped
the generation each time. A service that takes an ``answer`` calls it inside its transaction; a route
passes one that ends in ``serialized``, so the body is complete bytes before the commit, and the only
thing left after it is sending them. Docs: docs/architecture.md, "Answers are built before commit".
"""

from __future__ import annotations

import uuid

from fastapi import Response
from pydantic import BaseModel


def serialized(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as the JSON response FastAPI would send (its response model, by alias), built now;
    raises (pydantic's serialisation error) when it cannot be."""
    return Response(model.model_dump_json(by_alias=True), status_code=status_code, media_type="application/json")


def serialized_with_json(model: BaseModel, field: str, array: str, status_code: int = 200) -> Response:
    """``model`` as ``serialized`` sends it, its list ``field`` holding ``array``: the JSON text of an
    array (PostgreSQL's text of stored JSON, e.g. a conversation page's messages), put in as it is
    instead of being parsed into Python and encoded again (a third of a state read's server CPU for 200
    messages, issue 15). The model is encoded with a one-off marker as the field's only item, and that
    list is then replaced by the text: a random 128-bit marker cannot be anywhere else in the body. The
    text comes from PostgreSQL's JSON types, so it is valid JSON (with PostgreSQL's spacing: ``{"a": 1}``)."""
    marker = f"makima-splice-{uuid.uuid4().hex}"
    body = model.model_copy(update={field: [marker]}).model_dump_json(by_alias=True).encode()
    head, found, tail = body.partition(f'["{marker}"]'.encode())
    if not found:
        raise ValueError(f"{type(model).__name__}.{field} is not a list of JSON values")
    return Response(b"".join((head, array.encode(), tail)), status_code=status_code, media_type="application/json")
