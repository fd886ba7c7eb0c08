"""GET /metrics: the seed's Prometheus metrics, fleet-wide, for admins and metrics tokens.

At the root, not under /api/v1: ``/metrics`` is where Prometheus looks by default. It is not public
like health: the counts span every owner, so it takes a bearer token like every other endpoint and
answers 403 ``FORBIDDEN`` to other callers. Prometheus scrapes with a token of kind ``metrics``
(issued by an admin to an admin user; ``bearer_token`` in its scrape config), which this route alone
accepts: ``Scraper`` instead of ``Caller``, every other route refuses it.
Part of the ``monitoring_dashboard`` feature: 404 ``FEATURE_DISABLED`` while it is off.
"""

from __future__ import annotations

from fastapi import Response

from makima.api.deps import DB, Config, Scraper, feature
from makima.api.routers._common import make_router
from makima.errors import FeatureDisabled
from makima.flags import Flag
from makima.services import metrics as svc
from makima.services.stale import threshold_of

router = make_router("metrics", FeatureDisabled, prefix="")
router.dependencies.append(feature(Flag.MONITORING_DASHBOARD))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"}},
)
def metrics(db: DB, caller: Scraper, config: Config) -> Response:
    snap = svc.snapshot(db, caller, stale_threshold=threshold_of(config.contracts))
    return Response(content=svc.exposition(snap), media_type=svc.CONTENT_TYPE)
