"""Bad input stops the start with a message naming the setting, and changes nothing that runs.

Settings and secrets are checked by the stack's `init` service, which everything waits for;
`docker compose run --rm --no-deps init` runs that check next to a running stack (what
`scripts/stack` does before `up`), so a bad setting is refused before compose replaces a
container. Values compose itself refuses (an invalid port) fail `up` before anything changes.
"""

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Compose, Stack, compose_env


@pytest.fixture
def bad_stack(tmp_path: Path) -> Iterator[Compose]:
    compose = Compose(f"celerykit-bad-{uuid.uuid4().hex[:8]}", compose_env(tmp_path))
    yield compose
    compose.down()


def write_secret(compose: Compose, name: str, value: str) -> None:
    directory = Path(compose.env["CELERYKIT_SECRETS_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(value)


def snapshot(compose: Compose) -> dict[str, tuple]:
    """Each service's container id, state and health: what must not change."""
    return {name: (s["ID"], s["State"], s.get("Health", "")) for name, s in compose.services().items()}


def check_settings(stack: Stack, **env: str) -> subprocess.CompletedProcess[str]:
    """What `scripts/stack` does before `up`: run the stack's init (settings, then secrets) on its
    own, next to the running stack, with the new settings."""
    compose = Compose(stack.compose.project, {**stack.compose.env, **env}, stack.compose.files)
    return compose.run("run", "--rm", "--no-deps", "init", check=False, timeout=120)


# (variable, value, what the message must say). Every message names the variable at fault.
BAD_SETTINGS = [
    ("CELERYKIT_HIGH_CONCURRENCY", "0", "pool 'high': CELERYKIT_HIGH_CONCURRENCY must be between 1 and 256, got 0"),
    ("CELERYKIT_MEDIUM_CONCURRENCY", "-2", "CELERYKIT_MEDIUM_CONCURRENCY must be between 1 and 256, got -2"),
    ("CELERYKIT_LOW_CONCURRENCY", "many", "CELERYKIT_LOW_CONCURRENCY must be a whole number, got 'many'"),
    ("CELERYKIT_LOW_CONCURRENCY", "1000", "CELERYKIT_LOW_CONCURRENCY must be between 1 and 256, got 1000"),
    ("CELERYKIT_HIGH_QUEUES", "high priority", "CELERYKIT_HIGH_QUEUES: 'high priority' is not a valid queue name"),
    ("CELERYKIT_LOW_QUEUES", "low_priority,", "CELERYKIT_LOW_QUEUES: '' is not a valid queue name"),
    ("CELERYKIT_MEDIUM_QUEUES", "default,default", "CELERYKIT_MEDIUM_QUEUES lists a queue twice"),
    (
        "CELERYKIT_MEDIUM_QUEUES",
        "medium_priority,high_priority",
        "CELERYKIT_MEDIUM_QUEUES: queue 'high_priority' is already consumed by pool 'high'",
    ),
    ("CELERYKIT_HIGH_PREFETCH_MULTIPLIER", "0", "CELERYKIT_HIGH_PREFETCH_MULTIPLIER must be at least 1, got 0"),
    ("CELERYKIT_SOFT_TIME_LIMIT", "3600", "CELERYKIT_SOFT_TIME_LIMIT (3600) must be below CELERYKIT_TIME_LIMIT (3600)"),
    ("CELERYKIT_TIME_LIMIT", "9000", "CELERYKIT_TIME_LIMIT (9000) must be below CELERYKIT_VISIBILITY_TIMEOUT (7200)"),
    ("CELERYKIT_VISIBILITY_TIMEOUT", "30", "CELERYKIT_VISIBILITY_TIMEOUT must be at least 60, got 30"),
    (
        "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES",
        "0",
        "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES must be at least 1, got 0",
    ),
    ("CELERYKIT_LOG_LEVEL", "LOUD", "CELERYKIT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ("CELERYKIT_HTTPS_PORT", "0", "CELERYKIT_HTTPS_PORT must be between 1 and 65535, got 0"),
    ("CELERYKIT_FLOWER_USER", "ad:min", "CELERYKIT_FLOWER_USER must not contain ':' or ','"),
    ("CELERYKIT_FLOWER_MAX_TASKS", "0", "CELERYKIT_FLOWER_MAX_TASKS must be at least 1, got 0"),
    ("CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS", "10", "CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS must be at least 1000"),
]

# (secret file, content, message): checked by the same init run, after the settings.
BAD_SECRETS = [
    ("flower_password", "", "flower_password (password for Flower's basic auth) is empty"),
    ("redis_password", "   \n", "redis_password (password of the Redis ACL user"),
    ("flower_password", "changeme", "flower_password: password is shorter than 12 characters"),
    ("flower_password", "administrator", "flower_password: password is a well-known default"),
    ("redis_password", "Password123", "redis_password: password is shorter than 12 characters"),
    ("flower_cookie_secret", "too-short-for-a-key", "shorter than 32 characters"),
]


@pytest.mark.parametrize(("setting", "value", "message"), BAD_SETTINGS, ids=[f"{s}={v}" for s, v, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_by_name_and_the_running_stack_stays_as_it_was(
    stack: Stack, setting: str, value: str, message: str
):
    before = snapshot(stack.compose)
    result = check_settings(stack, **{setting: value})
    assert result.returncode == 78, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert snapshot(stack.compose) == before


@pytest.mark.parametrize(("secret", "value", "message"), BAD_SECRETS, ids=[f"{s}={v!r}" for s, v, _ in BAD_SECRETS])
def test_an_empty_or_weak_secret_is_refused_and_the_running_stack_stays_as_it_was(
    stack: Stack, tmp_path: Path, secret: str, value: str, message: str
):
    before = snapshot(stack.compose)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / secret).write_text(value)
    result = check_settings(stack, CELERYKIT_SECRETS_DIR=str(tmp_path / "secrets"))
    assert result.returncode == 78, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert snapshot(stack.compose) == before


def test_the_running_stacks_own_settings_pass_the_same_check(stack: Stack):
    """The check does not refuse everything: the settings the stack runs with pass it."""
    result = check_settings(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "settings are valid" in result.stdout + result.stderr


def test_a_failed_up_with_a_port_compose_refuses_leaves_the_running_stack_as_it_was(stack: Stack):
    before = snapshot(stack.compose)
    bad = Compose(stack.compose.project, {**stack.compose.env, "CELERYKIT_HTTPS_PORT": "99999"}, stack.compose.files)
    result = bad.run("up", "--detach", "--wait", check=False)
    assert result.returncode != 0
    assert "99999" in result.stderr
    assert snapshot(stack.compose) == before
    assert all(health == "healthy" for _, state, health in before.values() if state == "running")


def test_a_weak_secret_stops_a_new_stack_before_anything_starts(bad_stack):
    write_secret(bad_stack, "flower_password", "administrator")
    result = bad_stack.run("up", "--detach", "--wait", check=False)
    assert result.returncode != 0
    assert "well-known default" in bad_stack.logs("init")
    running = {name for name, s in bad_stack.services().items() if s["State"] == "running"}
    assert not running, running


def test_a_bad_pool_setting_stops_a_new_stack_before_anything_starts(bad_stack):
    bad_stack.env["CELERYKIT_HIGH_CONCURRENCY"] = "0"
    result = bad_stack.run("up", "--detach", "--wait", check=False)
    assert result.returncode != 0
    assert "CELERYKIT_HIGH_CONCURRENCY must be between 1 and 256, got 0" in bad_stack.logs("init")
    running = {name for name, s in bad_stack.services().items() if s["State"] == "running"}
    assert not running, running


def test_a_certificate_without_its_key_is_refused(bad_stack):
    tls = Path(bad_stack.env["CELERYKIT_TLS_DIR"])
    tls.mkdir(parents=True)
    (tls / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    result = bad_stack.run("run", "--rm", "--no-deps", "nginx", check=False)
    assert result.returncode == 78
    assert "tls.key is missing" in result.stderr


def test_generated_secrets_are_readable_only_by_the_services_group(bad_stack):
    bad_stack.run("up", "init")
    for path in Path(bad_stack.env["CELERYKIT_SECRETS_DIR"]).iterdir():
        mode = path.stat()
        assert oct(mode.st_mode & 0o777) == "0o440", path
        assert mode.st_gid == 10001, path
        assert len(path.read_text().strip()) >= 32, path


def test_the_compose_file_needs_no_variable_to_be_valid():
    result = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "compose" / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
