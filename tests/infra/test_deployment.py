"""What makes the stack survive its first week (issue 14), held on the template and on what SAM makes of
it: parameters that cannot produce a refused create, custom resources whose answer path outlives them,
the NAT per zone, throttling, reserved concurrency, canary deployments that roll back by themselves,
and alarms on the database and its proxy."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from makima.config import ContractsConfig, DatabaseConfig, MonitorConfig, RateLimitsConfig
from makima.db.migrate import own_session
from makima.lambda_support import observability
from makima.lambda_support.parameters_check import RefusedParameters, settings_of
from tests.infra.cfn import (
    Template,
    depends_on,
    http_functions,
    http_routes,
    load_template,
    of_type,
    referenced,
    resolve,
    resources_of,
)

pytestmark = pytest.mark.infra

# Lambda keeps 100 concurrent executions of an account unreserved; 1,000 is a region's default quota.
ACCOUNT_CONCURRENCY = 1000
UNRESERVED_MINIMUM = 100
# API Gateway's account-level throttle per region (HTTP APIs): a stage limit above it means nothing.
ACCOUNT_RATE, ACCOUNT_BURST = 10_000, 5_000


@pytest.fixture(scope="module")
def raw() -> Template:
    return load_template()


def _closure(template: Template, name: str) -> set[str]:
    """Every resource ``name`` waits for: its DependsOn and the resources its properties refer to,
    transitively (what CloudFormation creates before it and deletes after it)."""
    resources = resources_of(template)
    seen: set[str] = set()
    todo = [name]
    while todo:
        resource = resources[todo.pop()]
        for ref in depends_on(resource) | referenced(resource.get("Properties", {})):
            if ref in resources and ref not in seen:
                seen.add(ref)
                todo.append(ref)
    return seen


# --- Parameters that cannot break the create ----------------------------------------------------------------


def test_the_storage_ceiling_is_always_above_the_allocated_storage(raw: Template) -> None:
    # Given the storage parameter and the instance's properties
    parameter = raw["Parameters"]["DatabaseAllocatedStorage"]
    db = raw["Resources"]["Database"]["Properties"]
    ceilings = raw["Mappings"]["DatabaseStorageCeilings"]

    # Then the size is one of a list, the ceiling looked up from it ...
    assert "MaxValue" not in parameter
    assert db["AllocatedStorage"] == {"Ref": "DatabaseAllocatedStorage"}
    assert db["MaxAllocatedStorage"] == {
        "Fn::FindInMap": ["DatabaseStorageCeilings", {"Ref": "DatabaseAllocatedStorage"}, "Max"]
    }
    # ... and for every size offered, RDS gets a ceiling above it (five times it, as the description
    # says) and within gp3's 64 TiB; the mapping offers nothing else
    assert int(parameter["Default"]) in parameter["AllowedValues"]
    assert {int(k) for k in ceilings} == set(parameter["AllowedValues"])
    for size in parameter["AllowedValues"]:
        ceiling = ceilings[str(size)]["Max"]
        assert size >= 20
        assert ceiling == 5 * size
        assert size < ceiling <= 65_536


def test_the_engine_is_the_major_version_with_automatic_minor_upgrades(raw: Template) -> None:
    parameter = raw["Parameters"]["DatabaseEngineVersion"]
    db = raw["Resources"]["Database"]["Properties"]
    assert parameter["Default"] == "16"
    assert re.fullmatch(parameter["AllowedPattern"], "16")
    assert re.fullmatch(parameter["AllowedPattern"], "16.13")
    assert not re.fullmatch(parameter["AllowedPattern"], "15.4")
    assert db["EngineVersion"] == {"Ref": "DatabaseEngineVersion"}
    assert db["AutoMinorVersionUpgrade"] is True


@pytest.mark.parametrize(
    ("cidr", "accepted"),
    [
        ("10.42.0.0/16", True),
        ("172.31.0.0/16", True),
        ("10.42.1.0/16", False),  # host bits set: EC2 refuses it
        ("10.256.0.0/16", False),
        ("999.1.0.0/16", False),
        ("10.42.0.0/24", False),
    ],
)
def test_the_vpc_range_is_a_valid_16(raw: Template, cidr: str, accepted: bool) -> None:
    pattern = raw["Parameters"]["VpcCidr"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, cidr)) is accepted
    if accepted:
        assert ipaddress.ip_network(cidr).prefixlen == 16  # strict: no host bits


def _settings_variables(raw: Template) -> dict[str, str]:
    """Every MAKIMA_* variable any function gets from a parameter -> that parameter."""
    environments = [raw["Globals"]["Function"]["Environment"]["Variables"]] + [
        (fn["Properties"].get("Environment") or {}).get("Variables") or {}
        for fn in raw["Resources"].values()
        if fn["Type"] == "AWS::Serverless::Function"
    ]
    return {
        name: value["Ref"]
        for env in environments
        for name, value in env.items()
        if name.startswith("MAKIMA_")
        and "__" in name
        and isinstance(value, dict)
        and value.get("Ref") in raw["Parameters"]
    }


def test_the_parameters_check_sees_every_setting_the_functions_get_and_runs_first(raw: Template) -> None:
    # Given the check's properties and every setting any function reads from a parameter
    check = raw["Resources"]["ParametersCheck"]
    settings = {name: value["Ref"] for name, value in check["Properties"]["Settings"].items()}

    # Then the check is asked about exactly those, with the same parameters
    assert settings == _settings_variables(raw)
    assert check["Properties"]["ServiceToken"] == {"Fn::GetAtt": ["ParametersCheckFunction", "Arn"]}
    # And the database and the migrations wait for it: a refused combination fails before anything slow
    # is created, or anything moved
    assert "ParametersCheck" in depends_on(raw["Resources"]["Database"])
    assert "ParametersCheck" in depends_on(raw["Resources"]["DatabaseMigrations"])
    # And every new layer runs it again, so that a layer that cannot start (built for the other
    # Architecture) fails the deploy within its ServiceTimeout, before the migrations' 20 minutes
    assert check["Properties"]["SharedLayer"] == {"Ref": "SharedLayer"}
    migrations = raw["Resources"]["DatabaseMigrations"]["Properties"]
    assert int(check["Properties"]["ServiceTimeout"]) <= 300 < int(migrations["ServiceTimeout"])


@pytest.mark.parametrize(
    ("architecture", "runtime", "allowed"),
    [("arm64", "python3.11", False), ("arm64", "python3.12", True), ("x86_64", "python3.11", True)],
)
def test_a_runtime_sam_cannot_build_for_the_architecture_is_refused_before_the_change_set(
    raw: Template, architecture: str, runtime: str, allowed: bool
) -> None:
    # Given CloudFormation's rules, evaluated for the two parameters
    parameters = {"Architecture": architecture, "Runtime": runtime}
    verdicts = []
    for rule in raw["Rules"].values():
        if resolve(rule["RuleCondition"], raw, parameters):
            verdicts += [resolve(a["Assert"], raw, parameters) for a in rule["Assertions"]]
    # Then python3.11 on arm64 is refused (psycopg-binary's aarch64 wheels need a newer glibc than
    # Lambda's python3.11 has), everything else passes
    assert all(verdicts) is allowed
    assert runtime in raw["Parameters"]["Runtime"]["AllowedValues"]


def _values(parameter: dict[str, Any]) -> list[str]:
    """The edge values CloudFormation lets through for ``parameter``."""
    if "AllowedValues" in parameter:
        return [str(v) for v in parameter["AllowedValues"]]
    if parameter["Type"] == "Number":
        return [str(parameter["MinValue"]), str(parameter["MaxValue"])]
    return [str(parameter["Default"])]


def test_each_parameter_alone_makes_settings_the_functions_accept_but_the_known_pairs(raw: Template) -> None:
    # Given every setting parameter at each edge CloudFormation allows, the others at their defaults
    variables = _settings_variables(raw)
    parameters = raw["Parameters"]
    defaults = {name: str(parameters[p]["Default"]) for name, p in variables.items()}
    refused: set[tuple[str, str]] = set()
    for name, parameter_name in variables.items():
        for value in _values(parameters[parameter_name]):
            try:
                settings_of({**defaults, name: value})
            except RefusedParameters:
                refused.add((parameter_name, value))

    # Then the settings accept each, except the pair CloudFormation cannot compare (a heartbeat timeout
    # under two intervals), which the parameters check refuses before the database exists
    assert refused == {("HeartbeatIntervalSeconds", "3600"), ("HeartbeatTimeoutSeconds", "1")}
    # And the template's defaults are the code's
    made = settings_of(defaults)
    assert made.contracts == ContractsConfig()
    assert made.rate_limits == RateLimitsConfig()
    assert made.database == DatabaseConfig()
    assert made.monitor == MonitorConfig()
    assert made.dashboard.extra_api_urls == made.dashboard.extra_monitor_urls == []


# --- Deletes and rollbacks: the custom resources' answer path --------------------------------------------------


def test_every_custom_resource_outlives_the_path_of_its_answer(translated: Template) -> None:
    # Given the custom resources, the S3 gateway endpoint and the private route tables
    resources = resources_of(translated)
    customs = {
        name: r
        for name, r in resources.items()
        if r["Type"] == "AWS::CloudFormation::CustomResource" or r["Type"].startswith("Custom::")
    }
    (s3_name,) = [
        n
        for n, r in of_type(translated, "AWS::EC2::VPCEndpoint").items()
        if r["Properties"]["VpcEndpointType"] == "Gateway"
    ]
    s3 = resources[s3_name]["Properties"]
    assert s3["ServiceName"] == {"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"}
    associations = of_type(translated, "AWS::EC2::SubnetRouteTableAssociation")
    assert customs

    for name, custom in customs.items():
        (function,) = referenced(custom["Properties"]["ServiceToken"])
        subnets = referenced(resources[function]["Properties"]["VpcConfig"]["SubnetIds"])
        waits_for = _closure(translated, name)
        # Then it waits for the endpoint and for the association of each subnet its function runs in
        # (created before it, deleted only after its last answer) ...
        assert s3_name in depends_on(custom), name
        for subnet in subnets:
            (association,) = [a for a, r in associations.items() if r["Properties"]["SubnetId"] == {"Ref": subnet}]
            assert association in depends_on(custom), f"{name} must DependsOn {association}"
            # ... and the endpoint routes every route table those subnets may use
            tables = referenced(associations[association]["Properties"]["RouteTableId"])
            assert tables <= referenced(s3["RouteTableIds"]), (name, subnet)
        # And its function's log group exists before it and goes after it
        assert f"{function}LogGroup" in waits_for, name
    # And the migrations, which also reach the database and the secret, wait for the NAT path as well
    migrations = depends_on(resources["DatabaseMigrations"])
    assert {"PrivateDefaultRoute", "PublicDefaultRoute", "PublicSubnetRouteTableAssociation"} <= migrations
    assert "InternetGatewayAttachment" in _closure(translated, "DatabaseMigrations")


# --- Migrations reach the instance itself -------------------------------------------------------------------


def test_the_migrations_connect_to_the_instance_because_the_proxy_refuses_their_sessions(raw: Template) -> None:
    # Given migrate's own sessions: they lift the role's time limits with libpq startup options, which
    # RDS Proxy refuses ("Feature not supported: RDS Proxy currently doesn't support command-line options")
    url = "postgresql://makima:secret@proxy.example:5432/makima?sslmode=require"
    assert "statement_timeout=0" in str(conninfo_to_dict(own_session(url))["options"])
    migrate = raw["Resources"]["MigrateFunction"]["Properties"]

    # Then the migration function connects to the instance's own endpoint, through a group of its own
    # that the database admits, while every other function keeps the proxy (test_stack.py)
    assert migrate["Environment"]["Variables"]["DB_HOST"] == {"Fn::GetAtt": ["Database", "Endpoint.Address"]}
    assert migrate["VpcConfig"]["SecurityGroupIds"] == [{"Ref": "MigrateSecurityGroup"}]
    ingress = raw["Resources"]["DatabaseFromMigrateIngress"]["Properties"]
    assert ingress["GroupId"] == {"Ref": "DatabaseSecurityGroup"}
    assert ingress["SourceSecurityGroupId"] == {"Ref": "MigrateSecurityGroup"}
    assert (ingress["FromPort"], ingress["ToPort"]) == (5432, 5432)


# --- Network: a NAT gateway per zone, on one parameter ---------------------------------------------------------


@pytest.mark.parametrize("per_zone", ["false", "true"])
def test_each_private_subnet_leaves_through_a_nat_gateway_in_its_zone_or_the_one(raw: Template, per_zone: str) -> None:
    resources = raw["Resources"]
    parameters = {"NatGatewayPerZone": per_zone}
    exists = {
        name
        for name, r in resources.items()
        if "Condition" not in r or resolve(raw["Conditions"][r["Condition"]], raw, parameters)
    }

    def nat_of(private_subnet: str) -> str:
        (association,) = [
            r
            for r in resources.values()
            if r["Type"] == "AWS::EC2::SubnetRouteTableAssociation"
            and r["Properties"]["SubnetId"] == {"Ref": private_subnet}
        ]
        (table,) = referenced(resolve(association["Properties"]["RouteTableId"], raw, parameters))
        assert table in exists
        (route,) = [
            r
            for n, r in resources.items()
            if n in exists and r["Type"] == "AWS::EC2::Route" and r["Properties"]["RouteTableId"] == {"Ref": table}
        ]
        (nat,) = referenced(route["Properties"]["NatGatewayId"])
        return nat

    def zone(subnet: str) -> Any:
        return resources[subnet]["Properties"]["AvailabilityZone"]

    nat_a, nat_b = nat_of("PrivateSubnetA"), nat_of("PrivateSubnetB")
    nat_subnet = {nat: referenced(resources[nat]["Properties"]["SubnetId"]).pop() for nat in (nat_a, nat_b)}
    if per_zone == "true":
        # Then each private subnet goes out through the NAT gateway of its own zone
        assert nat_a != nat_b
        assert zone(nat_subnet[nat_a]) == zone("PrivateSubnetA")
        assert zone(nat_subnet[nat_b]) == zone("PrivateSubnetB")
    else:
        # Then both use the one NAT gateway, and the zone-B resources do not exist
        assert nat_a == nat_b == "NatGateway"
        assert not {"NatGatewayB", "PublicSubnetB", "PrivateRouteTableB"} & exists
    # And every subnet is its own /20 block of the VPC's range
    blocks = [resources[n]["Properties"]["CidrBlock"] for n in exists if resources[n]["Type"] == "AWS::EC2::Subnet"]
    assert len({b["Fn::Select"][0] for b in blocks}) == len(blocks)
    assert all(b["Fn::Select"][1] == {"Fn::Cidr": [{"Ref": "VpcCidr"}, 4, 12]} for b in blocks)


# --- Throttling and reserved concurrency ---------------------------------------------------------------------


def test_the_apis_are_throttled_from_parameters(raw: Template) -> None:
    # Given the HTTP API's stage settings and the routes the functions serve
    api = raw["Resources"]["HttpApi"]["Properties"]
    served = {f"{method} {path}" for routes in http_routes(raw).values() for method, path in routes}

    def limits(settings: dict[str, Any]) -> tuple[str, str]:
        assert set(settings) == {"ThrottlingRateLimit", "ThrottlingBurstLimit"}
        return settings["ThrottlingRateLimit"]["Ref"], settings["ThrottlingBurstLimit"]["Ref"]

    # Then every route has the stage's limits, the heartbeat routes and the batch route their own
    assert limits(api["DefaultRouteSettings"]) == ("ApiThrottlingRateLimit", "ApiThrottlingBurstLimit")
    routes = {key: limits(value) for key, value in api["RouteSettings"].items()}
    assert set(routes) <= served, "a throttled route no function serves"
    assert routes == {
        "POST /api/v1/contracts/{contract_id}/supervisor/heartbeat": (
            "HeartbeatThrottlingRateLimit",
            "HeartbeatThrottlingBurstLimit",
        ),
        "POST /api/v1/supervisors/heartbeats": ("HeartbeatThrottlingRateLimit", "HeartbeatThrottlingBurstLimit"),
        "POST /api/v1/contracts/batch": ("BatchThrottlingRateLimit", "BatchThrottlingBurstLimit"),
    }
    # And the monitor's stage too; each limit within what the account allows at all
    stage = raw["Resources"]["MonitorStage"]["Properties"]
    assert limits(stage["DefaultRouteSettings"]) == ("MonitorThrottlingRateLimit", "MonitorThrottlingBurstLimit")
    for rate, burst in [*routes.values(), limits(api["DefaultRouteSettings"])]:
        assert 1 <= raw["Parameters"][rate]["MinValue"] <= raw["Parameters"][rate]["MaxValue"] <= ACCOUNT_RATE
        assert 1 <= raw["Parameters"][burst]["MinValue"] <= raw["Parameters"][burst]["MaxValue"] <= ACCOUNT_BURST


RESERVED = {
    "HeartbeatsFunction": ("HeartbeatsReservedConcurrency", "ReserveHeartbeats"),
    "BroadcasterFunction": ("BroadcasterReservedConcurrency", "ReserveBroadcaster"),
    "AuthorizerFunction": ("AuthorizerReservedConcurrency", "ReserveAuthorizer"),
}


def test_reserved_concurrency_for_the_heartbeats_the_broadcaster_and_the_authorizer(raw: Template) -> None:
    functions = {n: r for n, r in raw["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    reserved_by_default = 0
    for name, fn in functions.items():
        value = fn["Properties"].get("ReservedConcurrentExecutions")
        if name not in RESERVED:
            assert value is None, name
            continue
        # Then each of the three reserves its parameter's value, and 0 reserves nothing (Lambda would
        # throttle a function reserved 0 completely)
        parameter, condition = RESERVED[name]
        assert value == {"Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}, name
        for given, reserves in (("0", False), ("1", True), (str(raw["Parameters"][parameter]["Default"]), True)):
            assert resolve(raw["Conditions"][condition], raw, {parameter: given}) is reserves, (name, given)
        assert raw["Parameters"][parameter]["MinValue"] == 0
        reserved_by_default += int(raw["Parameters"][parameter]["Default"])
    # And the defaults leave a default account its unreserved minimum with room to spare
    assert reserved_by_default <= (ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM) // 4


def test_the_proxy_drops_idle_clients_within_minutes(raw: Template) -> None:
    proxy = raw["Resources"]["DatabaseProxy"]["Properties"]
    assert 60 <= proxy["IdleClientTimeout"] <= 600


# --- Deployments: canaries that roll back by themselves -----------------------------------------------------


def test_every_http_function_deploys_through_a_canary_watched_by_alarms(raw: Template, translated: Template) -> None:
    resources = resources_of(translated)
    http = http_functions(raw)
    for name in http:
        props = raw["Resources"][name]["Properties"]
        # Then the API invokes its live alias, which CodeDeploy shifts as DeploymentType says ...
        assert props["AutoPublishAlias"] == "live", name
        preference = props["DeploymentPreference"]
        assert preference["Type"] == {"Ref": "DeploymentType"}, name
        # ... watching the function's own errors and the HTTP functions' 5xx answers
        assert preference["Alarms"] == [{"Ref": f"{name}ErrorsAlarm"}, {"Ref": "HttpFunctionsServerErrorsAlarm"}]
        group = resources[f"{name}DeploymentGroup"]["Properties"]
        assert group["AutoRollbackConfiguration"]["Enabled"] is True
        assert "DEPLOYMENT_STOP_ON_ALARM" in group["AutoRollbackConfiguration"]["Events"]
        assert group["AlarmConfiguration"]["Enabled"] is True
        alias = resources[f"{name}Aliaslive"]
        assert referenced(alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"]["DeploymentGroupName"]) == {
            f"{name}DeploymentGroup"
        }
    # And nothing else is deployed that way (the scheduled jobs and the custom resources have no alias)
    assert {n.removesuffix("DeploymentGroup") for n in of_type(translated, "AWS::CodeDeploy::DeploymentGroup")} == http
    assert raw["Parameters"]["DeploymentType"]["Default"].startswith("Canary")


def test_the_canary_alarm_reads_the_metrics_the_http_functions_emit(raw: Template) -> None:
    # Given what an HTTP function counts per answer (EMF, in the shared namespace with the service dimension)
    emitted = set(observability.count_http_answer.__code__.co_consts)
    alarm = raw["Resources"]["HttpFunctionsServerErrorsAlarm"]["Properties"]
    stats = {m["Id"]: m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m}

    # Then the alarm reads those very metrics, minute by minute
    assert {s["MetricName"] for s in stats.values()} == {"HttpServerErrors", "HttpAnswers"} <= emitted
    for metric in stats.values():
        assert metric["Namespace"] == observability.NAMESPACE
        assert metric["Dimensions"] == [{"Name": "service", "Value": observability.SERVICE}]
    assert all(m["MetricStat"]["Period"] == 60 for m in alarm["Metrics"] if "MetricStat" in m)
    # And it names no API resource: the aliases it guards are what the API refers to (no cycle)
    assert "HttpApi" not in referenced(alarm)


# --- The database and the proxy are watched -------------------------------------------------------------------


def test_alarms_on_the_database_and_its_proxy(raw: Template) -> None:
    alarms = {n: r for n, r in raw["Resources"].items() if r["Type"] == "AWS::CloudWatch::Alarm"}

    def watching(namespace: str, metric: str) -> dict[str, Any]:
        (found,) = [
            (n, a)
            for n, a in alarms.items()
            if a["Properties"].get("Namespace") == namespace and a["Properties"].get("MetricName") == metric
        ]
        return {"name": found[0], **found[1]}

    for metric in ("CPUUtilization", "CPUCreditBalance", "FreeStorageSpace", "FreeableMemory", "DatabaseConnections"):
        alarm = watching("AWS/RDS", metric)
        assert alarm["Properties"]["Dimensions"] == [{"Name": "DBInstanceIdentifier", "Value": {"Ref": "Database"}}]
    for metric in ("DatabaseConnectionsCurrentlySessionPinned", "DatabaseConnectionsBorrowLatency"):
        alarm = watching("AWS/RDS", metric)
        assert alarm["Properties"]["Dimensions"] == [{"Name": "ProxyName", "Value": {"Ref": "DatabaseProxy"}}]
    # A pinned session at all is the alarm (the request paths never pin)
    pinned = watching("AWS/RDS", "DatabaseConnectionsCurrentlySessionPinned")["Properties"]
    assert (pinned["Threshold"], pinned["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    # The credit alarm exists for burstable classes only
    credits = watching("AWS/RDS", "CPUCreditBalance")
    condition = raw["Conditions"][credits["Condition"]]
    for instance_class, burstable in (("db.t4g.small", True), ("db.t3.medium", True), ("db.m7g.large", False)):
        assert resolve(condition, raw, {"DatabaseInstanceClass": instance_class}) is burstable, instance_class
