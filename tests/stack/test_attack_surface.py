"""The stack's attack surface, probed like an attacker would: Flower, Redis, TLS, secrets.

Probes run from outside (published loopback ports) and from inside the stack's own containers
(a compromised worker, the Redis container, an app behind the proxy), never against anything else.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from celerykit_testing import drills
from celerykit_testing.monitoring_drills import wait_for
from conftest import Stack

from celerykit.verify import checks

pytestmark = pytest.mark.faults

# Python run inside a container: try TCP connections, print one line of JSON {host:port: outcome}.
# A port counts as "open" only when it opened on each of TRIES attempts, half a second apart: one attempt
# it refused, or that timed out, shows that no route to it is configured. Docker before 28 deletes and
# inserts again the FORWARD chain's jump to its network isolation rules whenever any network on the host
# is created (`EnsureJumpRule`; no longer in 28.0, moby#49538); for those milliseconds a container on a
# network with a way out reaches every other network's addresses. With networks created and removed beside
# it (as the other test lanes do), 13 of 600 connections between two networks opened. A single such
# opening is recorded ("open, then ..."), and is not an exposure.
TRIES = 3
CONNECT = """
import json, socket, sys, time
tries, seen = int(sys.argv[1]), {}
for spec in sys.argv[2:]:
    host, port = spec.rsplit(":", 1)
    opened = 0
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=3).close()
        except OSError as exc:
            seen[spec] = ("open, then " if opened else "") + type(exc).__name__
            break
        opened += 1
        if opened == tries:
            seen[spec] = "open"
            break
        time.sleep(0.5)
print(json.dumps(seen))
"""


def connect_from(stack: Stack, service: str, *specs: str) -> dict[str, str]:
    return json.loads(stack.compose.exec(service, "python3", "-c", CONNECT, str(TRIES), *specs).stdout)


def container_ips(stack: Stack, service: str) -> list[str]:
    networks = stack.compose.inspect(service)["NetworkSettings"]["Networks"]
    return [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]


def test_flower_port_is_reachable_from_nginx_only(stack: Stack):
    """No container but the proxy reaches port 5555: not a worker, not Beat, not an app behind
    the proxy (ws-echo), not Redis; by service name or by any of Flower's addresses."""
    specs = ["flower:5555"] + [f"{ip}:5555" for ip in container_ips(stack, "flower")]
    seen = {
        service: connect_from(stack, service, *specs) for service in ("worker-high", "worker-low", "beat", "ws-echo")
    }
    # The Redis image has no Python: redis-cli is a TCP client too ("Could not connect" when
    # refused; stopped by `timeout` when the address is unreachable).
    for spec in specs:
        host, port = spec.rsplit(":", 1)
        for attempt in range(TRIES):  # open on every attempt, half a second apart, as CONNECT counts it
            out = stack.compose.exec("redis", "timeout", "5", "redis-cli", "-h", host, "-p", port, "ping", check=False)
            if out.returncode == 124 or "Could not connect" in out.stdout + out.stderr:
                seen.setdefault("redis", {})[spec] = "open, then closed" if attempt else "closed"
                break
            time.sleep(0.5)
        else:
            seen.setdefault("redis", {})[spec] = "open"
    from_nginx = connect_from(stack, "nginx", "flower:5555")
    drills.record("attack-flower-port", probes=seen, from_nginx=from_nginx)
    assert from_nginx == {"flower:5555": "open"}  # the probe can see an open port
    opened = {service: [s for s, outcome in results.items() if outcome == "open"] for service, results in seen.items()}
    assert not any(opened.values()), opened


UNAUTHENTICATED = [
    ("GET", "api/workers"),
    ("GET", "api/tasks"),
    ("GET", "api/queues/length"),
    ("GET", "api/task/info/{task}"),
    ("POST", "api/task/revoke/{task}?terminate=true"),
    ("POST", "api/task/send-task/celery.accumulate"),
    ("POST", "api/task/async-apply/celery.accumulate"),
    ("POST", "api/worker/shutdown/{worker}"),
    ("POST", "api/worker/pool/restart/{worker}"),
    ("POST", "api/worker/pool/grow/{worker}?n=1"),
    ("POST", "api/worker/pool/shrink/{worker}?n=1"),
    ("POST", "api/worker/pool/autoscale/{worker}?min=1&max=9"),
    ("POST", "api/worker/queue/add-consumer/{worker}?queue=evil"),
    ("POST", "api/worker/queue/cancel-consumer/{worker}?queue=high_priority"),
    ("GET", ""),
    ("GET", "tasks"),
    ("GET", "broker"),
]


def test_flower_ui_api_and_control_endpoints_refuse_anonymous_and_wrong_credentials(stack: Stack):
    """Every UI/API/control endpoint answers 401 without credentials and with a wrong password,
    aimed at a real worker and task; afterwards the worker is still there, its pool unchanged."""
    target = stack.target
    task = checks.send_probe(target, "high_priority")
    checks.wait_for_task(target, task)
    workers = target.request("GET", target.flower("api/workers?refresh=1")).json()
    (worker,) = [w for w in workers if w.startswith("high@")]
    before = workers[worker]["stats"]["pool"]["max-concurrency"]
    wrong = type(target)(**{**target.__dict__, "password": target.password + "x"})
    statuses = {}
    for method, path in UNAUTHENTICATED:
        full = target.flower(path.format(task=task, worker=worker))
        statuses[f"{method} {full}"] = (
            target.request(method, full, auth=False).status,
            wrong.request(method, full).status,
        )
    drills.record(
        "attack-flower-auth", endpoints=len(statuses), not_401=[k for k, v in statuses.items() if v != (401, 401)]
    )
    assert all(v == (401, 401) for v in statuses.values()), statuses
    after = target.request("GET", target.flower("api/workers?refresh=1")).json()
    assert worker in after and after[worker]["stats"]["pool"]["max-concurrency"] == before
    assert checks.wait_for_task(target, task)["state"] == "SUCCESS"  # not revoked


# Python run inside a worker container: speak RESP to Redis, over TLS when the stack runs it (as the
# worker does: the stack's CA, Redis's name checked). Reads the Celery user's password from the
# mounted secret file, so it never appears on a command line.
REDIS_PROBE = """
import json, os, socket, ssl
def command(sock, *args):
    sock.sendall(b"".join([b"*%d\\r\\n" % len(args)] + [b"$%d\\r\\n%s\\r\\n" % (len(a), a) for a in args]))
    return sock.recv(4096).decode(errors="replace").split("\\r\\n")[0]
def connect():
    sock = socket.create_connection(("redis", 6379), timeout=5)
    if os.environ.get("CELERYKIT_REDIS_TLS", "").lower() == "true":
        context = ssl.create_default_context(cafile=os.environ["CELERYKIT_REDIS_CA_FILE"])
        sock = context.wrap_socket(sock, server_hostname="redis")
    return sock
password = open("/run/celerykit/secrets/redis_password", "rb").read().strip()
seen = {}
with connect() as anonymous:
    for name, args in [("PING", [b"PING"]), ("GET", [b"GET", b"x"]), ("FLUSHALL", [b"FLUSHALL"])]:
        seen["anonymous " + name] = command(anonymous, *args)
    seen["AUTH default"] = command(anonymous, b"AUTH", b"default", password)
with connect() as celery:
    seen["AUTH celery"] = command(celery, b"AUTH", b"celery", password)
    for name, args in [
        ("FLUSHALL", [b"FLUSHALL"]), ("FLUSHDB", [b"FLUSHDB"]), ("CONFIG GET", [b"CONFIG", b"GET", b"dir"]),
        ("CONFIG SET", [b"CONFIG", b"SET", b"dir", b"/tmp"]), ("DEBUG", [b"DEBUG", b"SLEEP", b"0"]),
        ("ACL SETUSER", [b"ACL", b"SETUSER", b"evil", b"on", b">pw", b"+@all"]), ("MODULE", [b"MODULE", b"LIST"]),
        ("SHUTDOWN", [b"SHUTDOWN", b"NOSAVE"]), ("KEYS", [b"KEYS", b"*"]), ("PING", [b"PING"]),
    ]:
        seen["celery " + name] = command(celery, *args)
print(json.dumps(seen))
"""


def test_redis_refuses_anonymous_clients_and_admin_commands(stack: Stack):
    seen = json.loads(stack.compose.exec("worker-medium", "python3", "-c", REDIS_PROBE).stdout)
    drills.record("attack-redis-acl", replies=seen)
    for name in ("anonymous PING", "anonymous GET", "anonymous FLUSHALL"):
        assert seen[name].startswith("-NOAUTH"), (name, seen[name])
    assert seen["AUTH default"].startswith("-WRONGPASS"), seen["AUTH default"]
    assert seen["AUTH celery"] == "+OK"
    for name in (
        "FLUSHALL",
        "FLUSHDB",
        "CONFIG GET",
        "CONFIG SET",
        "ACL SETUSER",
        "MODULE",
        "SHUTDOWN",
        "KEYS",
    ):
        assert seen[f"celery {name}"].startswith("-NOPERM"), (name, seen[f"celery {name}"])
    # DEBUG is refused twice over: Redis 7 disables it for everyone (enable-debug-command no) and
    # checks that before the ACL, which denies it to the Celery user too (-@admin).
    assert seen["celery DEBUG"].startswith(("-NOPERM", "-ERR DEBUG command not allowed")), seen["celery DEBUG"]
    assert seen["celery PING"] == "+PONG"  # the same connection still works: the refusals were ACL's
    stack.compose.wait_healthy("redis")


def test_redis_is_reachable_from_its_network_only(stack: Stack):
    """Redis publishes no port, and containers outside the backend network (the proxy, an app
    behind it) reach it neither by name nor by address; a worker (inside) does."""
    redis = stack.compose.inspect("redis")
    published = {p: b for p, b in (redis["NetworkSettings"]["Ports"] or {}).items() if b}
    specs = ["redis:6379"] + [f"{ip}:6379" for ip in container_ips(stack, "redis")]
    outside = {service: connect_from(stack, service, *specs) for service in ("nginx", "ws-echo")}
    inside = connect_from(stack, "worker-low", "redis:6379")
    drills.record("attack-redis-reach", published=published, outside=outside, inside=inside)
    assert not published
    assert inside == {"redis:6379": "open"}
    assert not [s for results in outside.values() for s, outcome in results.items() if outcome == "open"], outside


def redis_over_tls(stack: Stack) -> bool:
    return stack.compose.env.get("CELERYKIT_REDIS_TLS", "").lower() == "true"


@pytest.mark.capture
def test_what_crosses_the_network_to_redis_holds_no_password_and_no_task_argument(stack: Stack, tmp_path: Path):
    """A capture of Redis's traffic on the stack's network (tcpdump in Redis's network namespace) while
    a worker logs in again (a restart: AUTH with the Celery user's password) and a task with a marked
    argument runs. Over TLS (CELERYKIT_REDIS_TLS) it holds neither; in plain text, both (so the capture
    sees what it should)."""
    if shutil.which("tcpdump") is None or shutil.which("nsenter") is None:
        pytest.fail("tcpdump and nsenter are not installed (scripts/bootstrap-host.sh --test-tools installs them)")
    pid = stack.compose.inspect("redis")["State"]["Pid"]
    capture = tmp_path / "redis.pcap"
    marker = f"celerykit-marker-{uuid.uuid4().hex}"
    tcpdump = subprocess.Popen(
        [
            "nsenter",
            f"--net=/proc/{pid}/ns/net",
            "tcpdump",
            "-i",
            "any",
            "-U",
            "-s",
            "0",
            "-w",
            str(capture),
            "port",
            "6379",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # tcpdump writes its file's header (24 bytes) once it captures: from then on nothing is missed.
        wait_for("tcpdump capturing", lambda: capture.exists() and capture.stat().st_size >= 24, 30, every=0.1)
        stack.compose.run("restart", "worker-high")
        stack.compose.wait_healthy("worker-high")
        response = stack.target.request(
            "POST",
            stack.target.flower("api/task/send-task/celery.accumulate"),
            body={"args": [marker], "queue": "high_priority"},
        )
        task = response.json()["task-id"]
        assert checks.wait_for_task(stack.target, task)["state"] == "SUCCESS"
    finally:
        tcpdump.terminate()
        tcpdump.wait(timeout=10)
    seen = capture.read_bytes()
    password = (stack.secrets / "redis_password").read_text().strip().encode()
    found = {"password": password in seen, "task argument": marker.encode() in seen}
    drills.record("attack-redis-capture", tls=redis_over_tls(stack), bytes=len(seen), found=found)
    assert len(seen) > 10_000, "the capture holds next to nothing: nothing to conclude"
    if redis_over_tls(stack):
        assert found == {"password": False, "task argument": False}
    else:
        assert found == {"password": True, "task argument": True}  # plain text: what TLS hides


def secrets_of(stack: Stack) -> dict[str, str]:
    """The secret files' contents: with Redis over TLS also its CA's and its own private key (a key
    by the first line of its PEM body, which any copy of it holds however its newlines were
    escaped); certificates are public."""
    found = {}
    for path in stack.secrets.iterdir():
        if path.is_file() and path.suffix == ".key":
            found[path.name] = path.read_text().splitlines()[1]
        elif path.is_file() and path.suffix != ".crt":
            found[path.name] = path.read_text().strip()
    return found


SECRETS = {"redis_password", "flower_password", "flower_cookie_secret"}
TLS_KEYS = {"redis-ca.key", "redis-server.key"}


def test_no_secret_in_process_lists_logs_or_container_configuration(stack: Stack):
    """What other local users can see (`ps`), `docker compose logs` and `docker inspect`
    (environment, command) hold none of the generated secrets."""
    secrets = secrets_of(stack)
    assert set(secrets) == SECRETS | (TLS_KEYS if redis_over_tls(stack) else set())
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    logs = stack.compose.run("logs", "--no-color").stdout
    inspected = subprocess.run(
        ["docker", "inspect", *stack.compose.run("ps", "--all", "--quiet").stdout.split()],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {
        where: sorted(name for name, value in secrets.items() if value in text)
        for where, text in (("ps", ps), ("logs", logs), ("docker inspect", inspected))
    }
    drills.record("attack-secrets-exposed", ps_lines=len(ps.splitlines()), log_bytes=len(logs), found=found)
    assert "celery" in ps and "flower" in ps  # the services' command lines were there to search
    assert not any(found.values()), found


# Run inside a container as an unprivileged other user (nobody): read every file it can under
# the paths given, report which hold one of the secrets (given on stdin, never in argv).
READABLE_SECRETS = """
import json, os, sys
secrets = json.load(sys.stdin)
hits, denied, scanned = [], [], 0
def files(top):
    if not os.path.isdir(top):
        yield top
    for root, dirs, names in os.walk(top):
        yield from (os.path.join(root, name) for name in names)
for path in (path for top in sys.argv[1:] for path in files(top)):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except PermissionError:
        denied.append(path)
        continue
    except OSError:
        continue
    scanned += 1
    hits += [f"{path}: {k}" for k, v in secrets.items() if v.encode() in data]
print(json.dumps({"hits": hits, "denied": denied, "scanned": scanned}))
"""


@pytest.mark.parametrize("service", ["worker-high", "flower", "beat", "redis", "nginx"])
def test_secrets_are_not_readable_by_other_users(stack: Stack, service: str):
    """Inside each container, user `nobody` reads no file holding a secret (secret files,
    Redis's ACL file, process environments) — the services' own users may."""
    secrets = secrets_of(stack)
    if service == "redis":
        # Debian's redis image has no Python: check the secret and ACL files' modes instead.
        out = stack.compose.exec(
            service, "sh", "-c", "stat -c '%a %U %n' /run/celerykit/secrets/* /run/redis/users.acl"
        )
        lines = [line for line in out.stdout.splitlines() if not line.endswith(".crt")]
        drills.record(f"attack-secret-files-{service}", modes=out.stdout.splitlines())
        assert len(lines) == len(secrets) + 1  # the secret files and the ACL file
        for line in lines:
            assert line.split()[0][-1] == "0", line  # nothing for others
        return
    # A process may end between the glob and ls: ls then fails for that one and lists the rest.
    pids = stack.compose.exec(service, "sh", "-c", "ls -d /proc/[0-9]* 2>/dev/null; true").stdout.split()
    paths = ["/run", "/var/lib", "/etc", "/tmp", "/opt", *[f"{pid}/environ" for pid in pids]]  # noqa: S108
    nobody = ["docker", "exec", "-i", "--user", "65534:65534", stack.compose.container(service)]
    result = subprocess.run(
        [*nobody, "python3", "-c", READABLE_SECRETS, *paths],
        input=json.dumps(secrets),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = json.loads(result.stdout)
    drills.record(f"attack-secret-files-{service}", scanned=seen["scanned"], hits=seen["hits"])
    assert seen["scanned"] > 0
    assert seen["hits"] == [], seen["hits"]


def test_host_side_secret_and_key_files_are_closed_to_others(stack: Stack):
    modes = {p.name: p.stat().st_mode & 0o777 for p in stack.secrets.iterdir() if p.suffix != ".crt"}
    tls = Path(stack.compose.env["CELERYKIT_TLS_DIR"])
    modes["tls.key"] = (tls / "tls.key").stat().st_mode & 0o777
    drills.record("attack-host-file-modes", modes={k: oct(v) for k, v in modes.items()})
    assert all(mode & 0o007 == 0 for mode in modes.values()), modes


# testssl's default run (protocols, cipher categories, forward secrecy, server defaults, headers,
# vulnerabilities, the cipher list per protocol) is what its rating needs.
TESTSSL_CHECKS: list[str] = []


@pytest.fixture(scope="module")
def testssl(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """testssl.sh (Debian's package, 3.2: a checker nobody here wrote) against the proxy, trusting the test CA."""
    if shutil.which("testssl") is None:
        pytest.fail("testssl.sh is not installed (scripts/bootstrap-host.sh --test-tools installs it)")
    report = tmp_path_factory.mktemp("testssl") / f"{uuid.uuid4().hex}.json"
    options = ["--quiet", "--color", "0", "--warnings", "batch", "--add-ca", str(stack.ca_file), *TESTSSL_CHECKS]
    subprocess.run(
        ["testssl", *options, "--jsonfile", str(report), f"{stack.target.url}/flower/"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return json.loads(report.read_text())


def finding(results: list[dict], id_: str) -> str:
    matches = [r["finding"] for r in results if r["id"] == id_]
    assert matches, f"testssl reported no {id_}"
    return matches[0]


def test_testssl_sees_tls12_and_tls13_only(testssl: list[dict]):
    offered = {p: finding(testssl, p) for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")}
    drills.record("tls-protocols", **offered)
    assert all(offered[p] == "not offered" for p in ("SSLv2", "SSLv3", "TLS1", "TLS1_1")), offered
    assert offered["TLS1_2"] == "offered" and offered["TLS1_3"].startswith("offered"), offered


def test_testssl_sees_only_forward_secret_aead_ciphers(testssl: list[dict]):
    # One finding per suite and protocol: "TLSv1.2   xc02b   ECDHE-ECDSA-AES128-GCM-SHA256 ..."
    names = [r["finding"].split()[2] for r in testssl if r["id"].startswith(("cipher-tls1_2_x", "cipher-tls1_3_x"))]
    weak = [
        n for n in names if not (n.startswith("TLS_") or (n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n)))
    ]
    categories = {r["id"]: r["finding"] for r in testssl if r["id"].startswith("cipherlist_")}
    drills.record("tls-ciphers", ciphers=names, categories=categories, fs=finding(testssl, "FS"))
    assert names and not weak, weak
    # OBSOLETED: CBC and other non-AEAD suites; STRONG_NOFS: AEAD without forward secrecy.
    for category in ("NULL", "aNULL", "EXPORT", "LOW", "3DES_IDEA", "OBSOLETED", "STRONG_NOFS"):
        assert categories[f"cipherlist_{category}"] == "not offered", (category, categories)
    assert categories["cipherlist_STRONG_FS"] == "offered"
    assert finding(testssl, "FS") == "offered"


def test_testssl_grades_the_proxy_a_plus(testssl: list[dict]):
    """testssl's rating (SSL Labs' guide): A+ needs TLS 1.2+, strong forward-secret suites and HSTS."""
    grade, score = finding(testssl, "overall_grade"), finding(testssl, "final_score")
    drills.record("tls-grade", grade=grade, score=score)
    assert grade == "A+", (grade, score, [r for r in testssl if r["id"].startswith("grade_cap")])


def test_testssl_sees_hsts_for_a_year_a_trusted_chain_and_no_known_vulnerability(testssl: list[dict], stack: Stack):
    hsts = finding(testssl, "HSTS_time")
    seconds = int(re.search(r"(\d+) seconds", hsts).group(1))
    trust = finding(testssl, "cert_chain_of_trust")
    severities: dict[str, list[str]] = {}
    for r in testssl:
        severities.setdefault(r["severity"], []).append(r["id"])
    redirect = checks.https_redirect(stack.target)
    drills.record(
        "tls-testssl-summary",
        hsts_seconds=seconds,
        chain_of_trust=trust,
        http_redirect=redirect.detail,
        severities={k: len(v) for k, v in severities.items()},
        medium_or_worse={k: v for k, v in severities.items() if k in ("MEDIUM", "HIGH", "CRITICAL")},
    )
    assert seconds >= 31536000, hsts
    assert trust.startswith("passed"), trust
    assert redirect, redirect.detail
    assert not any(severities.get(level) for level in ("HIGH", "CRITICAL")), severities
    assert not severities.get("MEDIUM"), severities["MEDIUM"]
