"""Black-box checks of a deployment, seen from a client: routing, auth, TLS, redirect, WebSocket.

Each check returns a Result and never raises for a failing deployment, so a report can list
every problem at once. The compose tests, the Molecule verifier and `celerykit verify` all
call these functions.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from celerykit.verify.target import Target
from celerykit.verify.websocket import WebSocketException, echo

Pools = Mapping[str, Sequence[str]]  # pool name -> queues it must consume, and only those
HSTS_MIN_AGE = 31536000  # one year


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str

    def __bool__(self) -> bool:
        return self.ok


def _guard(name: str, check: Callable[[], tuple[bool, str]]) -> Result:
    try:
        ok, detail = check()
    except (OSError, ValueError, KeyError) as exc:  # unreachable host, bad JSON, missing field
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return Result(name, ok, detail)


def https_redirect(target: Target) -> Result:
    """Plain HTTP answers 301 with a Location on https:// for the same path."""

    def check() -> tuple[bool, str]:
        if not target.http_url:
            return False, "no HTTP URL given (--http-url)"
        path = target.flower("workers")
        response = target.request("GET", path, auth=False, url=target.http_url)
        location = response.headers.get("location", "")
        ok = response.status == 301 and location.startswith("https://") and location.endswith(path)
        return ok, f"GET {target.http_url}{path} -> {response.status} Location: {location or '-'}"

    return _guard("http redirects to https", check)


def auth_required(target: Target) -> Result:
    """UI, API and control endpoints answer 401 to a client without credentials."""

    probes = [
        ("GET", target.flower("")),
        ("GET", target.flower("api/workers")),
        ("GET", target.flower("api/tasks")),
        ("POST", target.flower("api/task/revoke/" + str(uuid.uuid4()))),
        ("POST", target.flower("api/worker/shutdown/nobody@nowhere")),
        ("POST", target.flower("api/worker/pool/restart/nobody@nowhere")),
    ]

    def check() -> tuple[bool, str]:
        seen = [(m, p, target.request(m, p, auth=False).status) for m, p in probes]
        bad = [f"{m} {p} -> {s}" for m, p, s in seen if s != 401]
        return not bad, "; ".join(bad) or f"{len(seen)} endpoints answer 401 without credentials"

    return _guard("flower requires credentials", check)


def auth_accepted(target: Target) -> Result:
    """The same endpoints answer 200 with the right credentials, and 401 with a wrong password."""

    def check() -> tuple[bool, str]:
        statuses = {p: target.request("GET", p).status for p in (target.flower(""), target.flower("api/workers"))}
        wrong = Target(**{**target.__dict__, "password": target.password + "-wrong"})
        wrong_status = wrong.request("GET", target.flower("api/workers")).status
        ok = all(s == 200 for s in statuses.values()) and wrong_status == 401
        detail = ", ".join(f"{p} -> {s}" for p, s in statuses.items()) + f"; wrong password -> {wrong_status}"
        return ok, detail

    return _guard("flower accepts valid credentials", check)


def hsts(target: Target) -> Result:
    def check() -> tuple[bool, str]:
        header = target.request("GET", target.flower("")).headers.get("strict-transport-security", "")
        match = re.search(r"max-age=(\d+)", header)
        ok = bool(match) and int(match.group(1)) >= HSTS_MIN_AGE
        return ok, f"Strict-Transport-Security: {header or '(missing)'}"

    return _guard("hsts for at least a year", check)


def _handshake(target: Target, version: ssl.TLSVersion) -> str | None:
    """The negotiated protocol, or None when the server refuses `version`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # OpenSSL 3 refuses legacy TLS on its own at the default security level, which would make a
    # "TLS 1.0 refused" check pass against any server: lower it so only the server can say no.
    context.set_ciphers("ALL:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: exactly why we ask for them
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    try:
        with (
            socket.create_connection((target.host, target.port), timeout=target.timeout) as raw,
            context.wrap_socket(raw, server_hostname=target.host) as tls,
        ):
            return tls.version()
    except (ssl.SSLError, ConnectionResetError):
        return None


def tls_versions(target: Target) -> Result:
    """TLS 1.2 and 1.3 accepted; SSLv3, TLS 1.0 and 1.1 refused."""

    def check() -> tuple[bool, str]:
        wanted = {ssl.TLSVersion.TLSv1_2: True, ssl.TLSVersion.TLSv1_3: True}
        refused = {ssl.TLSVersion.TLSv1: False, ssl.TLSVersion.TLSv1_1: False}
        seen = {v: _handshake(target, v) is not None for v in (*wanted, *refused)}
        ok = all(seen[v] == expected for v, expected in {**wanted, **refused}.items())
        return ok, ", ".join(f"{v.name} {'accepted' if accepted else 'refused'}" for v, accepted in seen.items())

    return _guard("tls 1.2/1.3 only", check)


def metrics_hidden(target: Target) -> Result:
    """Flower's /metrics skips Flower's own auth; the proxy must not serve it to outsiders."""

    def check() -> tuple[bool, str]:
        path = target.flower("metrics")
        statuses = {auth: target.request("GET", path, auth=auth).status for auth in (False, True)}
        ok = all(status in (403, 404) for status in statuses.values())
        return ok, f"{path} -> {statuses[False]} anonymous, {statuses[True]} with credentials"

    return _guard("metrics not public", check)


def _pool_of(worker: str) -> str:
    return worker.split("@", 1)[0]


def workers(target: Target, pools: Pools, timeout: float = 60.0) -> Result:
    """Exactly the expected pools are online, each consuming exactly its queues."""

    def check() -> tuple[bool, str]:
        deadline = time.monotonic() + timeout
        detail = "no answer"
        while True:
            listing = target.request("GET", target.flower("api/workers?refresh=1")).json()
            consumed: dict[str, set[str]] = {}
            complete = True
            for name, info in listing.items():
                queues = info.get("active_queues")
                if queues is None:  # Flower gathers inspect replies one by one
                    complete = False
                    continue
                consumed.setdefault(_pool_of(name), set()).update(q["name"] for q in queues)
            expected = {pool: set(queues) for pool, queues in pools.items()}
            detail = _describe(consumed) or "no workers"
            if complete and consumed == expected:
                return True, f"{len(listing)} workers: {detail}"
            if time.monotonic() > deadline:
                return False, f"expected {_describe(expected)}, found {detail}"
            time.sleep(2)

    return _guard("pools consume exactly their queues", check)


def _describe(pools: Mapping[str, set[str]]) -> str:
    return "; ".join(f"{p}: {','.join(sorted(q))}" for p, q in sorted(pools.items()))


def send_probe(target: Target, queue: str) -> str:
    """Send Celery's built-in `celery.accumulate` to `queue` through Flower; return the task id."""
    response = target.request(
        "POST", target.flower("api/task/send-task/celery.accumulate"), body={"args": [queue], "queue": queue}
    )
    if response.status != 200:
        raise ValueError(f"send-task answered {response.status}: {response.body[:200]!r}")
    return response.json()["task-id"]


def wait_for_task(target: Target, task_id: str, timeout: float = 60.0) -> dict:
    """Poll Flower until the task has finished; return its info (state, worker, result...)."""
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        response = target.request("GET", target.flower(f"api/task/info/{task_id}"))
        if response.status == 200:
            info = response.json()
            if info.get("state") in ("SUCCESS", "FAILURE", "REVOKED"):
                return info
        time.sleep(0.5)
    state = info.get("state", "unknown")
    raise ValueError(f"task {task_id} not finished after {timeout:.0f}s (last seen: {state})")


def routing(target: Target, pools: Pools, timeout: float = 60.0) -> Result:
    """A probe task sent to each queue is executed by a worker of the pool that owns the queue."""

    def check() -> tuple[bool, str]:
        sent = {(pool, queue): send_probe(target, queue) for pool, queues in pools.items() for queue in queues}
        lines, ok = [], True
        for (pool, queue), task_id in sent.items():
            info = wait_for_task(target, task_id, timeout)
            worker = info.get("worker") or "?"
            good = info.get("state") == "SUCCESS" and _pool_of(worker) == pool
            ok &= good
            expected = "" if good else f" (expected pool {pool})"
            lines.append(f"{queue} -> {worker} {info.get('state')}{expected}")
        return ok, "; ".join(lines)

    return _guard("tasks run on the pool of their queue", check)


def websocket(target: Target, path: str, message: str = "celerykit ping") -> Result:
    """Upgrade through the proxy's TLS endpoint and get a text message echoed back."""

    def check() -> tuple[bool, str]:
        try:
            result = echo(target, path, message)
        except WebSocketException as exc:  # upgrade refused, connection closed before the echo
            return False, f"{type(exc).__name__}: {exc}"
        ok = result.status.split()[1] == "101" and result.reply == message
        return ok, f"{result.status}; sent {message!r}, got {result.reply!r}"

    return _guard("websocket upgrade and echo", check)
