"""The HTTP API: FastAPI routers over the services, one app factory, one error mapping."""
