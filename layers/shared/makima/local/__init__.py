"""The local stack: the whole service on one machine, no Docker, no AWS account."""
