"""The largest integers the API accepts, chosen from the PostgreSQL column each one lands in.

A value the column cannot hold would fail in the database (a 400 for the whole request, or a whole
heartbeat batch); one at the very top of a counter's range would be stored and then block the counter
(``seq`` at 2^63-1: every later save must be larger, so every later save is a 409). So each request
integer carries ``ge``/``le`` in its schema, within its column's type and below its top:

- ``integer`` columns (versions, generations, capacities, conversation offsets) and query sizes:
  at most ``INT4_MAX``;
- ``bigint`` counters a client drives (a supervisor's save ``seq``): at most ``MAX_SEQ`` = 2^53 - 1,
  the largest integer every JSON client reads exactly, far below bigint's 2^63 - 1 so ``+1`` never
  overflows; and a save may move ``seq`` up by at most ``MAX_SEQ_STEP``, so a client counting by one
  can never be pushed to the top by one wrong value (it would need 2^21 maximal jumps);
- ``bigint`` ids a client passes back (``after_id`` of the event log and the chat): at most ``MAX_ID``
  (2^62), never reached by an identity column and still within bigint.

``tests/unit/test_bounds.py`` checks every integer of the OpenAPI document against these.
"""

from __future__ import annotations

INT4_MAX = 2**31 - 1
MAX_SEQ = 2**53 - 1
MAX_SEQ_STEP = 2**32
MAX_ID = 2**62
