"""Powertools Idempotency over PostgreSQL: the persistence layer and the run of one keyed request.

Imported on the first request that carries an ``Idempotency-Key`` (``makima.api.idempotency``), never at
start: Powertools' idempotency package imports boto3 (for its DynamoDB layer), which a cold start that
serves no keyed request should not pay for.

Powertools' model is: claim the key INPROGRESS (``_put_record``), run the function, then store its
answer COMPLETED (``_update_record``) or, when it raised, delete the claim (``_delete_record``). Done
naively, the function's own transaction commits before the answer is stored, and a failure in between
(the connection dropping after the commit: a 503 the SDK retries) deletes the claim of a request whose
writes are in: the retry creates a second object. So here the function runs inside one transaction
that this layer holds open (the services' transactions become savepoints of it), and
``_update_record`` writes the COMPLETED record on that transaction and commits it: the request's
writes and its stored answer commit together or not at all. A retry finds either the answer, or no
trace of the first request (its claim released, or INPROGRESS until ``in_progress_seconds`` passes,
when the request must have died before committing).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyInconsistentStateError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from makima.db import idempotency as records
from makima.db.connection import Conn, Database, WithinTransaction, transaction
from makima.errors import IdempotencyInProgress, IdempotencyKeyReused, MakimaError

# The prefix of every key (Powertools' default is the decorated function's dotted name, which a
# refactoring would change, orphaning every stored answer).
KEY_PREFIX = "makima"


@dataclass(frozen=True, slots=True)
class Answer:
    """What a keyed request answered (or, ``replayed``, what its first run answered)."""

    status: int
    headers: dict[str, str]
    body: Any
    replayed: bool = False


def _at(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


class PostgresPersistenceLayer(BasePersistenceLayer):
    """Powertools' persistence layer on ``idempotency_records``, for one request (``user_id`` on
    ``route``): it holds that request's claim and, while the request runs, its transaction."""

    def __init__(self, db: Database, *, user_id: UUID, route: str, in_progress_seconds: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.db = db
        self.user_id = user_id
        self.route = route
        self.in_progress_seconds = in_progress_seconds
        self.claim_id = uuid4()
        self._open: ExitStack | None = None
        self._conn: Conn | None = None

    # --- the request's transaction ---------------------------------------------------------------------

    def begin(self) -> WithinTransaction:
        """Open the transaction the request runs in (committed by ``_update_record``)."""
        stack = ExitStack()
        conn: Conn = stack.enter_context(self.db.connection())
        stack.enter_context(conn.transaction())
        self._open, self._conn = stack, conn
        return WithinTransaction(conn)

    def commit(self) -> None:
        """Commit the request's transaction if it is still open: only when Powertools did not store the
        answer (``POWERTOOLS_IDEMPOTENCY_DISABLED`` set: it then just runs the function)."""
        stack, self._open, self._conn = self._open, None, None
        if stack is not None:
            stack.close()

    def abort(self, exc: BaseException) -> None:
        """Roll the request's transaction back because of ``exc``. Raises what the database adapter makes
        of ``exc`` when it is its business (a dropped connection: ``DatabaseUnavailable``)."""
        stack, self._open, self._conn = self._open, None, None
        if stack is not None:
            stack.__exit__(type(exc), exc, exc.__traceback__)

    # --- BasePersistenceLayer --------------------------------------------------------------------------

    def _put_record(self, data_record: DataRecord) -> None:
        now = datetime.now(UTC)
        if data_record.in_progress_expiry_timestamp is not None:
            in_progress_until = _at(data_record.in_progress_expiry_timestamp / 1000)
        else:  # no context given to Powertools (``run`` always gives one): the configured bound
            in_progress_until = now + timedelta(seconds=self.in_progress_seconds)
        with transaction(self.db) as conn:
            records.purge_expired(conn, now=now)
            claimed = records.claim(
                conn,
                key=data_record.idempotency_key,
                user_id=self.user_id,
                route=self.route,
                payload_hash=data_record.payload_hash or "",
                claim_id=self.claim_id,
                expires_at=_at(data_record.expiry_timestamp or now.timestamp()),
                in_progress_expires_at=in_progress_until,
                now=now,
            )
        if claimed:
            return
        existing = self._read(data_record.idempotency_key)
        if existing is None:  # gone in between (expired and purged): Powertools tries again
            raise IdempotencyItemAlreadyExistsError()
        self._validate_payload(data_record, existing)  # another request under this key: 422
        raise IdempotencyItemAlreadyExistsError(old_data_record=existing)

    def _get_record(self, idempotency_key: str) -> DataRecord:
        record = self._read(idempotency_key)
        if record is None:
            raise IdempotencyItemNotFoundError(idempotency_key)
        return record

    def _update_record(self, data_record: DataRecord) -> None:
        """Store the answer, on the request's transaction when it is open, and commit it: the request's
        writes and its answer become visible together."""
        try:
            self._complete(data_record)
        except IdempotencyInProgress:
            raise  # the record is another request's now
        except Exception:
            # Nothing was committed (or, the connection lost during COMMIT, the commit went through and
            # the record is COMPLETED, which the release leaves alone): free the key for the retry
            # rather than make it wait out the in-progress expiry. Best effort: the database may be gone.
            with suppress(Exception):
                self._delete_record(data_record)
            raise

    def _complete(self, data_record: DataRecord) -> None:
        answer = json.loads(data_record.response_data or "null")
        conn, stack = self._conn, self._open
        self._open, self._conn = None, None
        with ExitStack() as own:
            if conn is None or stack is None:  # the request never opened its transaction
                conn = own.enter_context(transaction(self.db))
            else:
                own.push(stack)  # exits (commits, or rolls back on an exception) with this block
            stored = records.complete(
                conn,
                key=data_record.idempotency_key,
                claim_id=self.claim_id,
                expires_at=_at(data_record.expiry_timestamp or datetime.now(UTC).timestamp()),
                status=int(answer["status"]),
                headers=dict(answer["headers"]),
                body=answer["body"],
            )
            if not stored:
                # This request outlived its in-progress expiry and a retry took the key over: its
                # writes roll back with this exception, so only one of the two commits.
                raise IdempotencyInProgress(
                    "this request took too long and a retry of it took over; retry shortly",
                    {"in_progress_seconds": self.in_progress_seconds},
                )

    def _delete_record(self, data_record: DataRecord) -> None:
        with transaction(self.db) as conn:
            records.release(conn, key=data_record.idempotency_key, claim_id=self.claim_id)

    def _read(self, idempotency_key: str) -> DataRecord | None:
        with self.db.connection() as conn:
            record = records.get(conn, idempotency_key)
        if record is None:
            return None
        response = None
        if record.response_status is not None:
            response = json.dumps(
                {"status": record.response_status, "headers": record.response_headers, "body": record.response_body}
            )
        return DataRecord(
            idempotency_key=record.key,
            status=record.status,
            expiry_timestamp=int(record.expires_at.timestamp()),
            in_progress_expiry_timestamp=(
                int(record.in_progress_expires_at.timestamp() * 1000) if record.in_progress_expires_at else None
            ),
            response_data=response or "",
            payload_hash=record.payload_hash,
        )


class _Budget:
    """A stand-in Lambda context outside Lambda: the time a request may hold its key INPROGRESS
    (Powertools reads the in-progress expiry from the context's remaining time)."""

    def __init__(self, seconds: int) -> None:
        self.millis = seconds * 1000

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def _replayed(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools' response hook: called only when the answer comes from the store."""
    return {**response, "replayed": True}


def run(
    execute: Callable[[Database], tuple[int, dict[str, str], Any]],
    *,
    db: Database,
    user_id: UUID,
    route: str,
    key: str,
    request: dict[str, Any],
    expires_after_seconds: int,
    in_progress_seconds: int,
    lambda_context: Any = None,
) -> Answer:
    """Run ``execute`` (the endpoint, given the database to use) once per (``user_id``, ``route``,
    ``key``): the first time for real, inside one transaction with its stored answer; afterwards the
    stored answer, as long as ``request`` (method, path, query, body) is the same.

    Raises ``IdempotencyKeyReused`` (422) for the key with another request, ``IdempotencyInProgress``
    (409) while the first request runs, and whatever ``execute`` raised (nothing is stored then)."""
    layer = PostgresPersistenceLayer(db, user_id=user_id, route=route, in_progress_seconds=in_progress_seconds)
    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="request",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=expires_after_seconds,
        hash_function="sha256",
        response_hook=_replayed,
        # On Lambda the invocation's own deadline bounds the claim (a request cannot outlive it);
        # elsewhere ``in_progress_seconds``.
        lambda_context=lambda_context or cast(LambdaContext, _Budget(in_progress_seconds)),
    )

    @idempotent_function(  # type: ignore[untyped-decorator]  # Powertools leaves it untyped
        data_keyword_argument="data", persistence_store=layer, config=config, key_prefix=KEY_PREFIX
    )
    def keyed(data: dict[str, Any]) -> dict[str, Any]:
        in_tx = layer.begin()
        try:
            status, headers, body = execute(in_tx)
        except BaseException as exc:
            layer.abort(exc)  # raises DatabaseUnavailable itself when the connection broke
            raise
        return {"status": status, "headers": headers, "body": body}

    data = {"key": {"user": str(user_id), "route": route, "key": key}, "request": request}
    try:
        answer = keyed(data=data)
        layer.commit()
    except IdempotencyValidationError as exc:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with another request; use a new key for a new request",
            {"header": "Idempotency-Key"},
        ) from exc
    except (IdempotencyAlreadyInProgressError, IdempotencyInconsistentStateError) as exc:
        raise IdempotencyInProgress(
            "a request with this Idempotency-Key is in progress; retry shortly", {"header": "Idempotency-Key"}
        ) from exc
    except IdempotencyPersistenceLayerError as exc:
        # The store failed (its cause: the database unavailable, or our own refusal above): say that.
        cause = exc.__cause__
        if isinstance(cause, MakimaError):
            raise cause from exc
        raise
    return Answer(
        status=int(answer["status"]),
        headers=dict(answer["headers"]),
        body=answer["body"],
        replayed=bool(answer.get("replayed")),
    )
