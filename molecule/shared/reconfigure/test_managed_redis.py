"""A managed Redis: the site playbook deploys no Redis of its own and every service uses the one it is
given, by name and port, as an ACL user of that Redis, over TLS checked against the provider's CA.

The test starts that Redis itself on the all-in-one host, as a provider runs one: another
`redis-server` (a transient systemd unit, port 6390, TLS only, a certificate for `redis.managed.test`
from a CA of its own, not the kit's), an ACL user with the rights the README asks a provider for, and
the keyspace events the workers' fetch listens to. The kit's own Redis is stopped first. The module
then converges the site playbook with the scenario's inventory without its `redis` group and checks;
the next converge (conftest.Converged) removes that Redis, starts the kit's and undoes the settings.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra
import yaml
from conftest import (
    INVENTORY,
    ROOT,
    Converged,
    hosts,
    pools_of,
    put_files,
    unit_names,
    wait_flower,
    wait_units_running,
)

from celerykit import defaults, pki
from celerykit.verify import checks
from celerykit.verify.target import Target

NAME = "redis.managed.test"  # what the provider's certificate says, and what the kit is given
PORT = 6390
USER = "acme-broker"  # not the kit's "celery": the kit uses the user it is given
ADMIN = "provider-admin"  # the provider's own user, for this test's look inside
DIR = "/etc/managed-redis"
UNIT = "managed-redis"
# The rights the README asks of a managed Redis's user (as the kit's own Redis gives its user).
# The rights the kit's own Redis gives its user (its ACL file, the one source), given here to the provider's user.
RIGHTS = next(
    line.split("#@PASSWORD_SHA256@ ", 1)[1]
    for line in (ROOT / "src/celerykit/share/redis/users.acl.in").read_text().splitlines()
    if line.startswith("user @USER@ ")
)
REDIS_CONF = [
    "bind 127.0.0.1",
    "port 0",
    f"tls-port {PORT}",
    f"tls-cert-file {DIR}/server.crt",
    f"tls-key-file {DIR}/server.key",
    f"tls-ca-cert-file {DIR}/ca.crt",
    "tls-auth-clients no",
    f"aclfile {DIR}/users.acl",
    "notify-keyspace-events Kl",
    "appendonly yes",
    "dir /var/lib/managed-redis",
]
OTHER_SETTINGS = True  # undone by the next converge (conftest.Converged)


@dataclass
class Managed:
    host: testinfra.host.Host
    output: str
    returncode: int
    password: str
    admin_password: str
    ca_file: Path

    def cli(self, *command: str, check: bool = True) -> str:
        """redis-cli on the host against the managed Redis as the provider's admin (the password from
        the environment, not argv)."""
        result = self.host.run(
            f'REDISCLI_AUTH="$(cat {DIR}/admin.password)" redis-cli --no-auth-warning --tls --cacert {DIR}/ca.crt '
            f"-h {NAME} -p {PORT} --user {ADMIN} {' '.join(command)}"
        )
        assert result.rc == 0 or not check, result.stderr
        return result.stdout if result.rc == 0 else ""


def _inventory_without_redis(tmp: Path) -> str:
    """The scenario's inventory without its redis group, beside the same group_vars and host_vars."""
    source = Path(INVENTORY)
    data = yaml.safe_load(source.read_text())
    data.pop("redis", None)
    directory = tmp / "inventory"
    directory.mkdir()
    for linked in ("group_vars", "host_vars"):
        if (source.parent / linked).exists():
            (directory / linked).symlink_to((source.parent / linked).resolve())
    path = directory / "hosts.yml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _wait(what: str, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(1)


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory, proxy: Target, converged: Converged) -> Managed:
    (host,) = hosts("celery_workers")
    tmp = tmp_path_factory.mktemp("managed")
    authority = pki.make_ca()
    server = pki.issue(authority, [NAME], days=30)
    ca_file = tmp / "provider-ca.crt"
    ca_file.write_bytes(authority.cert)
    password, admin_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    managed = Managed(host, "", -1, password, admin_password, ca_file)

    def sha256(value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()

    def leave() -> None:
        """The provider's Redis gone, the kit's running again (before the next converge)."""
        host.run(f"systemctl stop {UNIT}")
        host.run(f"sed -i '/ {re.escape(NAME)}$/d' /etc/hosts; rm -rf {DIR} /var/lib/managed-redis")
        host.check_output("systemctl start redis-server")

    converged.undo()  # what an earlier module left, before this one stops the kit's Redis
    try:
        host.check_output(f"install -d -o redis -g redis -m 0750 {DIR} /var/lib/managed-redis")
        acl = (
            f"user default off resetpass ~* &* +@all\n"
            f"user {USER} on #{sha256(password)} {RIGHTS}\n"
            f"user {ADMIN} on #{sha256(admin_password)} ~* &* +@all\n"
        )
        files = {"ca.crt": authority.cert, "server.crt": server.cert, "server.key": server.key, "users.acl": acl}
        files["admin.password"] = admin_password  # the test's redis-cli reads it
        files["redis.conf"] = "\n".join([*REDIS_CONF, ""])
        put_files(host, DIR, files, owner="redis")
        host.check_output(f"grep -q ' {NAME}$' /etc/hosts || echo '127.0.0.1 {NAME}' >> /etc/hosts")
        host.check_output("systemctl stop redis-server")
        host.check_output(f"systemd-run --unit={UNIT} --property=User=redis /usr/bin/redis-server {DIR}/redis.conf")
        _wait("the managed Redis answers", lambda: "PONG" in managed.cli("ping", check=False), 30)
    except BaseException:
        leave()
        raise

    extra = {
        "celerykit_app_redis_host": NAME,
        "celerykit_app_redis_port": PORT,
        "celerykit_app_redis_user": USER,
        "celerykit_app_redis_password": password,
        "celerykit_app_redis_ca": str(ca_file),
        "celerykit_flower_password": proxy.password,  # the inventory's (its secrets directory is beside it)
    }
    result = converged.other(extra, tmp, inventory=_inventory_without_redis(tmp), undo=leave)
    managed.output, managed.returncode = result.stdout + result.stderr, result.returncode
    if result.returncode == 0:
        wait_units_running(host, [unit for unit in unit_names(host) if unit != "redis-server"])
        wait_flower(proxy)
    return managed


def test_the_site_playbook_deploys_no_redis_and_prints_no_secret(managed: Managed):
    assert managed.returncode == 0, managed.output[-5000:]
    broker_play = managed.output.split("PLAY [Deploy the broker]", 1)[1].split("PLAY [", 1)[0]
    assert "skipping: no hosts matched" in broker_play
    assert managed.password not in managed.output
    # The kit's own Redis, stopped before the converge, stays stopped: nothing started or reconfigured it.
    assert managed.host.run("systemctl is-active redis-server").stdout.strip() == "inactive"


def _metrics(host: testinfra.host.Host) -> dict[str, float]:
    """The kit's exporter's samples, as Prometheus reads them on the host (the scenario keeps its address)."""
    url = f"http://{defaults.EXPORTER_ADDRESS}:{defaults.EXPORTER_PORT}/metrics"
    read = f'import urllib.request; print(urllib.request.urlopen("{url}").read().decode())'
    text = host.check_output(f"python3 -c '{read}'")
    return {
        name: float(value)
        for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    }


def test_every_service_works_on_the_managed_redis_over_tls_as_the_given_user(managed: Managed):
    """The kit's own Redis is stopped: whatever works, works on the managed one."""
    env = managed.host.file("/etc/celerykit/celery.env").content_string
    for line in ("CELERYKIT_REDIS_TLS=true", f"CELERYKIT_REDIS_HOST={NAME}", f"CELERYKIT_REDIS_PORT={PORT}"):
        assert line in env
    pools = pools_of(managed.host)
    # The exporter reads Redis, every pool answers its ping, and Beat has sent since the converge.
    since = float(managed.host.check_output("date +%s"))
    samples: dict[str, float] = {}

    def all_seen() -> bool:
        samples.update(_metrics(managed.host))
        online = [samples.get(f'celerykit_pool_workers_online{{pool="{pool}"}}', 0) for pool in pools]
        beat = samples.get("celerykit_beat_last_sent_timestamp_seconds", 0)
        return samples.get("celerykit_redis_up") == 1 and min(online) >= 1 and beat >= since

    deadline = time.monotonic() + 90
    while not all_seen() and time.monotonic() < deadline:
        time.sleep(3)
    assert all_seen(), {name: value for name, value in samples.items() if "pool_workers" in name or "beat" in name}
    # Inside the managed Redis (TLS only: no plain port): every client is the given user, or the provider's.
    clients = managed.cli("client", "list").splitlines()
    users = [re.search(r" user=(\S+)", line).group(1) for line in clients]
    assert set(users) == {USER, ADMIN}, users
    assert users.count(USER) > len(pools) + 2  # each pool, Beat, Flower and the exporter


def test_each_queue_runs_on_its_pool_through_the_managed_redis(managed: Managed, proxy: Target):
    pools = {pool: set(queues) for pool, queues in pools_of(managed.host).items()}
    assert checks.workers(proxy, pools), "Flower does not see every pool consuming its queues"
    routed = checks.routing(proxy, pools)
    assert routed, routed.detail
    # The tasks' results are in the managed Redis (the result backend is the broker's Redis).
    assert managed.cli("--scan", "--pattern", "'celery-task-meta-*'").split()


def test_a_client_without_the_providers_ca_is_refused(managed: Managed):
    """The workers' trust is the provider's CA: the kit's own CA (or none) does not accept this Redis."""
    result = managed.host.run(
        f'REDISCLI_AUTH="$(cat {DIR}/admin.password)" timeout 10 redis-cli --no-auth-warning --tls '
        f"--user {ADMIN} "
        f"--cacert /etc/ssl/certs/ca-certificates.crt -h {NAME} -p {PORT} ping"
    )
    assert "PONG" not in result.stdout
    assert "certificate verify failed" in (result.stdout + result.stderr).lower()
