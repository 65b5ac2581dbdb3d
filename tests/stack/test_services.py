"""The stack's services run, the pools split the queues, and tasks land on the right pool."""

import pytest
from conftest import POOLS, Stack

from celerykit.settings import DEFAULT_POOLS
from celerykit.verify import checks

LONG_RUNNING = {"worker-high", "worker-medium", "worker-low", "beat", "flower", "redis", "nginx", "ws-echo"}


def test_every_service_is_healthy_and_init_completed(stack: Stack):
    for service in sorted(LONG_RUNNING):
        stack.compose.wait_healthy(service)
    init = stack.compose.services()["init"]
    assert init["State"] == "exited" and init["ExitCode"] == 0


def test_exactly_three_pools_each_consuming_only_its_queues(stack: Stack):
    result = checks.workers(stack.target, POOLS)
    assert result, result.detail
    workers = stack.target.request("GET", stack.target.flower("api/workers")).json()
    assert sorted(name.split("@")[0] for name in workers) == ["high", "low", "medium"]


def test_a_probe_sent_to_each_queue_runs_on_the_matching_pool(stack: Stack):
    result = checks.routing(stack.target, POOLS)
    assert result, result.detail


@pytest.mark.parametrize(
    ("task", "pool"),
    [("celerykit.demo.urgent", "high"), ("celerykit.demo.report", "medium"), ("celerykit.demo.bulk", "low")],
)
def test_demo_tasks_follow_the_apps_routes(stack: Stack, task: str, pool: str):
    response = stack.target.request("POST", stack.target.flower(f"api/task/send-task/{task}"), body={"args": ["x"]})
    assert response.status == 200, response.body
    info = checks.wait_for_task(stack.target, response.json()["task-id"])
    assert info["state"] == "SUCCESS"
    assert info["worker"].startswith(f"{pool}@")


def test_a_failing_task_is_retried_until_it_succeeds(stack: Stack):
    response = stack.target.request(
        "POST", stack.target.flower("api/task/send-task/celerykit.demo.flaky"), body={"kwargs": {"failures": 2}}
    )
    info = checks.wait_for_task(stack.target, response.json()["task-id"], timeout=90)
    assert info["state"] == "SUCCESS"
    assert info["retries"] == 2
    assert "'retries': 2" in info["result"]


@pytest.mark.parametrize("pool", sorted(POOLS))
def test_pools_run_with_the_kits_limits(stack: Stack, pool: str):
    """Concurrency, time limits, max tasks per child and prefetch as the worker reports them."""
    workers = stack.target.request("GET", stack.target.flower("api/workers?refresh=1")).json()
    (stats,) = [info["stats"] for name, info in workers.items() if name.startswith(f"{pool}@")]
    concurrency = DEFAULT_POOLS[pool][1]
    assert stats["pool"]["max-concurrency"] == concurrency
    assert stats["pool"]["max-tasks-per-child"] == 100
    assert stats["pool"]["timeouts"] == [3300, 3600]
    assert stats["prefetch_count"] == concurrency  # prefetch multiplier 1
