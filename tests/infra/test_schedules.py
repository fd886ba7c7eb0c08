"""The template's scheduled jobs: the local scheduler's jobs on the same intervals, each with its own
dead-letter queue for the runs that fail.

A scheduled function is ``functions/<job>/``, where ``<job>`` is the name of a job of
``makima.local.scheduler.jobs_for``; its one event is an EventBridge ``Schedule`` whose rate is that job's
interval. EventBridge invokes it asynchronously, so the runs that still fail after Lambda's retries
must land somewhere visible: an SQS queue of its own (an on-failure destination, or a dead-letter queue),
which also takes the events the schedule could not deliver.

The stale detector's rate is not a literal: it is built from the ``StaleDetectionIntervalSeconds``
parameter (``[contracts] stale_detection_interval_seconds``) through the ``StaleDetectionSchedules``
mapping, since CloudFormation cannot divide; the tests read it under the parameter's default, and check
every value the parameter allows maps to exactly that interval.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from makima.config import ContractsConfig, Settings
from makima.lambda_support.runtime import CONTAINER_DATABASE
from makima.local.monitor import DirectPublisher, LocalHub
from makima.local.scheduler import jobs_for
from tests.infra.cfn import ROOT, load_template, resources_of_type

pytestmark = pytest.mark.infra

# The design: supervisor timeouts, stale detection (seed 5.2's 60 s) and the outbox sweep every minute,
# heartbeat retention and removed-worktree retention every hour.
EXPECTED_SCHEDULES = {
    "supervisor_timeouts": "rate(1 minute)",
    "heartbeat_retention": "rate(1 hour)",
    "worktree_retention": "rate(1 hour)",
    "stale_detector": "rate(1 minute)",
    "outbox_sweeper": "rate(1 minute)",
    "backfill": "rate(5 minutes)",
}

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> int:
    """Seconds between runs of an EventBridge ``rate(...)`` expression (singular unit for 1, plural above)."""
    match = _RATE.match(expression)
    assert match, f"not a rate expression: {expression!r}"
    value, unit = int(match[1]), match[2]
    assert (value == 1) == (not unit.endswith("s")), f"EventBridge refuses {expression!r}"
    return value * _UNIT_SECONDS[unit.removesuffix("s")]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def scheduled(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Function folder -> the function, for every function with a Schedule event."""
    found: dict[str, dict[str, Any]] = {}
    for fn in resources_of_type(template, "AWS::Serverless::Function").values():
        events = fn["Properties"].get("Events") or {}
        if any(ev["Type"] == "Schedule" for ev in events.values()):
            folder = str(fn["Properties"]["CodeUri"]).removeprefix("functions/").rstrip("/")
            found[folder] = fn
    return found


def _schedule(fn: dict[str, Any]) -> dict[str, Any]:
    events = fn["Properties"]["Events"]
    assert len(events) == 1, "a scheduled function has its schedule and nothing else"
    (event,) = events.values()
    assert event["Type"] == "Schedule"
    props: dict[str, Any] = event["Properties"]
    return props


def _expression(template: dict[str, Any], fn: dict[str, Any], parameters: dict[str, Any] | None = None) -> str:
    """The schedule expression of ``fn`` with the template's parameters at their defaults (or as given):
    a literal, or a ``FindInMap`` keyed by a parameter."""
    schedule = _schedule(fn)["Schedule"]
    if isinstance(schedule, str):
        return schedule
    mapping, key, attribute = schedule["Fn::FindInMap"]
    if isinstance(key, dict):
        (name,) = key.values()
        key = (parameters or {}).get(name, template["Parameters"][name]["Default"])
    return str(template["Mappings"][mapping][str(key)][attribute])


def test_rate_expressions() -> None:
    assert rate_seconds("rate(1 minute)") == 60
    assert rate_seconds("rate(5 minutes)") == 300
    assert rate_seconds("rate(1 hour)") == 3600
    with pytest.raises(AssertionError):
        rate_seconds("rate(1 minutes)")
    with pytest.raises(AssertionError):
        rate_seconds("cron(0 * * * ? *)")


def test_schedules_are_the_designed_intervals(template: dict[str, Any], scheduled: dict[str, dict[str, Any]]) -> None:
    # Given the scheduled functions of the template, by folder
    schedules = {folder: _expression(template, fn) for folder, fn in scheduled.items()}

    # Then they are exactly the designed jobs on their intervals, all enabled
    assert schedules == EXPECTED_SCHEDULES
    for folder, fn in scheduled.items():
        assert _schedule(fn).get("Enabled", True) is True, folder


def test_schedules_match_the_local_scheduler(template: dict[str, Any], scheduled: dict[str, dict[str, Any]]) -> None:
    # Given the jobs the local stack runs (makima.local.scheduler)
    publisher = DirectPublisher(CONTAINER_DATABASE, LocalHub("local:test"))
    jobs = {job.name: job.every for job in jobs_for(CONTAINER_DATABASE, Settings(), publisher)}

    # Then AWS runs the same jobs, each on the same interval
    assert set(scheduled) == set(jobs)
    for folder, fn in scheduled.items():
        assert rate_seconds(_expression(template, fn)) == jobs[folder], folder


def test_the_stale_schedule_follows_stale_detection_interval_seconds(
    template: dict[str, Any], scheduled: dict[str, dict[str, Any]]
) -> None:
    # Given the parameter of [contracts] stale_detection_interval_seconds and the stale detector's schedule
    parameter = template["Parameters"]["StaleDetectionIntervalSeconds"]
    field = ContractsConfig.model_fields["stale_detection_interval_seconds"]
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in field.metadata}
    schedule = _schedule(scheduled["stale_detector"])["Schedule"]

    # Then the schedule is looked up by the parameter (not a literal that ignores it)
    assert schedule == {"Fn::FindInMap": ["StaleDetectionSchedules", {"Ref": "StaleDetectionIntervalSeconds"}, "Rate"]}
    # And every interval the parameter allows is a whole number of minutes within the setting's bounds,
    # mapped to a rate of exactly that interval; the default is the setting's default
    allowed = [int(v) for v in parameter["AllowedValues"]]
    assert int(parameter["Default"]) == field.default
    assert set(template["Mappings"]["StaleDetectionSchedules"]) == {str(v) for v in allowed}
    for seconds in allowed:
        assert bounds["Ge"] <= seconds <= bounds["Le"]
        assert seconds % 60 == 0, "EventBridge rates are whole minutes"
        expression = _expression(template, scheduled["stale_detector"], {"StaleDetectionIntervalSeconds": seconds})
        assert rate_seconds(expression) == seconds
        # And the local scheduler runs the job on that same interval under the same setting
        settings = Settings(contracts=ContractsConfig(stale_detection_interval_seconds=seconds))
        publisher = DirectPublisher(CONTAINER_DATABASE, LocalHub("local:test"))
        (job,) = [j for j in jobs_for(CONTAINER_DATABASE, settings, publisher) if j.name == "stale_detector"]
        assert job.every == seconds
    assert max(allowed) == bounds["Le"]


def test_timeouts_are_swept_well_within_the_heartbeat_timeout(
    template: dict[str, Any], scheduled: dict[str, dict[str, Any]]
) -> None:
    # A silent supervisor is noticed at most one sweep after its timeout
    every = rate_seconds(_expression(template, scheduled["supervisor_timeouts"]))
    assert every * 2 <= ContractsConfig().heartbeat_timeout_seconds


def _failure_queue(fn: dict[str, Any]) -> str:
    """The logical id of the SQS queue that receives ``fn``'s failed asynchronous invocations."""
    props = fn["Properties"]
    dlq = props.get("DeadLetterQueue")
    on_failure = ((props.get("EventInvokeConfig") or {}).get("DestinationConfig") or {}).get("OnFailure")
    assert (dlq is None) != (on_failure is None), "one dead-letter queue: DeadLetterQueue or an on-failure destination"
    if dlq is not None:
        assert dlq["Type"] == "SQS"
        target = dlq["TargetArn"]
    else:
        assert on_failure is not None
        assert on_failure["Type"] == "SQS"
        target = on_failure["Destination"]
    assert isinstance(target, dict), f"the queue is a resource of this stack, not {target!r}"
    resource, attribute = target["Fn::GetAtt"]
    assert attribute == "Arn"
    return str(resource)


def test_every_scheduled_function_has_its_own_dead_letter_queue(
    template: dict[str, Any], scheduled: dict[str, dict[str, Any]]
) -> None:
    # Given the SQS queues of the template and each scheduled function's failure queue
    queues = resources_of_type(template, "AWS::SQS::Queue")
    failure_queues = {folder: _failure_queue(fn) for folder, fn in scheduled.items()}

    # Then each function has a queue of its own, kept long enough to look at, and encrypted at rest
    assert len(set(failure_queues.values())) == len(failure_queues), failure_queues
    for folder, queue in failure_queues.items():
        assert queue in queues, f"{folder}: {queue} is not an SQS queue of the stack"
        props = queues[queue]["Properties"]
        assert props["MessageRetentionPeriod"] == 14 * 24 * 3600, queue
        assert props.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in props, queue


def test_failed_runs_are_retried_briefly_and_never_outlive_their_successor(
    template: dict[str, Any], scheduled: dict[str, dict[str, Any]]
) -> None:
    # Given each scheduled function's asynchronous invocation settings
    for folder, fn in scheduled.items():
        config = fn["Properties"]["EventInvokeConfig"]
        every = rate_seconds(_expression(template, fn))

        # Then a failed run is retried at most once, and an event older than one interval is not run
        # (the next run is already due): it goes to the queue instead
        assert config["MaximumRetryAttempts"] <= 1, folder
        assert 60 <= config["MaximumEventAgeInSeconds"] <= every, folder


def test_events_the_schedule_cannot_deliver_go_to_the_same_queue(
    template: dict[str, Any], scheduled: dict[str, dict[str, Any]]
) -> None:
    # Given each schedule's own delivery settings (EventBridge -> Lambda, before any invocation)
    for folder, fn in scheduled.items():
        schedule = _schedule(fn)
        every = rate_seconds(_expression(template, fn))

        # Then what EventBridge cannot hand to Lambda lands in the function's failure queue as well (one
        # place to look; tests/infra/test_stack.py checks the queue lets that rule in), and is not
        # retried past the next run either
        assert schedule["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [_failure_queue(fn), "Arn"]}}, folder
        assert 60 <= schedule["RetryPolicy"]["MaximumEventAgeInSeconds"] <= every, folder


def test_every_scheduled_function_has_its_sample_event(
    template: dict[str, Any], scheduled: dict[str, dict[str, Any]]
) -> None:
    logical_ids = {id(fn): name for name, fn in resources_of_type(template, "AWS::Serverless::Function").items()}
    for folder, fn in scheduled.items():
        # Given events/schedule/<function folder>.json
        path = ROOT / "events" / "schedule" / f"{folder}.json"
        assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
        event = json.loads(path.read_text(encoding="utf-8"))

        # Then it is a scheduled event from the rule SAM names after the function and its event
        assert (event["source"], event["detail-type"]) == ("aws.events", "Scheduled Event")
        (event_name,) = fn["Properties"]["Events"]
        (rule,) = event["resources"]
        assert f":rule/makima-contracts-{logical_ids[id(fn)]}{event_name}-" in rule, rule
