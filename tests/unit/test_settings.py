"""Settings validation: every bad value is refused with the variable's name."""

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


# (overrides of a worker's own environment, the one line it is refused with)
BAD_WORKER_SETTINGS = [
    ({"CELERYKIT_POOL_CONCURRENCY": "0"}, "CELERYKIT_POOL_CONCURRENCY must be between 1 and 256, got 0"),
    ({"CELERYKIT_POOL_CONCURRENCY": "-3"}, "CELERYKIT_POOL_CONCURRENCY must be between 1 and 256, got -3"),
    ({"CELERYKIT_POOL_CONCURRENCY": "two"}, "CELERYKIT_POOL_CONCURRENCY must be a whole number, got 'two'"),
    (
        {"CELERYKIT_POOL_MAX_CONCURRENCY": "1"},
        "CELERYKIT_POOL_MAX_CONCURRENCY must be 0 (a fixed size) or at least CELERYKIT_POOL_CONCURRENCY (2), got 1",
    ),
    (
        {"CELERYKIT_POOL_MAX_CONCURRENCY": "300"},
        "CELERYKIT_POOL_MAX_CONCURRENCY must be between 0 and 256, got 300",
    ),
    (
        {"CELERYKIT_POOL_QUEUES": "high priority"},
        "CELERYKIT_POOL_QUEUES must be names of letters, digits, '_', '.', ':', '-', got 'high priority'",
    ),
    (
        {"CELERYKIT_POOL_QUEUES": "a,,b"},
        "CELERYKIT_POOL_QUEUES must be names of letters, digits, '_', '.', ':', '-', got 'a,,b'",
    ),
    ({"CELERYKIT_POOL_QUEUES": "a,a"}, "CELERYKIT_POOL_QUEUES must not list a queue twice, got 'a,a'"),
    ({"CELERYKIT_POOL_NAME": "High Pool"}, "CELERYKIT_POOL_NAME must match ^[a-z][a-z0-9_-]*$, got 'High Pool'"),
    (
        {"CELERYKIT_POOL_SOFT_TIME_LIMIT": "3600"},
        "CELERYKIT_POOL_SOFT_TIME_LIMIT must be below CELERYKIT_POOL_TIME_LIMIT (3600), got 3600",
    ),
    (
        {"CELERYKIT_POOL_TIME_LIMIT": "8000", "CELERYKIT_POOL_SOFT_TIME_LIMIT": "100"},
        "CELERYKIT_POOL_TIME_LIMIT must be below CELERYKIT_VISIBILITY_TIMEOUT (7200), got 8000",
    ),
    ({"CELERYKIT_REDIS_PORT": "70000"}, "CELERYKIT_REDIS_PORT must be between 1 and 65535, got 70000"),
    (
        {"CELERYKIT_REDIS_PASSWORD_FILE": "/nonexistent/secret"},
        "CELERYKIT_REDIS_PASSWORD_FILE must name an existing secret file, got '/nonexistent/secret'",
    ),
    (
        {"CELERYKIT_REDIS_SENTINELS": "s1:26379,s2:26379"},
        "CELERYKIT_REDIS_SENTINELS must list at least 3 Sentinels (a majority must survive the loss of one),"
        " got ['s1:26379', 's2:26379']",
    ),
    (
        {"CELERYKIT_REDIS_SENTINELS": "s1,s2,s1"},
        "CELERYKIT_REDIS_SENTINELS must name each Sentinel once, got ['s1', 's2', 's1']",
    ),
    (
        {"CELERYKIT_REDIS_SENTINELS": "s1,s2,s3"},
        "CELERYKIT_REDIS_SENTINEL_PASSWORD_FILE must be set to the path of a secret file",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_WORKER_SETTINGS)
def test_bad_worker_settings_are_refused_with_one_line_naming_the_variable(base_env, overrides, message):
    with pytest.raises(ConfigError) as error:
        worker_command(Env({**base_env, **overrides}))
    assert str(error.value) == message


def test_weak_redis_password_is_refused(base_env, tmp_path):
    (tmp_path / "redis").write_text("celery")
    with pytest.raises(ConfigError) as error:
        worker_command(Env(base_env))
    assert str(error.value) == "CELERYKIT_REDIS_PASSWORD_FILE must be at least 12 characters long, got 6"


def test_worker_command_carries_the_pool_and_field_defaults_but_no_secret(base_env):
    command = worker_command(Env(base_env))
    assert "--hostname=high@%h" in command
    assert "--queues=high_priority" in command
    assert {"--time-limit=3600", "--soft-time-limit=3300", "--max-tasks-per-child=1000"} <= set(command)
    assert "--max-memory-per-child=524288" in command  # KiB: the pool's 512 MiB
    assert "--prefetch-multiplier=1" in command
    assert not any("a-generated-password" in arg for arg in command)


def test_a_pool_is_a_fixed_size_unless_it_has_a_maximum_to_grow_to(base_env):
    assert not [arg for arg in worker_command(Env(base_env)) if arg.startswith("--autoscale")]
    command = worker_command(Env({**base_env, "CELERYKIT_POOL_MAX_CONCURRENCY": "6"}))
    assert "--autoscale=6,2" in command  # Celery's order: max,min; the pool starts with the minimum


def test_kit_settings_keep_visibility_timeout_consistent_and_json_only(base_env):
    settings = kit_settings(Env(base_env))
    assert settings["broker_transport_options"]["visibility_timeout"] == 7200
    assert settings["result_backend_transport_options"]["visibility_timeout"] == 7200
    assert settings["accept_content"] == ["json"]
    assert settings["task_acks_late"] and settings["task_reject_on_worker_lost"]
    assert settings["broker_url"].startswith("redis://celery:a-generated-password-of-32-chars@")


def test_pool_defaults(base_env):
    pool = Pool.from_env(Env(base_env))
    assert (pool.time_limit, pool.soft_time_limit, pool.max_tasks_per_child) == (3600, 3300, 1000)
    assert pool.max_memory_per_child == 512


def test_a_pool_without_a_memory_limit_passes_none(base_env):
    """0 is no limit: no option at all (Celery would take a configured default for a 0 given)."""
    command = worker_command(Env({**base_env, "CELERYKIT_POOL_MAX_MEMORY_PER_CHILD": "0"}))
    assert not [arg for arg in command if arg.startswith("--max-memory-per-child")]


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


# The compose stack's settings as its user sets them (what `init` checks), each with the one line
# it is refused with. The compose suite shows a few of them end to end on a running stack.
BAD_STACK_SETTINGS = [
    ("CELERYKIT_HIGH_CONCURRENCY", "0", "CELERYKIT_HIGH_CONCURRENCY must be between 1 and 256, got 0"),
    ("CELERYKIT_MEDIUM_CONCURRENCY", "-2", "CELERYKIT_MEDIUM_CONCURRENCY must be between 1 and 256, got -2"),
    ("CELERYKIT_LOW_CONCURRENCY", "many", "CELERYKIT_LOW_CONCURRENCY must be a whole number, got 'many'"),
    ("CELERYKIT_LOW_CONCURRENCY", "1000", "CELERYKIT_LOW_CONCURRENCY must be between 1 and 256, got 1000"),
    (
        "CELERYKIT_HIGH_QUEUES",
        "high priority",
        "CELERYKIT_HIGH_QUEUES must be names of letters, digits, '_', '.', ':', '-', got 'high priority'",
    ),
    (
        "CELERYKIT_LOW_QUEUES",
        "low_priority,",
        "CELERYKIT_LOW_QUEUES must be names of letters, digits, '_', '.', ':', '-', got 'low_priority,'",
    ),
    (
        "CELERYKIT_MEDIUM_QUEUES",
        "default,default",
        "CELERYKIT_MEDIUM_QUEUES must not list a queue twice, got 'default,default'",
    ),
    (
        "CELERYKIT_MEDIUM_QUEUES",
        "medium_priority,high_priority",
        "CELERYKIT_MEDIUM_QUEUES must not list 'high_priority': pool 'high' consumes it (a queue belongs to one pool),"
        " got 'medium_priority,high_priority'",
    ),
    (
        "CELERYKIT_LOW_MAX_CONCURRENCY",
        "0.5",
        "CELERYKIT_LOW_MAX_CONCURRENCY must be a whole number, got '0.5'",
    ),
    ("CELERYKIT_HIGH_PREFETCH_MULTIPLIER", "0", "CELERYKIT_HIGH_PREFETCH_MULTIPLIER must be at least 1, got 0"),
    ("CELERYKIT_LOW_MAX_TASKS_PER_CHILD", "0", "CELERYKIT_LOW_MAX_TASKS_PER_CHILD must be at least 1, got 0"),
    (
        "CELERYKIT_MEDIUM_MAX_MEMORY_PER_CHILD",
        "-1",
        "CELERYKIT_MEDIUM_MAX_MEMORY_PER_CHILD must be at least 0, got -1",
    ),
    (
        "CELERYKIT_SOFT_TIME_LIMIT",
        "3600",
        "CELERYKIT_SOFT_TIME_LIMIT must be below CELERYKIT_TIME_LIMIT (3600), got 3600",
    ),
    (
        "CELERYKIT_TIME_LIMIT",
        "9000",
        "CELERYKIT_TIME_LIMIT must be below CELERYKIT_VISIBILITY_TIMEOUT (7200), got 9000",
    ),
    ("CELERYKIT_VISIBILITY_TIMEOUT", "30", "CELERYKIT_VISIBILITY_TIMEOUT must be at least 60, got 30"),
    (
        "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES",
        "0",
        "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES must be at least 1, got 0",
    ),
    (
        "CELERYKIT_LOG_LEVEL",
        "LOUD",
        "CELERYKIT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
    ),
    ("CELERYKIT_HTTPS_PORT", "0", "CELERYKIT_HTTPS_PORT must be between 1 and 65535, got 0"),
    ("CELERYKIT_HTTP_PORT", "8443", "CELERYKIT_HTTP_PORT must differ from CELERYKIT_HTTPS_PORT (8443), got 8443"),
    ("CELERYKIT_FLOWER_USER", "ad:min", "CELERYKIT_FLOWER_USER must not contain ':' or ',', got 'ad:min'"),
    ("CELERYKIT_FLOWER_MAX_TASKS", "0", "CELERYKIT_FLOWER_MAX_TASKS must be at least 1, got 0"),
    (
        "CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS",
        "10",
        "CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS must be at least 1000, got 10",
    ),
    (
        "CELERYKIT_FLOWER_URL_PREFIX",
        "a/b",
        "CELERYKIT_FLOWER_URL_PREFIX must be one path segment of letters, digits, '_', '-', got 'a/b'",
    ),
    ("CELERYKIT_LOW_REPLICAS", "0", "CELERYKIT_LOW_REPLICAS must be between 1 and 16, got 0"),
    ("CELERYKIT_HIGH_REPLICAS", "17", "CELERYKIT_HIGH_REPLICAS must be between 1 and 16, got 17"),
]


@pytest.mark.parametrize(
    ("setting", "value", "message"), BAD_STACK_SETTINGS, ids=[f"{s}={v}" for s, v, _ in BAD_STACK_SETTINGS]
)
def test_a_bad_stack_setting_is_refused_with_one_line_naming_it(setting, value, message):
    with pytest.raises(ConfigError) as error:
        check_deployment(Env({setting: value}))
    assert str(error.value) == message


def test_several_bad_stack_settings_are_all_listed_one_line_each():
    with pytest.raises(ConfigError) as error:
        check_deployment(Env({setting: value for setting, value, _ in BAD_STACK_SETTINGS[::4]}))
    assert sorted(str(error.value).splitlines()) == sorted(message for _, _, message in BAD_STACK_SETTINGS[::4])


def test_deployment_check_accepts_the_kits_defaults():
    pools = check_deployment(Env({}))
    assert {p.name: (p.queues, p.concurrency) for p in pools} == DEFAULT_POOLS


def test_behind_sentinels_the_broker_and_results_ask_them_for_the_primary(base_env, tmp_path):
    (tmp_path / "sentinel").write_text("a-sentinel-password-of-32-chars\n")
    sentinels = {
        "CELERYKIT_REDIS_SENTINELS": "redis1:26379,redis2,redis3:26380",
        "CELERYKIT_REDIS_SENTINEL_PASSWORD_FILE": str(tmp_path / "sentinel"),
        "CELERYKIT_REDIS_TLS": "true",
        "CELERYKIT_REDIS_CA_FILE": str(tmp_path / "sentinel"),  # any readable file: not opened here
    }
    settings = kit_settings(Env({**base_env, **sentinels}))
    hosts = [url.split("@")[1] for url in settings["broker_url"].split(";")]
    assert hosts == ["redis1:26379/0", "redis2:26379/0", "redis3:26380/0"]
    assert settings["result_backend"] == settings["broker_url"]
    for options in (settings["broker_transport_options"], settings["result_backend_transport_options"]):
        assert options["master_name"] == "celerykit"
        assert options["sentinel_kwargs"]["password"] == "a-sentinel-password-of-32-chars"  # noqa: S105
        assert options["sentinel_kwargs"]["ssl"] is True and options["sentinel_kwargs"]["ssl_check_hostname"] is True
