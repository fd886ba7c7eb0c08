"""Scheduled: contracts idle past the stale threshold get a stale_detected event, once per episode."""

from makima.lambda_support.scheduled import make_scheduled_handler, stale_detector

handler = make_scheduled_handler(stale_detector)
