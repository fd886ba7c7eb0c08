"""The database's deletion protection as a custom resource (``DatabaseProtection`` in template.yaml, served
by the migration function): a CloudFormation request, RDS mocked by moto (botocore's Stubber where moto
lacks the behaviour), the answer PUT to a local HTTP server standing in for the pre-signed S3 URL.

Why a custom resource rather than the instance's own DeletionProtection property: RDS refuses to delete a
protected instance, so a failed first deploy's rollback (and a stack delete) would end in ROLLBACK_FAILED /
DELETE_FAILED. The resource turns protection on after the instance exists and off when it is deleted,
before CloudFormation deletes the instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from tests.integration.cfn_response import LongContext, ResponseEndpoint
from tests.integration.test_lambda_handlers import handler_of, load_event

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:No application metrics to publish"),
]

REGION = "eu-west-1"
INSTANCE = "makima-contracts-db"
RESOURCE_TYPE = "Custom::DatabaseDeletionProtection"


@pytest.fixture
def rds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's RDS with the stack's instance in it, unprotected, as CloudFormation creates it; the
    function's database unreachable (this resource must never need it)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://makima@127.0.0.1:1/makima?connect_timeout=1")
    monkeypatch.setenv("MAKIMA_MIGRATE_WAIT_SECONDS", "0")
    with mock_aws():
        client = boto3.client("rds", region_name=REGION)
        client.create_db_instance(
            DBInstanceIdentifier=INSTANCE,
            Engine="postgres",
            DBInstanceClass="db.t4g.small",
            MasterUsername="makima",
            MasterUserPassword="not-a-secret-0123456789",
            AllocatedStorage=20,
        )
        yield client


def protection(rds: Any, instance: str = INSTANCE) -> bool:
    return bool(rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["DeletionProtection"])


def request(
    kind: str, endpoint: ResponseEndpoint, wanted: str = "true", old: str | None = None, instance: str = INSTANCE
) -> dict[str, Any]:
    """CloudFormation's ``kind`` request (create/update/delete) for the resource, protection ``wanted``."""
    event = load_event(f"cloudformation/{kind}")
    event["ResponseURL"] = f"{endpoint.url}/response/{kind}?X-Amz-Signature=abc"
    event["LogicalResourceId"] = "DatabaseProtection"
    event["ResourceType"] = RESOURCE_TYPE
    properties = {"ServiceToken": event["ServiceToken"], "DBInstanceIdentifier": instance, "DeletionProtection": wanted}
    event["ResourceProperties"] = properties
    if kind == "create":
        event.pop("PhysicalResourceId", None)
    else:
        event["PhysicalResourceId"] = instance
    if kind == "update":
        event["OldResourceProperties"] = {**properties, "DeletionProtection": old or wanted}
    return event


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return handler_of("migrate")(event, LongContext())


def test_create_turns_deletion_protection_on(rds: Any, endpoint: ResponseEndpoint) -> None:
    # Given the instance CloudFormation created without protection
    assert protection(rds) is False

    # When the resource is created with the parameter's default ("true")
    invoke(request("create", endpoint))

    # Then RDS protects the instance, and CloudFormation got SUCCESS naming it as the physical resource
    assert protection(rds) is True
    answer = endpoint.only().body
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["PhysicalResourceId"] == INSTANCE
    assert answer["Data"] == {"DeletionProtection": True}


def test_update_follows_the_parameter(rds: Any, endpoint: ResponseEndpoint) -> None:
    invoke(request("create", endpoint))

    # When the parameter is set to "false" (an update), then back to "true"
    invoke(request("update", endpoint, wanted="false", old="true"))
    off = protection(rds)
    invoke(request("update", endpoint, wanted="true", old="false"))

    # Then the instance follows it, and the physical resource stays the same
    assert off is False
    assert protection(rds) is True
    assert [r.body["Status"] for r in endpoint.received] == ["SUCCESS"] * 3
    assert {r.body["PhysicalResourceId"] for r in endpoint.received} == {INSTANCE}


def test_a_create_with_the_parameter_false_leaves_the_instance_unprotected(
    rds: Any, endpoint: ResponseEndpoint
) -> None:
    invoke(request("create", endpoint, wanted="false"))
    assert protection(rds) is False
    assert endpoint.only().body["Status"] == "SUCCESS"


def test_delete_turns_it_off_so_that_cloudformation_can_delete_the_instance(
    rds: Any, endpoint: ResponseEndpoint
) -> None:
    # Given a protected instance: RDS refuses to delete it
    invoke(request("create", endpoint))
    with pytest.raises(rds.exceptions.ClientError, match="protect"):
        rds.delete_db_instance(DBInstanceIdentifier=INSTANCE, FinalDBSnapshotIdentifier="final-1")

    # When the resource is deleted (a stack delete, or a failed create's rollback: it depends on the
    # instance, so CloudFormation deletes it first)
    invoke(request("delete", endpoint))

    # Then protection is off, and the instance can be deleted, with its final snapshot
    answer = endpoint.received[-1].body
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["PhysicalResourceId"] == INSTANCE
    assert protection(rds) is False
    rds.delete_db_instance(DBInstanceIdentifier=INSTANCE, FinalDBSnapshotIdentifier="final-2")
    snapshots = rds.describe_db_snapshots(DBSnapshotIdentifier="final-2")["DBSnapshots"]
    assert [s["DBInstanceIdentifier"] for s in snapshots] == [INSTANCE]


def test_delete_succeeds_when_the_instance_is_gone_already(rds: Any, endpoint: ResponseEndpoint) -> None:
    # Given an instance that no longer exists (deleted by hand, or never created)
    rds.delete_db_instance(DBInstanceIdentifier=INSTANCE, SkipFinalSnapshot=True)

    # When the resource is deleted, then there is nothing to unprotect: SUCCESS
    invoke(request("delete", endpoint))
    answer = endpoint.only().body
    assert answer["Status"] == "SUCCESS", answer["Reason"]


def test_create_for_a_missing_instance_answers_failed(rds: Any, endpoint: ResponseEndpoint) -> None:
    invoke(request("create", endpoint, instance="no-such-db"))
    answer = endpoint.only().body
    assert answer["Status"] == "FAILED"
    assert "DBInstanceNotFound" in answer["Reason"]
    assert answer["PhysicalResourceId"] == "no-such-db"


def test_an_instance_busy_right_after_its_creation_is_tried_again(
    rds: Any, endpoint: ResponseEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given RDS refusing the first modification (the instance is taking its first backup; moto does not
    # do that, so botocore's Stubber answers)
    from makima.lambda_support import deletion_protection

    client = boto3.client("rds", region_name=REGION)
    stubber = Stubber(client)
    # (ApplyImmediately False: True would also apply whatever waits for the maintenance window)
    expected = {"DBInstanceIdentifier": INSTANCE, "DeletionProtection": True, "ApplyImmediately": False}
    stubber.add_client_error(
        "modify_db_instance", "InvalidDBInstanceState", "backing-up", 400, expected_params=expected
    )
    stubber.add_response("modify_db_instance", {"DBInstance": {"DeletionProtection": True}}, expected)
    monkeypatch.setattr(deletion_protection, "rds_client", lambda: client)
    monkeypatch.setattr(deletion_protection, "BUSY_PAUSE_SECONDS", 0.01)

    # When the resource is created
    with stubber:
        invoke(request("create", endpoint))

    # Then the function waited and tried again, and answered SUCCESS
    stubber.assert_no_pending_responses()
    assert endpoint.only().body["Status"] == "SUCCESS"
