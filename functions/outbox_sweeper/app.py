"""Scheduled: publishes committed events that were left unpublished."""

from makima.lambda_support.scheduled import make_scheduled_handler, outbox_sweeper

handler = make_scheduled_handler(outbox_sweeper)
