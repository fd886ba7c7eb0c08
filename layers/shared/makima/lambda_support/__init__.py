"""What turns the shared package into Lambda functions: the per-container database, the HTTP handler
factory (FastAPI behind Mangum), the token authorizer and the observability every handler shares.

Nothing here runs on the local stack; nothing in the domain, services or API imports from here.
"""
