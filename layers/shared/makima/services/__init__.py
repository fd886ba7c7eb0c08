"""Use cases: each public function is one transaction that validates, changes and records an event.

Services take a ``Database`` and a ``Principal``; they raise ``makima.errors`` and never build
responses, so the HTTP API, the Lambda handlers and the CLI share them unchanged.
"""
