"""Scheduled: heartbeat history partitions are created ahead and those past retention dropped."""

from makima.lambda_support.scheduled import heartbeat_retention, make_scheduled_handler

handler = make_scheduled_handler(heartbeat_retention)
