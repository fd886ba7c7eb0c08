"""``makima contracts events``: a contract's event log, oldest first; with ``--follow``, then the events
that happen next, live, until Ctrl-C (or ``--duration``).

The log is ``GET …/events`` (pages of 1,000, ``after_id``). ``--follow`` goes on with the WebSocket
monitor (``monitor_stream``: reconnects, resume, de-duplication), subscribed to this one contract and
resuming after the last event the log printed: the server replays what happened between the two, so
nothing is lost and nothing printed twice. A followed event has the log's shape; its ``payload`` is the
monitor's ``data``, which the server cuts down (``"truncated": true``) when an event is too big for a
WebSocket frame (``makima contracts export`` has the whole log).

Formats: ``text``, one line per event (``#id  time  actor  type  what happened``); ``json``, one JSON
object per line (JSON Lines: ``{"id", "type", "contract_id", "actor", "created_at", "payload"}``, the
API's event objects), so a followed stream can be piped as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer

from makima.cli.contracts_app import ContractId, app, config_of, open_contract
from makima.cli.errors import EXIT_API_ERROR, fail
from makima.cli.monitor import summary, utc_seconds
from makima.cli.monitor_stream import Cursor, Filter, MonitorError, Notice, events, monitor_url
from makima.cli.output import short_id
from makima.client.api import MakimaApi
from makima.domain.monitor import log_id

EVENTS_PAGE = 1000  # the API's largest page of events


class EventFormat(StrEnum):
    text = "text"
    json = "json"


def from_envelope(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """A monitor envelope (``id`` as a string, ``timestamp``, ``data``) in the log's shape."""
    raw = envelope.get("id")
    return {
        "id": int(raw) if isinstance(raw, str) and raw.isdigit() else raw,
        "type": envelope.get("type"),
        "contract_id": envelope.get("contract_id"),
        "actor": envelope.get("actor"),
        "created_at": envelope.get("timestamp"),
        "payload": dict(envelope.get("data") or {}),
    }


def short_actor(actor: object) -> str:
    """``user:08f027ae`` for ``user:08f027ae-a291-…``: who, at the width of an id's prefix."""
    kind, _, who = str(actor or "-").partition(":")
    return f"{kind}:{short_id(who)}" if who else kind


def text_line(event: Mapping[str, Any]) -> str:
    """``#42  2026-11-24T16:14:11Z  user:08f027ae  status_changed  active → paused  (review)``."""
    detail = summary({"type": event.get("type"), "data": event.get("payload") or {}})
    parts = [f"#{event.get('id')}", utc_seconds(event.get("created_at")), short_actor(event.get("actor"))]
    parts.append(str(event.get("type")))
    return "  ".join([*parts, detail] if detail else parts)


def json_line(event: Mapping[str, Any]) -> str:
    return json.dumps(event, ensure_ascii=False, sort_keys=True)


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()  # one line at a time, so it pipes


def print_log(api: MakimaApi, cid: str, after: int, fmt: EventFormat) -> int:
    """Print the log after event ``after``; the id of the last one printed (``after`` when none)."""
    render = json_line if fmt is EventFormat.json else text_line
    while True:
        page = api.events(cid, after_id=after, limit=EVENTS_PAGE)
        for event in page["events"]:
            _write(render(event))
        after = int(page["last_id"])
        if not page.get("next_cursor"):
            return after


def follow(url: str, token: str, cid: str, after: int, fmt: EventFormat, duration: float | None) -> None:
    """Print the contract's events after ``after`` as they come, until ``duration`` runs out (forever
    when None). Connection notices go to stderr; a refused token raises ``MonitorError``."""
    render = json_line if fmt is EventFormat.json else text_line
    cursor = Cursor()
    cursor.skip_to(after)
    flt = Filter(contract_ids=(cid,), include_stale=True, include_heartbeats=False)

    async def run() -> None:
        printed = after
        async with contextlib.aclosing(events(url, token, flt, cursor=cursor)) as stream:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(duration):
                    async for item in stream:
                        if isinstance(item, Notice):
                            typer.echo(f"events: {item.message}", err=True)
                            continue
                        position = log_id(item)
                        if position is None or position <= printed:
                            continue  # printed from the log already
                        printed = position
                        _write(render(from_envelope(item)))

    asyncio.run(run())


@app.command("events")
def events_command(
    ctx: typer.Context,
    contract_id: ContractId,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Then keep printing new events as they happen (Ctrl-C stops).")
    ] = False,
    after: Annotated[int, typer.Option("--after", min=0, metavar="EVENT_ID", help="Only events after this id.")] = 0,
    fmt: Annotated[
        EventFormat, typer.Option("--format", help="text (one line per event) or json (JSON Lines, the API's objects).")
    ] = EventFormat.text,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=0.1, help="With --follow: stop after this many seconds (default: never)."),
    ] = None,
    url_override: Annotated[
        str | None,
        typer.Option(
            "--monitor-url",
            envvar="MAKIMA_MONITOR_URL",
            help="With --follow: the monitor's ws(s):// URL (default: the API URL's; on AWS the stack's MonitorUrl).",
        ),
    ] = None,
) -> None:
    """A contract's events, oldest first: status and phase changes, deliverables, questions and
    answers, tasks, supervisor changes. With --follow, then the new ones live (over the WebSocket
    monitor, resumed without gaps after a lost connection).

    \b
    Examples:
      makima contracts events 3f6c2a1e
      makima contracts events 3f6c2a1e --follow
      makima contracts events 3f6c2a1e --after 1200 --format json | jq .type
    """
    cfg = config_of(ctx)
    url = None
    if follow_:
        try:
            url = monitor_url(cfg.api_url, url_override)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--monitor-url" if url_override else "--api-url") from None
        if not cfg.token:
            fail("UNAUTHORIZED", "no token: pass --token, set MAKIMA_TOKEN, or run makima login")
    api, cid = open_contract(ctx, contract_id)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        last = print_log(api, cid, after, fmt)
        if url is not None:
            follow(url, cfg.token or "", cid, last, fmt, duration)
    except KeyboardInterrupt:
        return
    except MonitorError as exc:
        fail(exc.code, exc.message, EXIT_API_ERROR)
    except BrokenPipeError:
        # The reader went away (| head): not an error; keep Python from complaining at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
