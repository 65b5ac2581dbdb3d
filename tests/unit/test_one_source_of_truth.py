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
