"""Bad input stops the start with a message naming the setting, before the bad part runs."""

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Compose, compose_env


@pytest.fixture
def bad_stack(tmp_path: Path) -> Iterator[Compose]:
    compose = Compose(f"celerykit-bad-{uuid.uuid4().hex[:8]}", compose_env(tmp_path))
    yield compose
    compose.down()


def write_secret(compose: Compose, name: str, value: str) -> None:
    directory = Path(compose.env["CELERYKIT_SECRETS_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(value)


@pytest.mark.parametrize(
    ("secret", "value", "message"),
    [
        ("flower_password", "", "flower_password (password for Flower's basic auth) is empty"),
        ("redis_password", "   \n", "redis_password (password of the Redis ACL user"),
        ("flower_password", "administrator", "well-known default"),
        ("flower_password", "short", "shorter than 12 characters"),
        ("flower_cookie_secret", "too-short-for-a-key", "shorter than 32 characters"),
    ],
)
def test_an_empty_or_weak_secret_stops_the_stack_before_anything_starts(bad_stack, secret, value, message):
    write_secret(bad_stack, secret, value)
    result = bad_stack.run("up", "--detach", "--wait", check=False)
    assert result.returncode != 0
    assert message in bad_stack.logs("init")
    running = {name for name, s in bad_stack.services().items() if s["State"] == "running"}
    assert not running, running


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("CELERYKIT_HIGH_CONCURRENCY", "0", "pool 'high': CELERYKIT_POOL_CONCURRENCY must be between 1 and 256, got 0"),
        ("CELERYKIT_HIGH_QUEUES", "high priority", "'high priority' is not a valid queue name"),
        ("CELERYKIT_SOFT_TIME_LIMIT", "3600", "CELERYKIT_POOL_SOFT_TIME_LIMIT (3600) must be below"),
    ],
)
def test_an_invalid_pool_setting_keeps_the_pool_from_starting(bad_stack, setting, value, message):
    bad_stack.env[setting] = value
    result = bad_stack.run("up", "--detach", "--wait", "worker-high", check=False)
    assert result.returncode != 0
    assert message in bad_stack.logs("worker-high")


def test_an_invalid_port_is_refused_by_compose(bad_stack):
    bad_stack.env["CELERYKIT_HTTPS_PORT"] = "99999"
    result = bad_stack.run("up", "--detach", check=False)
    assert result.returncode != 0
    assert "99999" in result.stderr
    containers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={bad_stack.project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert not containers.strip()


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
