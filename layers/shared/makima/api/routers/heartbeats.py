"""Heartbeat ingest (seed 3.2): one supervisor's, or a daemon's batch. Its own Lambda: the hottest path,
with the smallest app. Behind the ``supervisor_heartbeat`` flag."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import Request, Response
from pydantic import (
    BaseModel,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    GetPydanticSchema,
    TypeAdapter,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from makima.api import lean
from makima.api.after_write import HANDLED
from makima.api.answers import serialized
from makima.api.concurrency import blocking
from makima.api.deps import DB, Caller, Config, Events, feature
from makima.api.routers._common import make_router, raises
from makima.api.schemas import Body
from makima.domain.principals import Principal
from makima.domain.supervisors import Heartbeat, InvalidHeartbeat
from makima.errors import ContractNotFound, FeatureDisabled, Inconsistent, StaleTimestamp, UnknownSupervisorTask
from makima.flags import Flag
from makima.services import supervisors as svc
from makima.services.monitor import EventSink
from makima.services.supervisors import HeartbeatMonitor

router = make_router("heartbeats", FeatureDisabled)
router.dependencies.append(feature(Flag.SUPERVISOR_HEARTBEAT))
MAX_BATCH = 500


class FieldError(BaseModel):
    loc: list[str]
    msg: str
    type: str


class HeartbeatAnswerOut(BaseModel):
    task_id: UUID | None = Field(description="Null only for a batch item without a readable task_id.")
    accepted: bool
    error: str | None = None
    code: str | None = Field(
        default=None,
        description="Why it was refused: INVALID_REQUEST (a field; see errors), SUPERVISOR_NOT_FOUND, "
        "CONFLICT (superseded).",
    )
    errors: list[FieldError] | None = Field(default=None, description="The fields at fault of an invalid item.")
    sync_requested: bool = Field(default=False, description="Send your full state (PUT …/supervisor/state) now.")
    restart_requested: bool = Field(default=False, description="Restart yourself (save, stop, restore).")
    superseded: bool = Field(default=False, description="You were restored elsewhere: stop.")
    heartbeat_interval_seconds: int = Field(description="Beat at this interval (the service's setting).")


_ONE = TypeAdapter(Heartbeat)


def _items(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> list[Heartbeat | InvalidHeartbeat]:
    """The batch's items, each validated on its own: an invalid one becomes an ``InvalidHeartbeat``
    answered with its own error, instead of failing the whole batch (and the valid heartbeats in it)
    with a 422. The usual, all-valid batch is validated in one pass of pydantic-core; only a batch
    with a bad item is gone through again item by item. A list of the wrong length stays a 422."""
    try:
        items: list[Heartbeat | InvalidHeartbeat] = handler(value)
        return items
    except ValidationError:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH:
            raise
        return [_item(v) for v in value]


def _item(value: Any) -> Heartbeat | InvalidHeartbeat:
    try:
        return _ONE.validate_python(value)
    except ValidationError as exc:
        errors = [
            {"loc": [str(p) for p in e["loc"]], "msg": str(e["msg"]), "type": str(e["type"])} for e in exc.errors()
        ]
        where = ".".join(errors[0]["loc"]) or "item"
        return InvalidHeartbeat(_task_id(value), f"{where}: {errors[0]['msg']}", errors)


def _task_id(value: Any) -> UUID | None:
    try:
        return UUID(str(value["task_id"])) if isinstance(value, dict) and "task_id" in value else None
    except ValueError:
        return None


def _items_schema(_: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
    batch = core_schema.list_schema(handler(Heartbeat), min_length=1, max_length=MAX_BATCH)
    return core_schema.no_info_wrap_validator_function(_items, batch)


def _items_json_schema(schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
    """What the document says of the items: each is meant to be a Heartbeat, and any item is accepted
    into the batch, an invalid one answered with its own error in ``results`` (so a schema that required
    Heartbeat items would call an answered batch "a schema-violating request accepted")."""
    json_schema = handler(schema)
    json_schema["items"] = {
        "anyOf": [json_schema["items"], {}],
        "description": "A Heartbeat (with contract_id). An item that is not one is refused on its own, "
        "in its result (code INVALID_REQUEST); the others are ingested.",
    }
    return json_schema


# The document shows a list of (meant to be) Heartbeat; validation keeps the invalid ones as InvalidHeartbeat.
HeartbeatItems = Annotated[list[Heartbeat | InvalidHeartbeat], GetPydanticSchema(_items_schema, _items_json_schema)]


class HeartbeatBatch(Body):
    """A malformed envelope (not an object, unknown fields, no list, none or more than 500 items) is a
    422; an item is answered on its own in ``results``."""

    daemon_id: UUID | None = Field(default=None, description="The daemon sending the batch (marks it live).")
    heartbeats: HeartbeatItems


_ANSWERS = TypeAdapter(list[HeartbeatAnswerOut])


class HeartbeatBatchAnswer(BaseModel):
    results: list[HeartbeatAnswerOut]
    accepted: int
    rejected: int
    heartbeat_interval_seconds: int = Field(description="Beat at this interval (the service's setting).")


def _handled_by(request: Request, events: EventSink | None) -> HeartbeatMonitor | None:
    """The sink's heartbeat hook; the after-write middleware then leaves the request alone."""
    if events is None:
        return None
    setattr(request.state, HANDLED, True)
    return events.heartbeats


@router.post(
    "/contracts/{contract_id}/supervisor/heartbeat",
    response_model=HeartbeatAnswerOut,
    responses=raises(ContractNotFound, UnknownSupervisorTask, Inconsistent, StaleTimestamp),
)
async def heartbeat(
    request: Request, contract_id: UUID, body: Heartbeat, db: DB, caller: Caller, events: Events, settings: Config
) -> HeartbeatAnswerOut:
    monitor = _handled_by(request, events)
    on_loop = request.app.state.async_database
    if on_loop is None:
        answer = await blocking(svc.heartbeat, db, caller, contract_id, body, monitor=monitor)
    else:  # the statement sent from the event loop (db/async_pool.py); the same checks and answers
        answer = await svc.heartbeat_on_loop(on_loop, caller, contract_id, body, monitor=monitor)
    return HeartbeatAnswerOut.model_validate(
        {**vars(answer), "heartbeat_interval_seconds": settings.contracts.heartbeat_interval_seconds}
    )


@router.post("/supervisors/heartbeats", response_model=HeartbeatBatchAnswer)
async def heartbeat_batch(
    request: Request, body: HeartbeatBatch, db: DB, caller: Caller, events: Events, settings: Config
) -> HeartbeatBatchAnswer | Response:
    monitor = _handled_by(request, events)
    on_loop = request.app.state.async_database
    interval = settings.contracts.heartbeat_interval_seconds
    if on_loop is None:
        answers = await blocking(
            svc.ingest_heartbeats, db, caller, body.heartbeats, daemon_id=body.daemon_id, monitor=monitor
        )
        return _batch_answer(answers, interval)
    # The response a plain batch gets, encoded while its statement runs: the same bytes as the model's.
    ahead: tuple[list[svc.HeartbeatAnswer], Response] | None = None

    def answer_ahead(answers: list[svc.HeartbeatAnswer]) -> None:
        nonlocal ahead
        ahead = answers, serialized(_batch_answer(answers, interval))

    answers = await svc.ingest_heartbeats_on_loop(
        on_loop, caller, body.heartbeats, daemon_id=body.daemon_id, monitor=monitor, meanwhile=answer_ahead
    )
    if ahead is not None and ahead[0] is answers:
        return ahead[1]
    return _batch_answer(answers, interval)


def _batch_answer(answers: list[svc.HeartbeatAnswer], interval: int) -> HeartbeatBatchAnswer:
    accepted = sum(a.accepted for a in answers)
    return HeartbeatBatchAnswer(
        # One pydantic-core pass over the list: a third less CPU than a model_validate per item (issue 15).
        results=_ANSWERS.validate_python([{**vars(a), "heartbeat_interval_seconds": interval} for a in answers]),
        accepted=accepted,
        rejected=len(answers) - accepted,
        heartbeat_interval_seconds=interval,
    )


# The lean twins of the two endpoints above (api/lean.py): the same checks in the same order and the same
# endpoint function, without FastAPI's per-request machinery; anything but a well-formed JSON body is left
# to the routes above. A heartbeat was 1.8 ms of server CPU through FastAPI, of which FastAPI was more than
# half (docs/performance.md, "Change 15").
_BATCH = TypeAdapter(HeartbeatBatch)


class _AllValid(Body):
    """A batch whose every item is a heartbeat, the usual one: validated straight from the JSON in one
    pass. ``HeartbeatBatch`` validates its items through a wrap validator, which parses the JSON into
    Python objects first and validates those (a third more CPU on 100 heartbeats); when this one
    fails, the lean handler validates the body as ``HeartbeatBatch``, whose answer for a batch that
    passes here is the same items (a property test: tests/integration/test_lean_routes.py)."""

    daemon_id: UUID | None = None
    heartbeats: Annotated[list[Heartbeat], Field(min_length=1, max_length=MAX_BATCH)]


_ALL_VALID = TypeAdapter(_AllValid)


async def _heartbeat_lean(request: Request, body: bytes) -> Response | None:
    if (parsed := lean.contract_and_body(request, body, _ONE)) is None:
        return None
    contract_id, beat = parsed
    s = request.app.state

    async def run(caller: Principal) -> HeartbeatAnswerOut:
        return await heartbeat(request, contract_id, beat, s.database, caller, s.events, s.settings)

    return await lean.serve(request, run, flag=Flag.SUPERVISOR_HEARTBEAT)


async def _heartbeat_batch_lean(request: Request, body: bytes) -> Response | None:
    usual = lean.json_body(request, body, _ALL_VALID)
    if usual is not None:
        items: list[Heartbeat | InvalidHeartbeat] = list(usual.heartbeats)
        batch = HeartbeatBatch.model_construct(daemon_id=usual.daemon_id, heartbeats=items)
    elif (parsed := lean.json_body(request, body, _BATCH)) is not None:
        batch = parsed
    else:
        return None
    s = request.app.state

    async def run(caller: Principal) -> HeartbeatBatchAnswer | Response:
        return await heartbeat_batch(request, batch, s.database, caller, s.events, s.settings)

    return await lean.serve(request, run, flag=Flag.SUPERVISOR_HEARTBEAT)


_ONE_PATH = f"{router.prefix}/contracts/{{contract_id}}/supervisor/heartbeat"
lean.register(router, lean.LeanRoute(_ONE_PATH, "POST", _heartbeat_lean))
lean.register(router, lean.LeanRoute(f"{router.prefix}/supervisors/heartbeats", "POST", _heartbeat_batch_lean))
