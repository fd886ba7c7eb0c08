"""WebSocket monitor routes ($connect, $default, $disconnect): token auth, filters, resume."""

from makima.lambda_support.websocket import monitor_handler

handler = monitor_handler
