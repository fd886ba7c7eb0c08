"""The client SDK for daemons and supervisors (the service's clients), and a scripted reference
supervisor that drives real contracts without an LLM.

- ``MakimaApi`` (``api``): the HTTP API with retries (exponential backoff + jitter on connection errors,
  503 and 429; never on other 4xx) and ``ApiError`` carrying the API's error code.
- ``HeartbeatLoop`` (``heartbeat``): beats at an interval with jitter on a background thread.
- ``SupervisorSession`` (``session``): a supervisor's identity, save points (increasing ``seq``, current
  generation), heartbeat message and answers, and the restoration handshake.
- ``Daemon`` (``daemon``): registers, hosts supervisors on threads, batches their heartbeats.
- ``ReferenceSupervisor`` (``reference``): the scripted supervisor; ``python -m makima.client.reference``.
- ``Fleet`` / ``run_fleet_in_background`` (``fleet``): the demo fleet behind ``makima demo``.

Only the supervisor enums are shared with the server code (``makima.domain.supervisors``).
"""

from makima.client.api import ApiError, ApiUnreachable, MakimaApi, RetryPolicy, StaleSave, Superseded
from makima.client.daemon import Daemon
from makima.client.heartbeat import HeartbeatAnswer, HeartbeatLoop
from makima.client.session import Restored, SupervisorSession

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "Daemon",
    "HeartbeatAnswer",
    "HeartbeatLoop",
    "MakimaApi",
    "Restored",
    "RetryPolicy",
    "StaleSave",
    "Superseded",
    "SupervisorSession",
]
