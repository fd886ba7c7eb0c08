"""The data-access layer: every SQL statement of the service lives in this package.

Modules are grouped by aggregate (contracts, tasks, questions, chat, events, users, contract_types).
Functions take an open ``psycopg.Connection`` inside the caller's transaction, so a service can
compose several of them and commit a change together with its event row.
"""
