"""Settings validation: every bad value is refused with the variable's name."""

import re
from pathlib import Path

import pytest

from celerykit.celeryconfig import kit_settings
from celerykit.services import worker_command
from celerykit.settings import DEFAULT_POOLS, ConfigError, Env, Pool, check_deployment


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "redis").write_text("a-generated-password-of-32-chars\n")
    return {
        "CELERYKIT_REDIS_PASSWORD_FILE": str(tmp_path / "redis"),
        "CELERYKIT_POOL_NAME": "high",
        "CELERYKIT_POOL_QUEUES": "high_priority",
        "CELERYKIT_POOL_CONCURRENCY": "2",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"CELERYKIT_POOL_CONCURRENCY": "0"}, "CELERYKIT_POOL_CONCURRENCY must be between 1 and 256, got 0"),
        ({"CELERYKIT_POOL_CONCURRENCY": "-3"}, "CELERYKIT_POOL_CONCURRENCY must be between 1 and 256, got -3"),
        ({"CELERYKIT_POOL_CONCURRENCY": "two"}, "CELERYKIT_POOL_CONCURRENCY must be a whole number"),
        ({"CELERYKIT_POOL_QUEUES": "high priority"}, "'high priority' is not a valid queue name"),
        ({"CELERYKIT_POOL_QUEUES": "a,,b"}, "'' is not a valid queue name"),
        ({"CELERYKIT_POOL_QUEUES": "a,a"}, "CELERYKIT_POOL_QUEUES lists a queue twice"),
        ({"CELERYKIT_POOL_NAME": "High Pool"}, "CELERYKIT_POOL_NAME: 'High Pool' must match"),
        ({"CELERYKIT_POOL_SOFT_TIME_LIMIT": "3600"}, "CELERYKIT_POOL_SOFT_TIME_LIMIT (3600) must be below"),
        (
            {"CELERYKIT_POOL_TIME_LIMIT": "8000", "CELERYKIT_POOL_SOFT_TIME_LIMIT": "100"},
            "CELERYKIT_VISIBILITY_TIMEOUT",
        ),
        ({"CELERYKIT_REDIS_PORT": "70000"}, "CELERYKIT_REDIS_PORT must be between 1 and 65535, got 70000"),
        ({"CELERYKIT_REDIS_PASSWORD_FILE": "/nonexistent/secret"}, "secret file /nonexistent/secret does not exist"),
    ],
)
def test_bad_worker_settings_are_refused_naming_the_variable(base_env, overrides, message):
    with pytest.raises(ConfigError, match=None) as error:
        worker_command(Env({**base_env, **overrides}))
    assert message in str(error.value)


def test_weak_redis_password_is_refused(base_env, tmp_path):
    (tmp_path / "redis").write_text("celery")
    with pytest.raises(ConfigError, match="CELERYKIT_REDIS_PASSWORD_FILE: password is shorter than 12"):
        worker_command(Env(base_env))


def test_worker_command_carries_the_pool_and_field_defaults_but_no_secret(base_env):
    command = worker_command(Env(base_env))
    assert "--hostname=high@%h" in command
    assert "--queues=high_priority" in command
    assert {"--time-limit=3600", "--soft-time-limit=3300", "--max-tasks-per-child=100"} <= set(command)
    assert "--prefetch-multiplier=1" in command
    assert not any("a-generated-password" in arg for arg in command)


def test_kit_settings_keep_visibility_timeout_consistent_and_json_only(base_env):
    settings = kit_settings(Env(base_env))
    assert settings["broker_transport_options"]["visibility_timeout"] == 7200
    assert settings["result_backend_transport_options"] == settings["broker_transport_options"]
    assert settings["accept_content"] == ["json"]
    assert settings["task_acks_late"] and settings["task_reject_on_worker_lost"]
    assert settings["broker_url"].startswith("redis://celery:a-generated-password-of-32-chars@")


def test_pool_defaults(base_env):
    pool = Pool.from_env(Env(base_env))
    assert (pool.time_limit, pool.soft_time_limit, pool.max_tasks_per_child) == (3600, 3300, 100)


def test_broker_retry_budget_defaults_to_celerys_and_is_validated(base_env):
    assert kit_settings(Env(base_env))["broker_connection_max_retries"] == 100
    assert (
        kit_settings(Env({**base_env, "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES": "3"}))["broker_connection_max_retries"]
        == 3
    )
    with pytest.raises(ConfigError, match="CELERYKIT_BROKER_CONNECTION_MAX_RETRIES must be at least 1, got 0"):
        kit_settings(Env({**base_env, "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES": "0"}))


def test_beat_writes_its_schedule_after_every_task_it_sends(base_env):
    assert kit_settings(Env(base_env))["beat_sync_every"] == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"CELERYKIT_HIGH_CONCURRENCY": "0"}, "pool 'high': CELERYKIT_HIGH_CONCURRENCY must be between 1 and 256"),
        ({"CELERYKIT_LOW_QUEUES": "low priority"}, "CELERYKIT_LOW_QUEUES: 'low priority' is not a valid queue name"),
        ({"CELERYKIT_MEDIUM_QUEUES": "default,high_priority"}, "queue 'high_priority' is already consumed by pool"),
        ({"CELERYKIT_SOFT_TIME_LIMIT": "4000"}, "CELERYKIT_SOFT_TIME_LIMIT (4000) must be below CELERYKIT_TIME_LIMIT"),
        ({"CELERYKIT_VISIBILITY_TIMEOUT": "3000"}, "CELERYKIT_TIME_LIMIT (3600) must be below CELERYKIT_VISIBILITY"),
        ({"CELERYKIT_LOG_LEVEL": "chatty"}, "CELERYKIT_LOG_LEVEL must be one of"),
        ({"CELERYKIT_HTTPS_PORT": "8080"}, "CELERYKIT_HTTPS_PORT and CELERYKIT_HTTP_PORT must differ"),
        ({"CELERYKIT_HTTP_PORT": "65536"}, "CELERYKIT_HTTP_PORT must be between 1 and 65535"),
        ({"CELERYKIT_BROKER_CONNECTION_MAX_RETRIES": "-1"}, "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES must be"),
    ],
)
def test_deployment_check_names_the_variable_the_user_sets(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_deployment(Env(overrides))


def test_deployment_check_accepts_the_kits_defaults():
    pools = check_deployment(Env({}))
    assert {p.name: (p.queues, p.concurrency) for p in pools} == DEFAULT_POOLS
