-- LangGraph interrupts as owner questions (issue 18): each interrupt a bound thread stores (an
-- INTERRUPT pending write) is asked as a question of the thread's contract, once. This table links
-- the interrupt (its LangGraph id, unique in a thread's namespace) to that question, so a retried or
-- re-run write asks nothing more, and a read of the checkpoint carries the owner's answer back to the
-- saver, which resumes the graph with it.
--
-- Safe while the API serves writes: a new table, referenced by nothing; its index is built on the
-- empty table in the same transaction.
-- depends: 0022_langgraph_checkpoints

CREATE TABLE checkpoint_interrupts (
    owner_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    thread_id      text NOT NULL,
    checkpoint_ns  text NOT NULL DEFAULT '',
    interrupt_id   text NOT NULL,
    -- where the interrupt was written: the checkpoint and the task that stopped
    checkpoint_id  text NOT NULL,
    task_id        text NOT NULL,
    contract_id    uuid NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    question_id    uuid NOT NULL REFERENCES questions (id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, thread_id, checkpoint_ns, interrupt_id)
);
-- A checkpoint's interrupts (its tuple, and the acknowledgement of a task's answers).
CREATE INDEX idx_checkpoint_interrupts_checkpoint
    ON checkpoint_interrupts (owner_id, thread_id, checkpoint_ns, checkpoint_id, task_id);
