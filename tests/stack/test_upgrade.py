"""Replicas of a pool, and an app upgrade with `scripts/stack` while counted tasks flow.

One stack of its own (project `<CELERYKIT_TEST_PROJECT>-upgrade`), started by `scripts/stack` as a
user starts it, with a user's app released in two versions (tests/fixtures/release_app: the demo's
tasks plus `acme.release`, which says which version ran it) and two replicas of the `high` pool.
`scripts/stack` run again with the next version must replace the workers pool by pool, one
container at a time, each old one stopped warmly once its successor consumes: nothing lost, nothing
run twice, no worker process lost, and no pool without a worker at any moment (Docker's own record
of starts and exits says so). The longest time each queue went without a task starting is reported.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celerykit_testing import drills
from celerykit_testing.compose import Compose, ComposeDeployment
from celerykit_testing.deployment import BEAT, FLOWER, worker
from celerykit_testing.gaps import longest_gaps
from celerykit_testing.soak import Stream, count
from conftest import POOLS, PROJECT, ROOT, compose_env, make_test_ca, stack_target

from celerykit.rules import MAX_REPLICAS
from celerykit.verify import checks
from celerykit.verify.target import Target

UPGRADE_PROJECT = f"{PROJECT}-upgrade"
RELEASE_APP = "tests/fixtures/release_app"
# The next version is a copy in the git-ignored build directory: the image's build context is the
# repository, so the app must be inside it.
NEXT_APP = Path("build") / "release-app" / UPGRADE_PROJECT / "2.0.0"
VERSIONS = ("1.0.0", "2.0.0")
REPLICATED = "high"  # the pool that runs two replicas here
QUEUES = sorted(q for queues in POOLS.values() for q in queues)
WORKERS = [worker(pool) for pool in POOLS]  # most urgent first, as scripts/stack replaces them


def image(version: str) -> str:
    return f"celerykit/release-{UPGRADE_PROJECT}:{version}"


@dataclass
class Release:
    deployment: ComposeDeployment
    envs: dict[str, dict[str, str]]  # version -> the environment scripts/stack runs with

    @property
    def compose(self) -> Compose:
        return self.deployment.compose

    @property
    def target(self) -> Target:
        return self.deployment.target


def next_version(directory: Path) -> None:
    """The release app with its version rewritten, as its next release."""
    shutil.rmtree(directory, ignore_errors=True)
    shutil.copytree(ROOT / RELEASE_APP, directory, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    project = directory / "pyproject.toml"
    text, replaced = re.subn(r'(?m)^version = "1\.0\.0"$', 'version = "2.0.0"', project.read_text())
    assert replaced == 1, "the release app's pyproject.toml no longer says version 1.0.0"
    project.write_text(text)


def scripts_stack(env: dict[str, str], stamps: dict[str, float] | None = None) -> str:
    """Run scripts/stack as a user does; return its output. Each `stack:` line it prints is stamped
    (time.time()) into `stamps`."""
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "stack")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if stamps is not None and line.startswith("stack: "):
            stamps[line.strip()] = time.time()
    output = "".join(lines)
    assert process.wait(timeout=900) == 0, f"scripts/stack failed:\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    tmp = tmp_path_factory.mktemp("upgrade")
    ca_file = make_test_ca(tmp / "tls")
    next_version(ROOT / NEXT_APP)
    common = compose_env(
        tmp,
        CELERYKIT_PROJECT=UPGRADE_PROJECT,
        CELERYKIT_APP="acme_release:app",
        CELERYKIT_HIGH_REPLICAS="2",
        # No alert sink in this stack (scripts/stack runs compose.yaml alone): no alert delivery.
        CELERYKIT_ALERT_SMARTHOST="",
        CELERYKIT_ALERT_MAIL_TO="",
        CELERYKIT_ALERT_WEBHOOK_URL="",
    )
    envs = {
        version: {**common, "CELERYKIT_APP_DIR": app, "CELERYKIT_IMAGE": image(version)}
        for version, app in zip(VERSIONS, (RELEASE_APP, str(NEXT_APP)), strict=True)
    }
    compose = Compose(UPGRADE_PROJECT, envs[VERSIONS[0]])
    compose.down()
    try:
        scripts_stack(envs[VERSIONS[0]])
        target = stack_target(common, tmp, ca_file)
        deployment = ComposeDeployment(compose, target, POOLS)
        drills.wait_pools(target, POOLS)
        yield Release(deployment, envs)
    finally:
        compose.down()
        subprocess.run(["docker", "image", "rm", "-f", *map(image, VERSIONS)], capture_output=True, check=False)
        shutil.rmtree(ROOT / NEXT_APP.parent, ignore_errors=True)  # this project's copies


def releases(target: Target) -> dict[str, tuple[str, str]]:
    """Queue -> (the app version that ran `acme.release` sent there, the worker that ran it)."""
    seen = {}
    for queue in QUEUES:
        response = target.request("POST", target.flower("api/task/send-task/acme.release"), body={"queue": queue})
        assert response.status == 200, response.body
        info = checks.wait_for_task(target, response.json()["task-id"], timeout=120)
        assert info["state"] == "SUCCESS", info
        seen[queue] = (drills.tally_of(info)["version"], info["worker"])
    return seen


def alive_workers(target: Target, pool: str) -> set[str]:
    """The pool's workers Flower sees online (from their events)."""
    listing = target.request("GET", target.flower("api/workers?status=1")).json()
    return {name for name, alive in listing.items() if alive and name.startswith(f"{pool}@")}


def test_each_replica_is_a_worker_of_its_own_name_and_runs_tasks(release: Release):
    names = release.deployment.worker_names(REPLICATED)
    assert len(names) == len(set(names)) == 2, names
    deadline = time.monotonic() + 60
    while alive_workers(release.target, REPLICATED) != set(names):
        assert time.monotonic() < deadline, f"Flower sees {alive_workers(release.target, REPLICATED)}, not {names}"
        time.sleep(1)
    # A replica reserves as many tasks as it has processes (prefetch 1): twelve half-second tasks
    # cannot all wait for one of them.
    task_ids = drills.send_tallies(release.target, 12, "high_priority", seconds=0.5)
    outcome = drills.settle(release.target, task_ids, timeout=120)
    assert outcome.succeeded == len(task_ids), outcome.summary()
    ran_on = {drills.task_info(release.target, task_id)["worker"] for task_id in task_ids}
    assert ran_on == set(names)


def snapshot(compose: Compose) -> list[tuple[str, str, str]]:
    return [(r["ID"], r["State"], r.get("Health", "")) for r in compose.records()]


def test_a_bad_replica_count_is_refused_by_name_and_nothing_changes(release: Release):
    before = snapshot(release.compose)
    env = release.envs[VERSIONS[0]]
    # What scripts/stack runs before it changes anything: init checks every setting.
    refused = Compose(UPGRADE_PROJECT, {**env, "CELERYKIT_LOW_REPLICAS": "0"}).run(
        "run", "--rm", "--no-deps", "init", check=False, timeout=120
    )
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if "configuration error" in line]
    assert refused.returncode == 78, refused.stdout + refused.stderr
    assert lines == [
        f"celerykit: configuration error: CELERYKIT_LOW_REPLICAS must be between 1 and {MAX_REPLICAS}, got 0"
    ]
    # Not a number at all: compose itself refuses the file, before anything starts.
    refused = Compose(UPGRADE_PROJECT, {**env, "CELERYKIT_LOW_REPLICAS": "two"}).run(
        "run", "--rm", "--no-deps", "init", check=False, timeout=120
    )
    assert refused.returncode != 0
    assert "worker-low.deploy.replicas" in refused.stderr and '"two"' in refused.stderr, refused.stderr
    assert snapshot(release.compose) == before


def follow_logs(containers: list[str], directory: Path) -> list[tuple[subprocess.Popen, Path]]:
    """`docker logs --follow` of each container into a file: it ends when the container stops, so
    a container the upgrade removes leaves its whole log behind."""
    followers = []
    for container in containers:
        path = directory / f"{container}.log"
        with path.open("w") as out:
            follower = subprocess.Popen(["docker", "logs", "--follow", container], stdout=out, stderr=out)
        followers.append((follower, path))
    return followers


def watch_events(project: str, path: Path) -> subprocess.Popen:
    """Docker's record of the project's container starts and exits, into a file as they happen (the
    daemon keeps only its last few hundred events, health checks' among them)."""
    with path.open("w") as out:
        return subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", f"label=com.docker.compose.project={project}",
             "--filter", "type=container", "--filter", "event=start", "--filter", "event=die"],
            stdout=out,
        )  # fmt: skip


def container_events(watcher: subprocess.Popen, path: Path) -> list[dict]:
    watcher.terminate()
    watcher.wait(timeout=30)
    events = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [
        {
            "service": e["Actor"]["Attributes"]["com.docker.compose.service"],
            "container": e["Actor"]["ID"][:12],  # as compose lists it
            "status": e["status"],
            "exit_code": e["Actor"]["Attributes"].get("exitCode"),
            "at": e["timeNano"] / 1e9,
        }
        for e in events
    ]


def succeeded_tallies(target: Target) -> set[str]:
    return set(target.request("GET", target.flower(f"api/tasks?taskname={drills.TALLY}&state=SUCCESS")).json())


def test_an_app_upgrade_replaces_the_workers_pool_by_pool_and_loses_nothing(release: Release, tmp_path: Path):
    before = releases(release.target)
    assert {queue: version for queue, (version, _) in before.items()} == dict.fromkeys(QUEUES, VERSIONS[0])
    assert all(name.startswith(f"{release.deployment.pool_of(q)}@") for q, (_, name) in before.items()), before
    replicas = {service: len(release.compose.containers(service)) for service in WORKERS}
    old = {service: release.compose.containers(service) for service in WORKERS}
    # The next version's image, built before the stream starts, so that the figures are the
    # upgrade's (scripts/stack builds it again: from the cache).
    Compose(UPGRADE_PROJECT, release.envs[VERSIONS[1]]).run("build", "init")
    followers = follow_logs([c for containers in old.values() for c in containers], tmp_path)

    stream = Stream(release.deployment, QUEUES, seed=random.SystemRandom().randrange(1_000_000), seconds=600)
    sender = threading.Thread(target=stream.run, daemon=True)
    earlier = succeeded_tallies(release.target)
    sender.start()
    deadline = time.monotonic() + 120
    while not succeeded_tallies(release.target) - earlier:  # the stream flows before the upgrade begins
        assert time.monotonic() < deadline and sender.is_alive(), f"no task of the stream ran: {stream.error!r}"
        time.sleep(1)
    stamps: dict[str, float] = {}
    watcher = watch_events(UPGRADE_PROJECT, tmp_path / "events.jsonl")
    started = time.time()
    scripts_stack(release.envs[VERSIONS[1]], stamps)
    ended = time.time()
    stream.stop()
    sender.join(timeout=120)
    assert stream.error is None, stream.error
    tally, count_seconds = count(release.target, stream.sent, deadline=time.monotonic() + 180)

    for follower, _ in followers:
        follower.wait(timeout=120)
    logs = "".join(path.read_text() for _, path in followers)
    logs += "".join(release.compose.logs(service) for service in WORKERS)  # the new workers'
    events = container_events(watcher, tmp_path / "events.jsonl")
    gaps = longest_gaps(stream.sent, tally.results, started, ended)
    figures = drills.record(
        "app-upgrade",
        deployment=release.deployment.kind,
        replicas=replicas,
        upgrade_seconds=round(ended - started, 1),
        sent=len(stream.sent),
        refused=dict(stream.refused),
        states=dict(tally.states),
        lost=len(tally.lost),
        redelivered=len(tally.redelivered),
        executed_twice=len(tally.executed_twice),
        longest_gap_seconds=gaps,
        count_seconds=round(count_seconds, 1),
        replaced={line.removeprefix("stack: "): round(at - started, 1) for line, at in stamps.items()},
    )

    # Counted task by task: every one ran once, to the end.
    assert not stream.refused, figures
    assert tally.states == {"SUCCESS": len(stream.sent)}, figures
    assert not tally.lost and not tally.executed_twice and not tally.redelivered, figures
    assert set(gaps) == set(QUEUES), figures  # the stream reached every queue
    assert "WorkerLostError" not in logs
    assert logs.count(" ready.") >= 2 * sum(replicas.values())  # the logs hold every worker's life

    # Docker's record: each pool in turn, most urgent first; a new container started before each
    # old one stopped (so the pool never ran short of its replicas), and each old one exited 0.
    last = 0.0
    for service in WORKERS:
        mine = [e for e in events if e["service"] == service]
        stops = [e for e in mine if e["status"] == "die"]
        assert sorted(e["container"] for e in stops) == sorted(old[service]), mine
        assert all(e["exit_code"] == "0" for e in stops), stops  # warm: Celery's own exit
        running = replicas[service]
        for event in sorted(mine, key=lambda e: e["at"]):
            running += 1 if event["status"] == "start" else -1
            assert running >= replicas[service], f"{service} ran short of replicas: {mine}"
        assert min(e["at"] for e in mine) > last, f"{service} began before the pool before it was done: {events}"
        last = max(e["at"] for e in mine)
    assert all(e["at"] > last for e in events if e["service"] in (BEAT, FLOWER)), events

    after = releases(release.target)
    assert {queue: version for queue, (version, _) in after.items()} == dict.fromkeys(QUEUES, VERSIONS[1])
    current = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", image(VERSIONS[1])],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for service in WORKERS:
        containers = release.compose.containers(service)
        assert len(containers) == replicas[service]
        assert {release.compose.inspect_container(c)["Image"] for c in containers} == {current}, service
