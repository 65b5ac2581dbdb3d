"""The roles as a collection: documented by their argument specs, defaults read from the kit,
shared files taken from the kit's package, rules left to the kit's validator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.is_dir())
COMPOSE = yaml.safe_load((ROOT / "compose" / "compose.yaml").read_text())
README = (ROOT / "README.md").read_text()


def load(role: str, path: str):
    return yaml.safe_load((ROOT / "roles" / role / path).read_text()) or {}


def env_keys(template: Path) -> set[str]:
    """Variable names an environment-file template writes."""
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", template.read_text(), flags=re.MULTILINE))


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_is_documented_prefixed_and_validated_on_the_same_spec(role: str):
    specs = load(role, "meta/argument_specs.yml")["argument_specs"]
    assert specs["validate"] == specs["main"], role  # the check playbook checks exactly what the role checks
    options = specs["main"]["options"]
    defaults = {k: v for k, v in load(role, "defaults/main.yml").items() if not k.startswith("_")}
    assert set(defaults) <= set(options), set(defaults) - set(options)
    for name, option in options.items():
        assert name.startswith(f"celerykit_{role}_"), name
        assert option.get("description"), name
        assert "default" not in option, f"{name}: defaults live in defaults/main.yml only"
        assert option.get("required") != (name in defaults), f"{name}: required xor defaulted"


@pytest.mark.parametrize("role", ROLES)
def test_rules_are_left_to_the_kits_validator(role: str):
    """No business rule is written in a role: its validate tasks hand every variable to the kit."""
    tasks = (ROOT / "roles" / role / "tasks").rglob("*.yml")
    text = "\n".join(path.read_text() for path in tasks)
    assert "ansible.builtin.assert" not in text
    validate = load(role, "tasks/validate.yml")
    assert [list(task) for task in validate] == [["name", "celerykit.platform.validate"]]


def test_no_path_climbs_out_of_a_role_or_an_image_folder():
    files = [*(ROOT / "roles").rglob("*"), *(ROOT / "compose").rglob("Dockerfile"), *(ROOT / "playbooks").glob("*")]
    texts = {path.relative_to(ROOT): path.read_text() for path in files if path.is_file()}
    climbing = [str(path) for path, text in texts.items() if "../" in text or "role_path" in text]
    assert climbing == []


def test_readme_role_tables_are_current_and_every_cell_is_one_line():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "role_docs.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    tables = README.split("<!-- role-docs:start -->", 1)[1].split("<!-- role-docs:end -->", 1)[0]
    rows = [line for line in tables.splitlines() if line.startswith("| `") or line.startswith("| &nbsp;")]
    assert len(rows) > 40
    assert all(line.endswith(" |") and line.count(" | ") >= 3 for line in rows), rows
    assert "..." not in tables


def test_the_readme_shows_the_kits_defaults_as_the_roles_apply_them():
    from celerykit import defaults

    for variable, value in [
        ("celerykit_app_visibility_timeout", defaults.VISIBILITY_TIMEOUT),
        ("celerykit_flower_max_tasks", defaults.FLOWER_MAX_TASKS),
        ("celerykit_redis_port", defaults.REDIS_PORT),
    ]:
        assert f"| `{variable}` | int | `{value}` |" in README
    assert "| &nbsp;&nbsp;`.max_tasks_per_child` | int | `{}` |".format(defaults.POOL["max_tasks_per_child"]) in README


@pytest.mark.parametrize(
    ("template", "service"),
    [
        ("roles/worker/templates/etc/celerykit/pools/pool.env.j2", "worker-high"),
        ("roles/flower/templates/etc/celerykit/flower.env.j2", "flower"),
        ("roles/beat/templates/etc/celerykit/beat.env.j2", "beat"),
    ],
)
def test_hosts_and_compose_give_each_service_the_same_settings(template: str, service: str):
    """A setting compose passes but the role never writes (or the reverse) is a knob one side lacks."""
    shared = env_keys(ROOT / "roles/app/templates/etc/celerykit/celery.env.j2")
    on_hosts = shared | env_keys(ROOT / template)
    in_compose = set(COMPOSE["services"][service]["environment"])
    demo_only = {k for k in in_compose if k.startswith("CELERYKIT_DEMO_")}  # the demo app's knobs, not the kit's
    # Compose leaves these to the settings' own defaults; hosts pin them explicitly.
    host_only = {"CELERYKIT_REDIS_PORT", "CELERYKIT_REDIS_DB", "CELERYKIT_REDIS_USER"}
    # Client certificates to Redis are a hosts' option: compose's Redis shares its backend network
    # with the stack's own services only, and asks for none.
    host_only |= {"CELERYKIT_REDIS_CERT_FILE", "CELERYKIT_REDIS_KEY_FILE"}
    # Sentinels are an inventory's (a primary and replicas on several hosts), not a laptop's stack.
    host_only |= {f"CELERYKIT_REDIS_SENTINEL{s}" for s in ("S", "_MASTER", "_PASSWORD_FILE")}
    compose_only = set()
    if service == "worker-high":
        host_only |= {"CELERYKIT_POOL_EXTRA_ARGS"}
        compose_only |= {"CELERYKIT_WORKER_LIVENESS_FILE"}  # for the container's health check
    assert on_hosts - host_only == in_compose - demo_only - compose_only
