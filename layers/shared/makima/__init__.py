"""makima contracts: the shared package (domain, data access, services, HTTP API, adapters).

Locally it is an ordinary installed package; on AWS the same tree ships as the Lambda layer.
"""

__version__ = "0.1.0"
