"""EventBridge target: each published event to the monitor connections whose filter takes it."""

from makima.lambda_support.websocket import broadcaster_handler

handler = broadcaster_handler
