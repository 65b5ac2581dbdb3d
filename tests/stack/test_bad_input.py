"""Bad input stops the start with a message naming the setting, and changes nothing that runs.

Settings and secrets are checked by the stack's `init` service, which everything waits for;
`docker compose run --rm --no-deps init` runs that check next to a running stack (what
`scripts/stack` does before `up`), so a bad setting is refused before compose replaces a
container. Values compose itself refuses (an invalid port) fail `up` before anything changes.
"""

import subprocess
import time
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


def settled(compose: Compose, timeout: float = 180) -> dict[str, tuple]:
    """The snapshot once no container's health check is still `starting` (a pool an earlier test
    restarted turns healthy on its own schedule, which is not a change this test made)."""
    deadline = time.monotonic() + timeout
    while True:
        before = snapshot(compose)
        if all(health != "starting" for _, _, health in before.values()):
            return before
        assert time.monotonic() < deadline, f"health checks still starting after {timeout:.0f}s: {before}"
        time.sleep(1)


def check_settings(stack: Stack, **env: str) -> subprocess.CompletedProcess[str]:
    """What `scripts/stack` does before `up`: run the stack's init (settings, then secrets) on its
    own, next to the running stack, with the new settings."""
    compose = Compose(stack.compose.project, {**stack.compose.env, **env}, stack.compose.files)
    return compose.run("run", "--rm", "--no-deps", "init", check=False, timeout=120)


# Every rule is shown once at the validator (tests/unit/test_settings.py, test_secrets.py); here a
# few bad values show that the running stack's `init` refuses them in the stack's own terms, each
# with its one line, and that nothing running changes. (variables, the lines init prints)
ERROR = "celerykit: configuration error: "
BAD_SETTINGS = [
    ({"CELERYKIT_HIGH_CONCURRENCY": "0"}, ["CELERYKIT_HIGH_CONCURRENCY must be between 1 and 256, got 0"]),
    (
        {"CELERYKIT_MEDIUM_QUEUES": "medium_priority,high_priority"},
        [
            "CELERYKIT_MEDIUM_QUEUES must not list 'high_priority': pool 'high' consumes it (a queue belongs to one"
            " pool), got 'medium_priority,high_priority'"
        ],
    ),
    (
        {"CELERYKIT_SOFT_TIME_LIMIT": "3600", "CELERYKIT_LOG_LEVEL": "LOUD", "CELERYKIT_FLOWER_USER": "ad:min"},
        [
            "CELERYKIT_SOFT_TIME_LIMIT must be below CELERYKIT_TIME_LIMIT (3600), got 3600",
            "CELERYKIT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
            "CELERYKIT_FLOWER_USER must not contain ':' or ',', got 'ad:min'",
        ],
    ),
    (
        {
            "CELERYKIT_ALERT_SMARTHOST": "mail.example.com",
            "CELERYKIT_ALERT_WEBHOOK_URL": "chat.example.com/hook",
            "CELERYKIT_PROMETHEUS_RETENTION": "15x",
            "CELERYKIT_BACKLOG_WARNING": "2000",
        },
        [
            "CELERYKIT_BACKLOG_WARNING must be below CELERYKIT_BACKLOG_CRITICAL (1000), got 2000",
            "CELERYKIT_ALERT_SMARTHOST must be host:port (a port between 1 and 65535), got 'mail.example.com'",
            "CELERYKIT_ALERT_WEBHOOK_URL must be an http:// or https:// URL, got 'chat.example.com/hook'",
            "CELERYKIT_PROMETHEUS_RETENTION must be a Prometheus duration such as 15d, 12h or 2w, got '15x'",
        ],
    ),
    (
        {"CELERYKIT_ALERT_SMARTHOST": "mail.example.com:25", "CELERYKIT_ALERT_MAIL_TO": ""},
        ["CELERYKIT_ALERT_MAIL_TO must list at least one mail address, got []"],
    ),
]

# (secret file, content, the rule init states about it): checked by the same init run, after the settings.
BAD_SECRETS = [
    ("flower_password", "administrator", "is a well-known default password: choose or generate another"),
    ("redis_password", "   \n", "must not be empty"),
    ("flower_cookie_secret", "too-short-for-a-key", "must be at least 32 characters long, got 19"),
]


def init_errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.split(ERROR, 1)[1] for line in (result.stdout + result.stderr).splitlines() if ERROR in line]


@pytest.mark.parametrize(("settings", "lines"), BAD_SETTINGS, ids=["+".join(s) for s, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_by_name_and_the_running_stack_stays_as_it_was(
    stack: Stack, settings: dict[str, str], lines: list[str]
):
    before = settled(stack.compose)
    result = check_settings(stack, **settings)
    assert result.returncode == 78, result.stdout + result.stderr
    assert sorted(init_errors(result)) == sorted(lines)
    assert snapshot(stack.compose) == before


@pytest.mark.parametrize(("secret", "value", "rule"), BAD_SECRETS, ids=[f"{s}={v!r}" for s, v, _ in BAD_SECRETS])
def test_an_empty_or_weak_secret_is_refused_and_the_running_stack_stays_as_it_was(
    stack: Stack, tmp_path: Path, secret: str, value: str, rule: str
):
    before = settled(stack.compose)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / secret).write_text(value)
    result = check_settings(stack, CELERYKIT_SECRETS_DIR=str(tmp_path / "secrets"))
    assert result.returncode == 78, result.stdout + result.stderr
    ((line),) = init_errors(result)
    assert line.startswith(f"secret file /run/celerykit/secrets/{secret} (") and line.endswith(rule), line
    assert snapshot(stack.compose) == before


def test_the_running_stacks_own_settings_pass_the_same_check(stack: Stack):
    """The check does not refuse everything: the settings the stack runs with pass it."""
    result = check_settings(stack)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "settings are valid" in result.stdout + result.stderr


def test_a_failed_up_with_a_port_compose_refuses_leaves_the_running_stack_as_it_was(stack: Stack):
    before = settled(stack.compose)
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
    assert "flower_password (password for Flower's basic auth) is a well-known default password" in bad_stack.logs(
        "init"
    )
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
