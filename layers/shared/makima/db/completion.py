"""What a phase gate counts, read in one round trip (services/completion.py: ``snapshot``).

The gate of a phase looks at three tables: the deliverables completed in the phase, the (non-supervisor)
tasks spawned in it, and the contract's pending questions. They were three statements on every
evaluation — after every status move to ``active``, every deliverable, every task change (issue 15:
"fewer round trips"); one statement of three sub-selects reads the same rows, each by its own index.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from makima.db.connection import Conn


@dataclass(frozen=True, slots=True)
class PhaseWork:
    completed: frozenset[str]  # deliverable ids completed in the phase
    tasks: tuple[tuple[str, str], ...]  # (name, status) of its tasks, oldest first
    pending_questions: int  # the contract's, whatever their phase


def phase_work(conn: Conn, contract_id: UUID, phase: str) -> PhaseWork:
    row = conn.execute(
        """
        SELECT ARRAY(SELECT deliverable_id FROM completed_deliverables
                      WHERE contract_id = %(contract)s AND phase = %(phase)s) AS completed,
               ARRAY(SELECT ARRAY[name, status::text] FROM tasks
                      WHERE contract_id = %(contract)s AND phase = %(phase)s AND NOT is_supervisor
                      ORDER BY created_at, id) AS tasks,
               (SELECT count(*) FROM questions
                 WHERE contract_id = %(contract)s AND status = 'pending') AS pending
        """,
        {"contract": contract_id, "phase": phase},
    ).fetchone()
    assert row is not None  # a SELECT without FROM returns its one row
    return PhaseWork(
        completed=frozenset(row["completed"]),
        tasks=tuple((str(name), str(status)) for name, status in row["tasks"]),
        pending_questions=int(row["pending"]),
    )
