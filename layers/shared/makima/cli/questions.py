"""``makima contracts questions`` (what a supervisor asked, and the answers) and ``answer``.

Question ids, like contract ids, are a full UUID or a unique prefix of 4+ characters, resolved among
the contract's questions (one extra request). An answer comes as an argument, from standard input
(``-``), or from ``$EDITOR`` when the argument is left out on a terminal; the editor's lines starting
with ``#`` (the question, shown for reference) are dropped, as git does with a commit message.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from makima.cli.contracts_app import ContractId, app, open_contract
from makima.cli.errors import EXIT_USAGE, fail
from makima.cli.output import ago, console, one_line, print_json, short_id
from makima.cli.params import ExpectedVersion, TextFormat, is_full_id
from makima.client.api import MakimaApi

MAX_ANSWER = 100_000  # the API's bound (QuestionAnswer)


class QuestionStatus(StrEnum):
    pending = "pending"
    answered = "answered"


class ListFormat(StrEnum):
    table = "table"
    json = "json"


def interactive() -> bool:
    """Whether an editor can be opened: stdin is a terminal. (Tests replace this.)"""
    return sys.stdin.isatty()


def _check_question_id(value: str) -> str:
    given = value.strip().lower()
    if not (is_full_id(given) or (4 <= len(given) <= 35 and all(c in "0123456789abcdef-" for c in given))):
        raise typer.BadParameter(f"not a question id (a UUID, or a prefix of 4+ hex characters): {value!r}")
    return given


def resolve_question(questions: list[dict[str, Any]], given: str, cid: str) -> dict[str, Any]:
    """The one question of ``questions`` whose id is ``given`` or starts with it."""
    matches = [q for q in questions if str(q["id"]) == given or str(q["id"]).startswith(given)]
    if not matches:
        fail("NOT_FOUND", f"contract {short_id(cid)} has no question whose id starts with {given!r}")
    if len(matches) > 1:
        ids = ", ".join(short_id(q["id"]) + "…" for q in matches[:5])
        fail("AMBIGUOUS_ID", f"{given!r} matches {len(matches)} questions ({ids}); give more of the id")
    return matches[0]


def questions_table(questions: list[dict[str, Any]], now: datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    for name in ("ID", "STATUS", "ASKED", "QUESTION / ANSWER"):
        table.add_column(name, no_wrap=name != "QUESTION / ANSWER")
    for q in questions:
        text = Text(one_line(q["question"]))
        if q.get("options"):
            text.append(" [" + " | ".join(one_line(o) for o in q["options"]) + "]", style="dim")
        if q.get("answer") is not None:
            text.append("\n→ " + one_line(q["answer"]), style="green")
        style = "yellow" if q["status"] == "pending" else ""
        table.add_row(short_id(q["id"]), Text(q["status"], style=style), ago(q.get("created_at"), now), text)
    return table


@app.command("questions")
def questions(
    ctx: typer.Context,
    contract_id: ContractId,
    status: Annotated[
        QuestionStatus | None, typer.Option("--status", help="Only pending or only answered questions.")
    ] = None,
    fmt: Annotated[
        ListFormat, typer.Option("--format", help='table, or json ({"questions": [...]}, the API\'s objects).')
    ] = ListFormat.table,
) -> None:
    """List a contract's questions, oldest first, with their answers.

    \b
    Examples:
      makima contracts questions 3f6c2a1e
      makima contracts questions 3f6c2a1e --status pending --format json
    """
    api, cid = open_contract(ctx, contract_id)
    found = api.questions(cid, status=status.value if status else None)
    if fmt is ListFormat.json:
        print_json({"questions": found})
        return
    out = console()
    if found:
        out.print(questions_table(found, datetime.now(UTC)))
    else:
        out.print(f"no {status.value + ' ' if status else ''}questions")


def edit(template: str) -> str:
    """``template`` as edited in ``$VISUAL`` or ``$EDITOR`` (``vi`` when neither is set; the variable may
    carry arguments, as git allows). An editor that cannot start or exits non-zero ends the command
    (exit 2), nothing sent. (Typer 0.29 vendors click without its ``edit``; this is the part needed.)"""
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="makima-answer-") as folder:
        path = Path(folder) / "ANSWER.md"
        path.write_text(template, encoding="utf-8")
        try:
            done = subprocess.run([*shlex.split(command), str(path)], check=False)  # noqa: S603 - the user's own $EDITOR
        except (OSError, ValueError) as exc:
            fail("EDITOR_FAILED", f"cannot run the editor {command!r}: {exc}: nothing sent", EXIT_USAGE)
        if done.returncode != 0:
            fail("EDITOR_FAILED", f"the editor {command!r} exited with {done.returncode}: nothing sent", EXIT_USAGE)
        return path.read_text(encoding="utf-8")


def _from_editor(question: dict[str, Any]) -> str:
    lines = ["", "# Your answer to this question (lines starting with # are dropped; empty to abort):", "#"]
    lines += [f"#   {line}" for line in str(question["question"]).splitlines() or [""]]
    if question.get("options"):
        lines.append("# Options: " + " | ".join(one_line(o) for o in question["options"]))
    edited = edit("\n".join(lines) + "\n")
    return "\n".join(line for line in edited.splitlines() if not line.startswith("#"))


def answer_text(given: str | None, question: dict[str, Any]) -> str:
    """The answer: ``given``; stdin for ``-``; the editor when nothing is given on a terminal. An empty
    answer, or none without a terminal, is a usage error (exit 2)."""
    if given == "-":
        text = sys.stdin.read()
    elif given is not None:
        text = given
    elif interactive():
        text = _from_editor(question)
    else:
        typer.echo("error: no answer given: pass TEXT, or - to read it from standard input", err=True)
        raise typer.Exit(EXIT_USAGE)
    text = text.strip()
    if not text:
        typer.echo("error: the answer is empty: nothing sent", err=True)
        raise typer.Exit(EXIT_USAGE)
    if len(text) > MAX_ANSWER:
        typer.echo(f"error: the answer is too long: at most {MAX_ANSWER} characters ({len(text)} given)", err=True)
        raise typer.Exit(EXIT_USAGE)
    return text


def _pending_question(api: MakimaApi, cid: str, given: str) -> dict[str, Any]:
    found = resolve_question(api.questions(cid), given, cid)
    if found["status"] != "pending":
        fail("CONFLICT", f"question {short_id(found['id'])} is already answered: {one_line(found.get('answer') or '')}")
    return found


@app.command("answer")
def answer(
    ctx: typer.Context,
    contract_id: ContractId,
    question_id: Annotated[
        str,
        typer.Argument(
            callback=_check_question_id,
            help="Question id: a full UUID or a unique prefix (see `questions`).",
            show_default=False,
        ),
    ],
    text: Annotated[
        str | None,
        typer.Argument(
            metavar="TEXT",
            help="The answer; - reads it from standard input; left out on a terminal, $EDITOR opens.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        TextFormat,
        typer.Option("--format", help='text, or json ({"question": <answered>, "contract": <contract>}).'),
    ] = TextFormat.text,
    expected_version: ExpectedVersion = None,
) -> None:
    """Answer a supervisor's question. The contract stops waiting for input once its last pending
    question is answered; the supervisor collects the answer on its next heartbeat.

    \b
    Examples:
      makima contracts answer 3f6c2a1e 9b1d07c2 "Use PostgreSQL"
      makima contracts answer 3f6c2a1e 9b1d07c2 - < answer.md
      makima contracts answer 3f6c2a1e 9b1d07c2          # opens $EDITOR
      makima contracts answer 3f6c2a1e 9b1d07c2 "Use PostgreSQL" --expected-version 4
    """
    api, cid = open_contract(ctx, contract_id)
    question = _pending_question(api, cid, question_id)
    reply = answer_text(text, question)
    answered = api.answer_question(cid, str(question["id"]), reply, expected_version=expected_version)
    contract = api.contract(cid)
    if fmt is TextFormat.json:
        print_json({"question": answered, "contract": contract})
        return
    waiting = ""
    if contract.get("waiting_for"):  # "question:<uuid>": the id at the width the other commands show
        kind, _, ref = str(contract["waiting_for"]).partition(":")
        waiting = f", waiting for {kind}" + (f" {short_id(ref)}" if ref else "")
    typer.echo(
        f"{short_id(cid)} question {short_id(answered['id'])} answered; contract {contract['status']}{waiting} "
        f"(version {contract['version']})"
    )
