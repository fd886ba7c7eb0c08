"""Scheduled: continues the batched data backfills a migration left unfinished (one lookup each when none is)."""

from makima.lambda_support.scheduled import backfill, make_scheduled_handler

handler = make_scheduled_handler(backfill)
