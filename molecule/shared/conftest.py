"""What the verify tests need from a Molecule-deployed inventory: its hosts, the pools each worker
host was asked to run, and a client for the HTTPS proxy in front of Flower.

The expectations come from the inventory (what the user asked for), the observations from the
hosts and from outside (what they do). Molecule runs these with `--connection=ansible` and its
inventory; MOLECULE_INVENTORY_FILE names that inventory.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import testinfra
from celerykit_testing import drills, monitoring_drills
from celerykit_testing.monitoring_drills import Monitoring
from celerykit_testing.systemd import SystemdDeployment
from celerykit_testing.timing import pytest_runtest_logreport, pytest_sessionfinish  # noqa: F401 (hooks)

from celerykit.settings import DEFAULT_POOLS
from celerykit.verify import checks
from celerykit.verify.target import Target

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
ROOT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY") or Path(__file__).resolve().parents[2])


def hosts(group: str) -> list[testinfra.host.Host]:
    return testinfra.get_hosts([f"ansible://{group}"], ansible_inventory=INVENTORY)


def pools_of(host: testinfra.host.Host) -> dict[str, tuple[str, ...]]:
    """Pool name -> queues, as the inventory asks of this worker host (the role's default otherwise)."""
    pools = host.ansible.get_variables().get("celerykit_worker_pools")
    if pools is None:
        return {name: queues for name, (queues, _) in DEFAULT_POOLS.items()}
    return {pool["name"]: tuple(pool["queues"]) for pool in pools}


def expected_workers() -> dict[str, tuple[str, ...]]:
    """Worker name (pool@hostname) -> queues, for every worker host of the inventory."""
    return {
        f"{pool}@{host.check_output('hostname')}": queues
        for host in hosts("celery_workers")
        for pool, queues in pools_of(host).items()
    }


def unit_names(host: testinfra.host.Host) -> list[str]:
    """The units the inventory puts on this host."""
    groups = set(host.ansible.get_variables().get("group_names", []))
    units = []
    if "redis" in groups:
        units.append("redis-server")
    if "celery_workers" in groups:
        units += [f"celery-worker@{pool}" for pool in pools_of(host)]
    if "celery_beat" in groups:
        units.append("celery-beat")
    if "flower" in groups:
        units += ["flower", "nginx"]
    return units


# The inventory's passwords (with replicas and Sentinels: multinode, the last two as well).
SECRET_VARIABLES = (
    "celerykit_redis_password",
    "celerykit_app_redis_password",
    "celerykit_flower_password",
    "celerykit_redis_replication_password",
    "celerykit_redis_sentinel_password",
)


@functools.cache
def rendered_secrets() -> dict[str, dict[str, str | None]]:
    """Host -> SECRET_VARIABLES as Ansible renders them (lookups and vault included; None where
    undefined). One `ansible` run for every host and the whole session: each run costs seconds of
    CPU, and the inventory does not change while the tests run."""
    values = ", ".join(f"'{name}': {name} | default(None)" for name in SECRET_VARIABLES)
    args = json.dumps({"msg": "{{ {" + values + "} }}"})
    with tempfile.TemporaryDirectory() as tree:
        subprocess.run(
            ["ansible", "all", "-i", INVENTORY, "--tree", tree, "-m", "ansible.builtin.debug", "-a", args],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        return {path.name: json.loads(path.read_text())["msg"] for path in Path(tree).iterdir()}


def templated(host: testinfra.host.Host, variable: str) -> str | None:
    """One of SECRET_VARIABLES of this host, as Ansible renders it."""
    return rendered_secrets()[host.backend.host][variable]


def put_files(host: testinfra.host.Host, directory: str, files: dict[str, str | bytes], owner: str = "root") -> None:
    """Copy files into `directory` (made if missing), readable by `owner` alone, through controller
    files (0600) and one `ansible` run: keys and passwords never in a command's arguments."""
    with tempfile.TemporaryDirectory() as source:
        for name, content in files.items():
            path = Path(source, name)
            path.touch(mode=0o600)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        args = {"src": f"{source}/", "dest": f"{directory}/", "mode": "0600", "owner": owner, "group": owner}
        result = host.ansible("ansible.builtin.copy", json.dumps(args), check=False)
    assert not result.get("failed"), result.get("msg")


CREDENTIAL_DIR = "/run/celerykit-test-credentials"  # tmpfs: gone when the host stops
_placed: set[tuple[str, str]] = set()


def secret_file(host: testinfra.host.Host, variable: str) -> str:
    """A file on the host holding one of SECRET_VARIABLES (root's alone), for a command that needs the
    value: `REDISCLI_AUTH="$(cat FILE)" redis-cli ...` keeps it out of `docker exec`'s arguments and
    the shell's, where `ps` on the machine or the host shows them."""
    if (host.backend.host, variable) not in _placed:
        put_files(host, CREDENTIAL_DIR, {variable: templated(host, variable) or ""})
        _placed.add((host.backend.host, variable))
    return f"{CREDENTIAL_DIR}/{variable}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """What a browser shows is checked last (the others keep their order): by then the other lanes of
    a test run are done. On the saturated machine (load 14 on two cores) Flower's page once stayed
    "Connecting..." for the whole 90 s the check waits."""
    items.sort(key=lambda item: item.path.name == "test_browser.py")


@pytest.fixture(scope="session")
def flower_host() -> testinfra.host.Host:
    (host,) = hosts("flower")
    return host


@pytest.fixture(scope="session")
def proxy(flower_host: testinfra.host.Host, tmp_path_factory: pytest.TempPathFactory) -> Target:
    """The proxy as a client outside the hosts sees it: the host's address, its certificate as CA."""
    address = flower_host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca_file.write_text(flower_host.file("/etc/nginx/celerykit-tls/tls.crt").content_string)
    secrets = "/etc/celerykit/secrets"
    variables = flower_host.ansible.get_variables()
    return Target(
        url=f"https://{address['address']}",
        http_url=f"http://{address['address']}",
        user=variables.get("celerykit_flower_user", "admin"),
        password=flower_host.file(f"{secrets}/flower_password").content_string.strip(),
        ca_file=str(ca_file),
    )


@pytest.fixture(scope="session")
def deployment(proxy: Target) -> SystemdDeployment:
    """The inventory's hosts as the fault drills (celerykit_testing, shared with the compose tests) see them."""
    return SystemdDeployment(proxy, hosts, pools_of)


@pytest.fixture(scope="session")
def monitoring(proxy: Target) -> Monitoring:
    """The Flower host's Prometheus through its nginx; the test's alert sink on that host (../prepare.yml)."""
    return monitoring_drills.through_the_proxy(proxy, f"{proxy.http_url}:8080")


@pytest.fixture(scope="session")
def beat_deployment(deployment: SystemdDeployment) -> SystemdDeployment:
    """The Beat drills run on the converged hosts as they are (the heartbeat of their celery.env)."""
    return deployment


# For a test of what an operator's ansible-playbook itself shows (its output, the command lines it
# starts on a host): Ansible's own strategy. The multinode and reconfigure scenarios' plays run with
# Mitogen otherwise (.config/molecule/config.yml), which runs a play's modules in one process per host.
ANSIBLES_OWN_STRATEGY = {"ANSIBLE_STRATEGY": "linear"}


def playbook(
    *args: str,
    extra_vars: dict | None = None,
    tmp: Path | None = None,
    name: str = "site",
    inventory: str = INVENTORY,
    play: Path | None = None,
    **env: str,
) -> subprocess.CompletedProcess:
    """Run one of the collection's playbooks (the site playbook unless `name` says another; a file of
    the test's own if `play` names one) on the scenario's inventory or another (plus `args`, and
    Ansible settings in `env`), as an operator would."""
    command = ["ansible-playbook", "-i", inventory, str(play or f"celerykit.platform.{name}"), *args]
    if extra_vars is not None:
        assert tmp is not None
        path = tmp / "extra-vars.json"
        path.write_text(json.dumps(extra_vars))
        command += ["-e", f"@{path}"]
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", NO_COLOR="1", **env)
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(ROOT / ".collections"))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)


def secrets(host: testinfra.host.Host) -> dict[str, str]:
    """The secret values this host holds: files under /etc/celerykit/secrets and the inventory's passwords."""
    found = {}
    listing = host.run("find /etc/celerykit/secrets -type f 2>/dev/null").stdout.split()
    for path in listing:
        found[path] = host.file(path).content_string.strip()
    for variable in SECRET_VARIABLES:
        value = templated(host, variable)
        if isinstance(value, str):
            found[variable] = value.strip()
    return {name: value for name, value in found.items() if len(value) >= 8}


def all_secrets() -> set[str]:
    return {value for host in hosts("all") for value in secrets(host).values()}


def wait_units_running(host: testinfra.host.Host, units: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = host.check_output("systemctl show -p SubState --value " + " ".join(units))
        states = dict(zip(units, out.split(), strict=False))
        if set(states.values()) == {"running"} and len(states) == len(units):
            return
        assert time.monotonic() < deadline, states
        time.sleep(1)


def wait_flower(proxy: Target, timeout: float = 120) -> None:
    """Flower (restarted by a converge that changed the app's settings) answers through the proxy."""
    deadline = time.monotonic() + timeout
    while not checks.auth_accepted(proxy):
        assert time.monotonic() < deadline, "Flower does not answer"
        time.sleep(1)


class Converged:
    """The settings the hosts were last converged with. A module that needs others (it sets
    OTHER_SETTINGS = True) converges them with `other`; the scenario's own come back with one converge
    before the next module that needs them, or at the session's end: a module's settings are undone
    by the next converge, not by one of its own."""

    def __init__(self, proxy: Target) -> None:
        self.proxy = proxy
        self.changed = False
        self._undo: list[Callable[[], None]] = []  # run before the next converge (a stopped Redis started)

    def other(
        self, extra_vars: dict, tmp: Path, inventory: str = INVENTORY, undo: Callable[[], None] | None = None
    ) -> subprocess.CompletedProcess:
        """Converge these settings; `undo` runs before the next converge."""
        self.undo()
        self.changed = True
        if undo is not None:
            self._undo.append(undo)
        return playbook(extra_vars=extra_vars, tmp=tmp, inventory=inventory)

    def undo(self) -> None:
        """What the last module left to undo (before it changes the hosts itself)."""
        while self._undo:
            self._undo.pop()()

    def scenario(self) -> None:
        """Converge back with the scenario's own inventory, if anything changed it; it succeeds, prints
        no secret, and every unit runs again."""
        self.undo()
        if not self.changed:
            return
        start = time.monotonic()
        restored = playbook()
        output = restored.stdout + restored.stderr
        drills.record("systemd-restore", converge_s=round(time.monotonic() - start, 1))
        assert restored.returncode == 0, output[-5000:]
        self.changed = False
        assert not [value for value in all_secrets() if value in output], "a secret appears in the playbook's output"
        for node in hosts("all"):
            wait_units_running(node, unit_names(node))
        wait_flower(self.proxy)


@pytest.fixture(scope="session")
def converged(proxy: Target) -> Iterator[Converged]:
    state = Converged(proxy)
    yield state
    state.scenario()


@pytest.fixture(scope="module", autouse=True)
def scenario_settings(request: pytest.FixtureRequest) -> None:
    """Every module runs on the scenario's own settings, unless it converges others itself."""
    if not getattr(request.module, "OTHER_SETTINGS", False):
        request.getfixturevalue("converged").scenario()
