"""Compose states no default of its own: the kit's defaults apply; the images take the shared files."""

import re
from pathlib import Path

import yaml

from celerykit import defaults

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "compose" / "compose.yaml").read_text()
COMPOSE = yaml.safe_load(TEXT)
# Values compose must know itself: what it publishes, names, images, the demo app's knobs.
COMPOSE_OWN = re.compile(
    r"CELERYKIT_(HTTPS?_PORT|BIND|PROJECT|IMAGE|\w+_IMAGE|APP|APP_DIR|SECRETS_DIR|TLS_DIR"
    r"|SERVER_NAME|WORKER_STOP_GRACE_PERIOD|PIP_CA_BUNDLE|DEMO_\w+|GRAFANA_PORT|\w+_REPLICAS)$"
)


def test_every_kit_setting_compose_passes_is_left_empty_for_the_kits_default():
    given = re.findall(r"\$\{(CELERYKIT_\w+):-([^}]*)\}", TEXT)
    with_defaults = {name: value for name, value in given if value and not COMPOSE_OWN.match(name)}
    assert with_defaults == {}


def test_compose_runs_the_kits_default_replicas_per_pool():
    """deploy.replicas needs a number when the variable is unset: compose states the kit's default."""
    assert set(re.findall(r"\$\{CELERYKIT_\w+_REPLICAS:-([^}]*)\}", TEXT)) == {str(defaults.REPLICAS)}
    for pool in defaults.POOLS:
        assert COMPOSE["services"][f"worker-{pool['name']}"]["deploy"]["replicas"].startswith(
            f"${{CELERYKIT_{pool['name'].upper()}_REPLICAS:-"
        )


def test_worker_stop_grace_period_exceeds_the_kits_soft_time_limit():
    grace = re.search(r"CELERYKIT_WORKER_STOP_GRACE_PERIOD:-(\d+)s", TEXT).group(1)
    assert int(grace) > defaults.POOL["soft_time_limit"]


def test_images_take_the_shared_files_from_the_kits_package():
    redis = (ROOT / "compose/images/redis/Dockerfile").read_text()
    nginx = (ROOT / "compose/images/nginx/Dockerfile").read_text()
    assert "COPY src/celerykit/share/redis/celerykit-broker.conf src/celerykit/share/redis/users.acl.in" in redis
    assert "COPY src/celerykit /usr/local/lib/celerykit/celerykit" in nginx
    assert "include /etc/redis/celerykit-broker.conf" in (ROOT / "compose/images/redis/redis.conf").read_text()


def test_the_celery_image_is_built_once_for_every_service_that_runs_it():
    services = COMPOSE["services"]
    image = services["init"]["image"]
    users = [name for name, s in services.items() if s.get("image") == image]
    assert {"worker-high", "worker-medium", "worker-low", "beat", "flower"} <= set(users)
    assert [name for name in users if "build" in services[name]] == ["init"]


def test_only_nginx_publishes_ports_but_for_the_optional_grafana_on_loopback():
    services = COMPOSE["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"nginx", "grafana"}
    for port in services["nginx"]["ports"]:
        assert port.startswith("${CELERYKIT_BIND:-127.0.0.1}:")
    assert services["grafana"]["profiles"] == ["grafana"]
    assert all(port.startswith("127.0.0.1:") for port in services["grafana"]["ports"])


def test_init_checks_exactly_what_the_pools_and_flower_run_with():
    """The variables init validates are the ones the workers, Flower and nginx get."""
    services = COMPOSE["services"]
    init = services["init"]["environment"]
    pools = []
    for service in services.values():
        env = service.get("environment", {})
        if "CELERYKIT_POOL_NAME" not in env:
            continue
        pool = env["CELERYKIT_POOL_NAME"]
        pools.append(pool)
        per_pool = [key.upper() for key in defaults.POOL if key not in ("time_limit", "soft_time_limit")]
        for key in ("QUEUES", *per_pool):
            assert env[f"CELERYKIT_POOL_{key}"] == init[f"CELERYKIT_{pool.upper()}_{key}"], (pool, key)
        for key in ("TIME_LIMIT", "SOFT_TIME_LIMIT"):
            assert env[f"CELERYKIT_POOL_{key}"] == init[f"CELERYKIT_{key}"], (pool, key)
        for shared in (
            "CELERYKIT_VISIBILITY_TIMEOUT",
            "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES",
            "CELERYKIT_LOG_LEVEL",
        ):
            assert env[shared] == init[shared], (pool, shared)
    assert init["CELERYKIT_POOLS"].split(",") == pools == [p["name"] for p in defaults.POOLS]
    flower = services["flower"]["environment"]
    for key in ("CELERYKIT_FLOWER_USER", "CELERYKIT_FLOWER_MAX_TASKS", "CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS"):
        assert flower[key] == init[key], key
    assert services["nginx"]["environment"]["CELERYKIT_HTTPS_PORT"] == init["CELERYKIT_HTTPS_PORT"]


def test_flower_listens_on_the_proxy_network_only_which_nginx_and_prometheus_share():
    services = COMPOSE["services"]
    flower, nginx = services["flower"], services["nginx"]
    alias = flower["environment"]["CELERYKIT_FLOWER_ADDRESS"]
    assert flower["networks"]["proxy"]["aliases"] == [alias]
    assert nginx["environment"]["CELERYKIT_FLOWER_UPSTREAM"].startswith(f"{alias}:")
    on_proxy = {name for name, s in services.items() if "proxy" in (s.get("networks") or [])}
    assert on_proxy == {"flower", "nginx", "prometheus"}  # Prometheus: Flower's /metrics
