"""State survives restarts: Flower's task history, and tasks queued in Redis (AOF)."""

import time

from conftest import Stack

from celerykit.verify import checks


def test_flower_keeps_task_history_across_a_restart(stack: Stack):
    task_id = checks.send_probe(stack.target, "high_priority")
    assert checks.wait_for_task(stack.target, task_id)["state"] == "SUCCESS"
    stack.compose.run("restart", "flower")
    stack.compose.wait_healthy("flower")
    response = stack.target.request("GET", stack.target.flower(f"api/task/info/{task_id}"))
    assert response.status == 200
    assert response.json()["state"] == "SUCCESS"


def test_queued_tasks_survive_a_redis_crash(stack: Stack):
    """Tasks wait in Redis while their pool is down; Redis is SIGKILLed; they still run afterwards."""
    stack.compose.run("stop", "worker-low")
    try:
        task_ids = [checks.send_probe(stack.target, "low_priority") for _ in range(5)]
        time.sleep(2)  # appendfsync everysec: what was enqueued a second ago is on disk
        stack.compose.run("kill", "--signal", "SIGKILL", "redis")
        stack.compose.run("start", "redis")
        stack.compose.wait_healthy("redis")
    finally:
        stack.compose.run("start", "worker-low")
        stack.compose.wait_healthy("worker-low")
    states = {task_id: checks.wait_for_task(stack.target, task_id, timeout=120) for task_id in task_ids}
    assert {t: i["state"] for t, i in states.items()} == dict.fromkeys(task_ids, "SUCCESS")
    assert all(i["worker"].startswith("low@") for i in states.values())
