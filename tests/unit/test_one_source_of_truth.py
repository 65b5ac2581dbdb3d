"""Compose and the kit's defaults say the same thing; compose uses the shared files, not copies."""

from pathlib import Path

import yaml

from celerykit.settings import DEFAULT_POOLS, FLOWER_MAX_TASKS, SOFT_TIME_LIMIT, TIME_LIMIT

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())


def default_of(value: str) -> str:
    """`${VAR:-default}` -> default."""
    return value.split(":-", 1)[1].rstrip("}") if ":-" in str(value) else str(value)


def test_compose_pools_match_the_kits_default_pools():
    pools = {}
    for name, service in COMPOSE["services"].items():
        env = service.get("environment", {})
        if "CELERYKIT_POOL_NAME" in env:
            pools[env["CELERYKIT_POOL_NAME"]] = (
                tuple(default_of(env["CELERYKIT_POOL_QUEUES"]).split(",")),
                int(default_of(env["CELERYKIT_POOL_CONCURRENCY"])),
            )
            assert name == f"worker-{env['CELERYKIT_POOL_NAME']}"
            assert int(default_of(env["CELERYKIT_POOL_TIME_LIMIT"])) == TIME_LIMIT
            assert int(default_of(env["CELERYKIT_POOL_SOFT_TIME_LIMIT"])) == SOFT_TIME_LIMIT
    assert pools == DEFAULT_POOLS


def test_compose_flower_limits_match_the_kit():
    env = COMPOSE["services"]["flower"]["environment"]
    assert int(default_of(env["CELERYKIT_FLOWER_MAX_TASKS"])) == FLOWER_MAX_TASKS


def test_worker_stop_grace_period_exceeds_the_soft_time_limit():
    grace = default_of(COMPOSE["services"]["worker-low"]["stop_grace_period"])
    assert int(grace.rstrip("s")) > SOFT_TIME_LIMIT


def test_images_copy_the_shared_redis_and_nginx_files():
    redis = (ROOT / "compose/images/redis/Dockerfile").read_text()
    nginx = (ROOT / "compose/images/nginx/Dockerfile").read_text()
    assert "COPY roles/celerykit_redis/files/celerykit-broker.conf" in redis
    assert "COPY nginx/celerykit.conf.j2" in nginx
    assert "include /etc/redis/celerykit-broker.conf" in (ROOT / "compose/images/redis/redis.conf").read_text()


def test_only_nginx_publishes_ports():
    published = {name for name, service in COMPOSE["services"].items() if service.get("ports")}
    assert published == {"nginx"}
    for port in COMPOSE["services"]["nginx"]["ports"]:
        assert port.startswith("${CELERYKIT_BIND:-127.0.0.1}:")


def test_init_checks_exactly_what_the_pools_and_flower_run_with():
    """The settings init validates are the same variables, with the same defaults, that the
    workers, Flower and nginx get: a check of other values would prove nothing."""
    services = COMPOSE["services"]
    init = services["init"]["environment"]
    for name, service in services.items():
        env = service.get("environment", {})
        if "CELERYKIT_POOL_NAME" not in env:
            continue
        pool = env["CELERYKIT_POOL_NAME"].upper()
        assert env["CELERYKIT_POOL_QUEUES"] == init[f"CELERYKIT_{pool}_QUEUES"], name
        assert env["CELERYKIT_POOL_CONCURRENCY"] == init[f"CELERYKIT_{pool}_CONCURRENCY"], name
        assert env["CELERYKIT_POOL_PREFETCH_MULTIPLIER"] == init[f"CELERYKIT_{pool}_PREFETCH_MULTIPLIER"], name
        assert env["CELERYKIT_POOL_TIME_LIMIT"] == init["CELERYKIT_TIME_LIMIT"], name
        assert env["CELERYKIT_POOL_SOFT_TIME_LIMIT"] == init["CELERYKIT_SOFT_TIME_LIMIT"], name
        for shared in (
            "CELERYKIT_VISIBILITY_TIMEOUT",
            "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES",
            "CELERYKIT_LOG_LEVEL",
        ):
            assert env[shared] == init[shared], (name, shared)
    assert init["CELERYKIT_POOLS"].split(",") == [
        s["environment"]["CELERYKIT_POOL_NAME"]
        for s in services.values()
        if "CELERYKIT_POOL_NAME" in s.get("environment", {})
    ]
    flower = services["flower"]["environment"]
    for key in ("CELERYKIT_FLOWER_USER", "CELERYKIT_FLOWER_MAX_TASKS", "CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS"):
        assert flower[key] == init[key], key
    assert services["nginx"]["environment"]["CELERYKIT_HTTPS_PORT"] == init["CELERYKIT_HTTPS_PORT"]


def test_flower_listens_on_the_proxy_network_only():
    services = COMPOSE["services"]
    flower, nginx = services["flower"], services["nginx"]
    alias = flower["environment"]["CELERYKIT_FLOWER_ADDRESS"]
    assert flower["networks"]["proxy"]["aliases"] == [alias]
    assert nginx["environment"]["CELERYKIT_FLOWER_UPSTREAM"].startswith(f"{alias}:")
    on_proxy = {name for name, s in services.items() if "proxy" in (s.get("networks") or [])}
    assert on_proxy == {"flower", "nginx"}
