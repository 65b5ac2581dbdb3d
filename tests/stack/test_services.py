"""The stack's services run, the pools split the queues, and tasks land on the right pool."""

import json

import pytest
from celerykit_testing.compose import ComposeDeployment
from conftest import LOW_MAX_TASKS_PER_CHILD, POOLS, Stack

from celerykit import defaults
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
    """Concurrency, time limits, max tasks per child and prefetch as the worker reports them (the test
    stack's low pool replaces its processes sooner than the kit's default)."""
    workers = stack.target.request("GET", stack.target.flower("api/workers?refresh=1")).json()
    (stats,) = [info["stats"] for name, info in workers.items() if name.startswith(f"{pool}@")]
    concurrency = DEFAULT_POOLS[pool][1]
    assert stats["pool"]["max-concurrency"] == concurrency
    expected = LOW_MAX_TASKS_PER_CHILD if pool == "low" else defaults.POOL["max_tasks_per_child"]
    assert stats["pool"]["max-tasks-per-child"] == expected
    assert stats["pool"]["timeouts"] == [3300, 3600]
    assert stats["prefetch_count"] == concurrency * defaults.pool(pool)["prefetch_multiplier"]


# Runs in the low pool's container: send `argv[1]` bulk tasks and wait for them, then print the
# Redis connections (socket inodes of TCP connections to port 6379) of each of the main process's
# children and of the main process itself.
RECYCLE_AND_LIST_CONNECTIONS = """
import json, os, sys
from celerykit.app import app
results = [app.send_task("celerykit.demo.bulk", queue="low_priority") for _ in range(int(sys.argv[1]))]
for result in results:
    result.get(timeout=120)
redis = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).read().splitlines()[1:]:
        fields = line.split()
        if fields[2].endswith(":18EB") and fields[3] == "01":  # peer port 6379, ESTABLISHED
            redis.add(fields[9])
def parent(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:  # exited meanwhile
        return None
def connections(pid):
    links = (os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    return sorted(link[8:-1] for link in links if link.startswith("socket:[") and link[8:-1] in redis)
main = next(int(p) for p in os.listdir("/proc") if p.isdigit() and p != "1" and parent(p) == 1)
children = [int(p) for p in os.listdir("/proc") if p.isdigit() and parent(p) == main]
print(json.dumps({"main": connections(main), "children": {c: connections(c) for c in children}}))
"""


def test_a_replaced_pool_process_holds_none_of_the_main_process_redis_connections(stack: Stack):
    """After max_tasks_per_child tasks the low pool replaces its process; the new one is
    forked while the main process holds its Redis connections, the one waiting in BRPOP among
    them. It lets go of them (celerykit.patches): otherwise a connection the main process closes
    stays open, and Redis hands the next message to a client nobody reads."""
    _, before = ComposeDeployment(stack.compose, stack.target, POOLS).pool_processes("low")
    tasks = str(LOW_MAX_TASKS_PER_CHILD + 10)
    out = stack.compose.exec("worker-low", "python3", "-c", RECYCLE_AND_LIST_CONNECTIONS, tasks).stdout
    found = json.loads(out)
    replaced = {int(pid): held for pid, held in found["children"].items() if int(pid) not in before}
    assert replaced, f"no process was replaced: {found}"
    assert found["main"], f"the main process holds no Redis connection: {found}"
    for pid, held in replaced.items():
        assert not set(held) & set(found["main"]), f"process {pid} holds the main process's {held}"
