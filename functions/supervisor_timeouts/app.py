"""Scheduled: supervisors (and daemons) silent for longer than the heartbeat timeout are marked dead."""

from makima.lambda_support.scheduled import make_scheduled_handler, supervisor_timeouts

handler = make_scheduled_handler(supervisor_timeouts)
