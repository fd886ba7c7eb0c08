"""Scheduled: worktrees removed longer ago than the retention are deleted."""

from makima.lambda_support.scheduled import make_scheduled_handler, worktree_retention

handler = make_scheduled_handler(worktree_retention)
