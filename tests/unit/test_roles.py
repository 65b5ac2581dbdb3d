"""The roles' documentation, defaults and environment files agree with each other, with the kit's
Python defaults and with the compose stack: the same knowledge, written once or checked equal."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from celerykit import settings

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())
COMPOSE = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())


def load(role: str, path: str):
    return yaml.safe_load((ROOT / "roles" / role / path).read_text()) or {}


def env_keys(template: Path) -> set[str]:
    """Variable names an environment-file template writes."""
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", template.read_text(), flags=re.MULTILINE))


def test_every_role_has_an_argument_spec_and_a_validate_entry_point():
    assert sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir()) == ROLES
    for role in ROLES:
        specs = load(role, "meta/argument_specs.yml")["argument_specs"]
        assert specs["validate"] == specs["main"], role  # the preflight play checks exactly what the role checks


@pytest.mark.parametrize("role", ROLES)
def test_argument_spec_documents_every_default_with_its_value(role: str):
    defaults = load(role, "defaults/main.yml")
    options = load(role, "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    public_defaults = {k: v for k, v in defaults.items() if not k.startswith("_")}
    assert set(public_defaults) <= set(options), set(public_defaults) - set(options)
    for name, option in options.items():
        assert name.startswith(f"{role}_"), name
        assert option.get("description"), name
        if option.get("required"):
            assert name not in defaults, f"{name} is required: it must have no default"
            continue
        assert name in defaults, f"{name} is documented but has no default"
        if isinstance(defaults[name], str) and "{{" in defaults[name]:
            continue  # derived from another role's setting; the spec shows the value it takes by default
        assert option["default"] == defaults[name], name


def test_worker_defaults_are_the_kits_default_pools():
    pools = load("celerykit_worker", "defaults/main.yml")["celerykit_worker_pools"]
    assert {p["name"]: (tuple(p["queues"]), p["concurrency"]) for p in pools} == settings.DEFAULT_POOLS
    per_pool = load("celerykit_worker", "vars/main.yml")["__celerykit_worker_pool_defaults"]
    assert per_pool == {
        "concurrency": 1,
        "prefetch_multiplier": settings.PREFETCH_MULTIPLIER,
        "max_tasks_per_child": settings.MAX_TASKS_PER_CHILD,
        "time_limit": settings.TIME_LIMIT,
        "soft_time_limit": settings.SOFT_TIME_LIMIT,
        "extra_args": [],
    }


def test_app_and_flower_defaults_are_the_kits():
    app = load("celerykit_app", "defaults/main.yml")
    assert app["celerykit_app_visibility_timeout"] == settings.VISIBILITY_TIMEOUT
    assert app["celerykit_app_broker_connection_max_retries"] == settings.BROKER_CONNECTION_MAX_RETRIES
    assert load("celerykit_flower", "defaults/main.yml")["celerykit_flower_max_tasks"] == settings.FLOWER_MAX_TASKS


@pytest.mark.parametrize(
    ("template", "service"),
    [
        ("roles/celerykit_worker/templates/etc/celerykit/pools/pool.env.j2", "worker-high"),
        ("roles/celerykit_flower/templates/etc/celerykit/flower.env.j2", "flower"),
        ("roles/celerykit_beat/templates/etc/celerykit/beat.env.j2", "beat"),
    ],
)
def test_hosts_and_compose_give_each_service_the_same_settings(template: str, service: str):
    """A setting compose passes but the role never writes (or the reverse) is drift."""
    shared = env_keys(ROOT / "roles/celerykit_app/templates/etc/celerykit/celery.env.j2")
    on_hosts = shared | env_keys(ROOT / template)
    in_compose = set(COMPOSE["services"][service]["environment"])
    demo_only = {k for k in in_compose if k.startswith("CELERYKIT_DEMO_")}  # the demo app's knobs, not the kit's
    # Compose leaves these to the settings' own defaults; hosts pin them explicitly.
    host_only = {"CELERYKIT_REDIS_PORT", "CELERYKIT_REDIS_DB"}
    if service == "worker-high":
        host_only |= {"CELERYKIT_POOL_MAX_TASKS_PER_CHILD", "CELERYKIT_POOL_EXTRA_ARGS"}
    assert on_hosts - host_only == in_compose - demo_only


def test_units_and_proxy_render_from_the_shared_templates():
    """The roles render the files in systemd/ and nginx/ (the compose image renders nginx's too)."""
    used = "\n".join(p.read_text() for p in (ROOT / "roles").rglob("tasks/*.yml"))
    for template in [*(ROOT / "systemd").glob("*.service.j2"), ROOT / "nginx" / "celerykit.conf.j2"]:
        assert f"../../{template.parent.name}/{template.name}" in used, template.name
    assert "COPY nginx/celerykit.conf.j2" in (ROOT / "compose/images/nginx/Dockerfile").read_text()


def test_well_known_passwords_are_one_list_for_services_and_roles():
    listed = (ROOT / "src/celerykit/well_known_passwords.txt").read_text().split()
    assert frozenset(listed) == settings.WELL_KNOWN_PASSWORDS
    for role in ("celerykit_app", "celerykit_redis", "celerykit_flower"):
        assert "well_known_passwords.txt" in (ROOT / "roles" / role / "tasks" / "validate.yml").read_text(), role


def test_readme_role_tables_are_generated_from_the_argument_specs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role_docs.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_redis_acl_rules_are_the_same_on_hosts_and_in_compose():
    """The role's ACL template and the compose image's printf format say the same, user and hash aside."""
    role = (ROOT / "roles/celerykit_redis/templates/etc/redis/users.acl.j2").read_text()
    as_printf = re.sub(r"\{\{.*?\}\}", "%s", role).rstrip("\n").replace("\n", "\\n")
    assert "user default off resetpass ~* &* +@all" in role
    assert f"'{as_printf}\\n'" in (ROOT / "compose/images/redis/entrypoint.sh").read_text()
