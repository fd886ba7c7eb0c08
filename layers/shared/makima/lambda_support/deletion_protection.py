"""The database instance's deletion protection, as a CloudFormation custom resource served by the migration
function (``DatabaseProtection``, of type ``Custom::DatabaseDeletionProtection``, in template.yaml).

Why not the instance's own ``DeletionProtection`` property: RDS refuses to delete a protected instance,
so the rollback of a failed first deploy, and a stack delete, would stop at the instance
(ROLLBACK_FAILED / DELETE_FAILED) and its fixed name would collide on the next try. The resource depends
on the instance, so CloudFormation creates it after the instance and deletes it before:

- ``Create`` / ``Update``: protection as the ``DeletionProtection`` property says (the template's
  ``DatabaseDeletionProtection`` parameter, "true" by default), through ``ModifyDBInstance``. The
  instance is then protected against a delete outside CloudFormation. RDS applies a change of deletion
  protection at once whatever ``ApplyImmediately`` says; the call says False, because True would also
  apply at once every modification waiting for the maintenance window (an instance class change, with
  its downtime).
- ``Delete``: protection off, so that CloudFormation can delete the instance next (which still leaves
  its final snapshot: ``DeletionPolicy: Snapshot``). An instance that is gone already is success.

The physical resource id is the instance's identifier. RDS briefly refuses modifications while the
instance is busy (its first backup right after creation): the call is tried again, within the
invocation's time. Importing this module does not import boto3.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from aws_lambda_powertools.utilities.data_classes import CloudFormationCustomResourceEvent

from makima.lambda_support.observability import logger

RESOURCE_TYPE = "Custom::DatabaseDeletionProtection"
# InvalidDBInstanceState: the instance is busy (backing up, modifying); RDS accepts the change after.
BUSY_CODES = frozenset({"InvalidDBInstanceState", "InvalidDBInstanceStateFault"})
BUSY_PAUSE_SECONDS = 15.0
BUSY_WAIT_SECONDS = 600.0
GONE_CODES = frozenset({"DBInstanceNotFound", "DBInstanceNotFoundFault"})


class RdsClient(Protocol):
    """What this module calls of boto3's RDS client."""

    def modify_db_instance(self, **kwargs: Any) -> Any: ...


def rds_client() -> RdsClient:
    """boto3's RDS client (reached through the NAT gateway: RDS's API has no endpoint in the VPC)."""
    import boto3
    from botocore.config import Config

    client: RdsClient = boto3.client(
        "rds", config=Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 5, "mode": "standard"})
    )
    return client


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(((response or {}).get("Error") or {}).get("Code") or "") if isinstance(response, dict) else ""


def set_deletion_protection(rds: RdsClient, instance: str, protect: bool, *, seconds: float) -> None:
    """Turn ``instance``'s deletion protection on or off (at once: RDS does not defer this one), trying
    again for up to ``seconds`` while RDS says the instance is busy. Raises botocore's ``ClientError``
    otherwise."""
    deadline = time.monotonic() + max(0.0, seconds)
    while True:
        try:
            rds.modify_db_instance(DBInstanceIdentifier=instance, DeletionProtection=protect, ApplyImmediately=False)
            return
        except Exception as exc:
            left = deadline - time.monotonic()
            if _error_code(exc) not in BUSY_CODES or left <= 0:
                raise
            logger.info("the instance is busy; trying again", extra={"instance": instance, "seconds_left": left})
            time.sleep(min(BUSY_PAUSE_SECONDS, left))


def physical_id(request: CloudFormationCustomResourceEvent) -> str:
    """The instance's identifier: what a Delete names (as the Create answered it)."""
    return str((request.resource_properties or {}).get("DBInstanceIdentifier") or request.physical_resource_id or "")


def answer(request: CloudFormationCustomResourceEvent, seconds: float) -> tuple[str, dict[str, Any]]:
    """Do what ``request`` asks of the instance's protection, within ``seconds`` (at most
    ``BUSY_WAIT_SECONDS`` of waiting for a busy instance). Returns the reason and
    the data of a SUCCESS answer; raises (botocore's ``ClientError``, a network error) for a FAILED one."""
    seconds = min(seconds, BUSY_WAIT_SECONDS)
    instance = physical_id(request)
    if not instance:
        raise ValueError("DBInstanceIdentifier is missing")
    kind = str(request.request_type)
    if kind == "Delete":
        try:
            set_deletion_protection(rds_client(), instance, False, seconds=seconds)
        except Exception as exc:
            if _error_code(exc) not in GONE_CODES:
                raise
            logger.info("the instance is gone already", extra={"instance": instance})
            return f"{instance} does not exist: nothing to unprotect", {}
        logger.info("deletion protection off, for the instance's deletion", extra={"instance": instance})
        return f"deletion protection of {instance} off: CloudFormation may delete it", {"DeletionProtection": False}
    if kind not in {"Create", "Update"}:
        raise ValueError(f"unknown RequestType {kind!r}")
    protect = str((request.resource_properties or {}).get("DeletionProtection", "true")).strip().lower() == "true"
    set_deletion_protection(rds_client(), instance, protect, seconds=seconds)
    logger.info("deletion protection set", extra={"instance": instance, "protected": protect})
    return f"deletion protection of {instance} {'on' if protect else 'off'}", {"DeletionProtection": protect}
