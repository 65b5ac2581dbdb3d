"""Benchmark 7, how costs grow with the number of worker processes: Redis connections and memory,
Flower's CPU and memory, Prometheus's series, at 4, 16 and 32 worker processes.

The points are 2 containers x 2 processes, 4 x 4 and 8 x 4: every point has several containers (a
container stands for a host), and the last step doubles the containers at the same concurrency, so
a cost per container and a cost per process can be told apart. The workers are extra services
from an overlay generated at run time (`scale-1` ... `scale-8`, each its own hostname, so node
`scaling@scale-N`), built from the kit's own worker service by `extends`, consuming the queue
`scaling` only. The kit's three pools are stopped meanwhile; Beat, Flower, the exporter,
Prometheus, Alertmanager and nginx run as in the kit. The overlay turns the workers' health check
off: each check is a process Docker starts in the container (CPU a 2-core machine would show as
noise), and hosts run no such probe.

Each round runs the points smallest first. Prometheus starts empty at each round, so its head holds
only the round's series (the node names of a point include those of the smaller ones); Flower
starts empty at each point, so its memory holds that point's workers and tasks only. At each point:
the CPU (utime+stime of the container's processes, from the host's /proc) and RSS of Flower, Redis
and Prometheus over a window idle, then over a window of a steady stream of no-op tasks (the same
rate at every point; the window opens once the client sends); Redis's INFO and
the connections it holds per container (its /proc/net/tcp by peer address), and in one worker
container the connections of the main process and of each pool process; then Prometheus's figures
and Flower's /api/workers. The load average before and after each round is recorded.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
import urllib.request
from base64 import b64encode
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.flower_memory import _wait_healthy
from bench.monitoring import _query
from bench.sizes import Sizes
from bench.stack import KIT_POOLS, ROOT, Stack, StackError
from bench.stats import median, ratio

POOL = QUEUE = "scaling"
TEMPLATE = KIT_POOLS[0]  # the kit's worker service the scaling workers extend
REDIS_PORT = 6379
SETTLE_S = 3  # after Flower sees every worker: its start-up inspect is over
LEAD_S = 2  # the stream runs this long before and after Flower's CPU window
TICK = os.sysconf("SC_CLK_TCK")


def service(index: int) -> str:
    return f"scale-{index}"


def write_overlay(path: Path, containers: int) -> None:
    """K worker services; JSON is YAML, and this file lives in the run's temporary directory."""
    services = {
        service(i): {
            "extends": {"file": str(ROOT / "compose" / "compose.yaml"), "service": TEMPLATE},
            "hostname": service(i),  # the node name's host part: unique, and the same in every round
            "profiles": ["bench"],
            "environment": {
                "CELERYKIT_POOL_NAME": POOL,
                "CELERYKIT_POOL_QUEUES": QUEUE,
                "CELERYKIT_POOL_CONCURRENCY": "${BENCH_SCALING_CONCURRENCY:-4}",
                "PYTHONPATH": "/opt/bench:/opt/app",
            },
            "volumes": [f"{ROOT / 'bench' / 'container'}:/opt/bench:ro"],
            "healthcheck": {"disable": True},
            "deploy": {"replicas": 1},  # one container per service: a hostname of its own
        }
        for i in range(1, containers + 1)
    }
    path.write_text(json.dumps({"services": services}, indent=2) + "\n")


# Containers, seen from the host: docker exec and /proc, cheaper than a compose call each -------


@dataclass
class Container:
    id: str
    pid: int  # its init process, in the host's /proc
    addresses: list[str]


def running(stack: Stack) -> dict[str, Container]:
    """The project's running containers by service."""
    listed = subprocess.run(
        ["docker", "ps", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    template = (
        '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} {{.State.Pid}}'
        "{{range .NetworkSettings.Networks}} {{.IPAddress}}{{end}}"
    )
    inspected = subprocess.run(
        ["docker", "inspect", "--format", template, *listed], capture_output=True, text=True, check=True
    ).stdout
    found = {}
    for line in inspected.splitlines():
        name, container, pid, *addresses = line.split()
        found[name] = Container(container, int(pid), addresses)
    return found


def _exec(container: Container, *command: str, timeout: float = 600) -> str:
    result = subprocess.run(
        ["docker", "exec", container.id, *command], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode:
        raise StackError(f"{' '.join(command[:4])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout


def _scaling_client(container: Container, *args: str, timeout: float = 600) -> dict:
    out = _exec(container, "python", "-m", "scalingclient", *args, timeout=timeout)
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    pids, todo = [], [root]
    while todo:
        pids.append(pid := todo.pop())
        todo += children.get(pid, [])
    return pids


def _usage(root: int) -> tuple[float, int]:
    """CPU seconds (user + system) of the container's processes, and the largest VmRSS (KiB)."""
    cpu, rss = 0.0, 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        cpu += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
        rss = max([rss] + [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")])
    return cpu, rss


def _window(pids: dict[str, int], seconds: float) -> dict[str, dict]:
    """CPU seconds a minute and RSS of each container (its init process's pid) over `seconds`."""
    before = {name: _usage(pid)[0] for name, pid in pids.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    figures = {}
    for name, pid in pids.items():
        cpu, rss = _usage(pid)
        figures[name] = {"cpu_s_per_min": round((cpu - before[name]) / elapsed * 60, 3), "rss_kib": rss}
    return figures


# Redis ------------------------------------------------------------------------------------------

# In the Redis container: INFO as the kit's user (the password from its file, into redis-cli's
# environment only), then the container's TCP table. The celery user may run INFO, not CLIENT LIST.
REDIS_READ = (
    'REDISCLI_AUTH=$(cat "$CELERYKIT_REDIS_PASSWORD_FILE") redis-cli --no-auth-warning --user celery INFO clients'
    ' && REDISCLI_AUTH=$(cat "$CELERYKIT_REDIS_PASSWORD_FILE") redis-cli --no-auth-warning --user celery INFO memory'
    " && echo TCP && cat /proc/net/tcp /proc/net/tcp6"
)
INFO_KEYS = (
    "connected_clients",
    "blocked_clients",
    "maxclients",
    "used_memory",
    "used_memory_rss",
    "mem_clients_normal",
)


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # /proc/net/tcp: 32-bit words, host order
    if len(raw) == 4:
        return socket.inet_ntoa(raw)
    address = ipaddress.IPv6Address(raw)
    return str(address.ipv4_mapped or address)


def redis(up: dict[str, Container]) -> dict:
    """Redis's INFO figures, and the connections it holds by the service at the other end."""
    info_text, _, tables = _exec(up["redis"], "sh", "-c", REDIS_READ).partition("TCP\n")
    info = dict(line.strip().split(":", 1) for line in info_text.splitlines() if ":" in line)
    names = {address: name for name, c in up.items() for address in c.addresses}
    by_service: Counter[str] = Counter()
    for line in tables.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[3] == "01" and fields[1].endswith(f":{REDIS_PORT:04X}"):  # established
            address = _address(fields[2].split(":")[0])
            by_service[names.get(address, address)] += 1
    return {"info": {key: int(info[key]) for key in INFO_KEYS if key in info}, "connections": dict(by_service)}


def _redis_and_sockets(up: dict[str, Container]) -> dict:
    return {**redis(up), "sockets": _scaling_client(up[service(1)], "sockets")}


# Flower and Prometheus --------------------------------------------------------------------------


def _get(stack: Stack, path: str, auth: bool = True) -> tuple[float, bytes]:
    request = urllib.request.Request(stack.direct_url() + path)  # noqa: S310 - the bench's Flower on loopback
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(f"admin:{stack.flower_password}".encode()).decode())
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        body = response.read()
    return (time.monotonic() - started) * 1000, body


def _wait_flower_sees(stack: Stack, nodes: list[str], timeout: float = 120) -> None:
    """Until Flower's metrics list every node online (from their heartbeats)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = _get(stack, "/flower/metrics", auth=False)
        online = {
            line.split('worker="', 1)[1].split('"', 1)[0]
            for line in body.decode().splitlines()
            if line.startswith("flower_worker_online{") and line.endswith(" 1.0")
        }
        if online >= set(nodes):
            return
        time.sleep(1)
    raise StackError(f"Flower did not see {len(nodes)} workers online within {timeout:.0f} s")


def _api(stack: Stack) -> dict:
    refresh_ms, body = _get(stack, "/flower/api/workers?refresh=1")
    listed = len(json.loads(body))
    cached = [_get(stack, "/flower/api/workers")[0] for _ in range(5)]
    return {"refresh_ms": round(refresh_ms, 1), "cached_ms": round(median(cached), 1), "listed": listed}


def _prometheus(stack: Stack, window_s: int) -> dict:
    def by_job(expr: str) -> dict[str, float]:
        return {r["metric"]["job"]: float(r["value"][1]) for r in _query(stack, expr)}

    head = _query(stack, "prometheus_tsdb_head_series")
    return {
        "head_series": int(float(head[0]["value"][1])) if head else None,
        # The most over the point: the last scrape may have come before the stream's first task.
        "samples": by_job(f"max by (job) (max_over_time(scrape_samples_scraped[{window_s}s]))"),
        "added": by_job(f"sum by (job) (sum_over_time(scrape_series_added[{window_s}s]))"),
        "scrape_max_s": by_job(f"max by (job) (max_over_time(scrape_duration_seconds[{window_s}s]))"),
    }


# The run ----------------------------------------------------------------------------------------


def _fresh(stack: Stack, *services: str) -> None:
    """Remove the services' containers and their data volumes: they start with no state."""
    stack.compose("rm", "--stop", "--force", *services)
    volumes = [f"{stack.project}_{name}-data" for name in services]
    subprocess.run(["docker", "volume", "rm", "--force", *volumes], capture_output=True, check=False)


def _point(stack: Stack, sizes: Sizes, containers: int, concurrency: int, fresh_prometheus: bool) -> dict:
    started = time.time()
    nodes = [f"{POOL}@{service(i)}" for i in range(1, containers + 1)]
    fresh = ["flower", *(["prometheus"] if fresh_prometheus else [])]
    _fresh(stack, *fresh)
    stack.env["BENCH_SCALING_CONCURRENCY"] = str(concurrency)  # every later compose call reads the same file
    stack.compose("up", "--detach", "--no-deps", *fresh, *map(service, range(1, containers + 1)))
    up = running(stack)
    client = up["bench-client"]
    ready = _scaling_client(client, "nodes", "--names", ",".join(nodes), "--timeout", "300")
    if not ready["ready"]:
        raise StackError(f"workers not answering within 300 s: {ready['missing']}")
    _wait_healthy(stack.direct_url())
    _wait_flower_sees(stack, nodes)
    time.sleep(SETTLE_S)
    watched = {name: up[name.split("_")[0]].pid for name in ("flower", "redis_server", "prometheus_server")}
    idle = {**_window(watched, sizes.scaling_idle_s), **_redis_and_sockets(up)}

    # Longer than a scrape interval (15 s): Prometheus scrapes Flower once with every node's task series.
    seconds = max(sizes.scaling_idle_s + 2 * LEAD_S, 17)
    stream = ["python", "-m", "scalingclient", "stream", "--queue", QUEUE, "--rate", str(sizes.scaling_stream_rate)]
    stream += ["--seconds", str(seconds), "--timeout", "120"]
    with subprocess.Popen(["docker", "exec", client.id, *stream], stdout=subprocess.PIPE, text=True) as process:
        # Its first line: connected, sending. Python's start-up in the container is not in the window.
        process.stdout.readline()  # type: ignore[union-attr]
        time.sleep(LEAD_S)
        busy: dict = _window(watched, sizes.scaling_idle_s)
        out, _ = process.communicate(timeout=seconds + 300)
    if process.returncode or not out.strip():
        raise StackError(f"the task stream failed ({process.returncode}): {out[-2000:]}")
    busy["stream"] = json.loads(out.strip().splitlines()[-1])
    busy.update(_redis_and_sockets(up))  # the pool processes that ran a task hold their connections still
    prometheus = _prometheus(stack, max(30, int(time.time() - started) + 1))
    return {
        "containers": containers,
        "concurrency": concurrency,
        "processes": containers * concurrency,
        "start_s": round(ready["seconds"], 1),
        "idle": idle,
        "busy": busy,
        "prometheus": prometheus,
        "api": _api(stack),
        "seconds": round(time.time() - started, 1),
    }


def _round(stack: Stack, sizes: Sizes, index: int) -> dict:
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    stack.compose("rm", "--stop", "--force", *_scale_services(stack))
    base = redis(running(stack))
    points = []
    for containers, concurrency in sizes.scaling_points:
        points.append(_point(stack, sizes, containers, concurrency, fresh_prometheus=not points))
        p = points[-1]
        print(
            f"  round {index}, {containers} x {concurrency}: Redis clients {p['busy']['info']['connected_clients']}, "
            f"Flower {p['idle']['flower']['cpu_s_per_min']} / {p['busy']['flower']['cpu_s_per_min']} CPU s/min, "
            f"{p['busy']['flower']['rss_kib'] / 1024:.0f} MiB, head series {p['prometheus']['head_series']}",
            flush=True,
        )
    return {
        "base": base,
        "points": points,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "seconds": round(time.monotonic() - started, 1),
    }


def _scale_services(stack: Stack) -> list[str]:
    return [name for name in stack.compose("config", "--services").stdout.split() if name.startswith("scale-")]


def run(stack: Stack, sizes: Sizes) -> dict:
    overlay = stack.tmp / "compose.scaling.yaml"
    write_overlay(overlay, max(c for c, _ in sizes.scaling_points))
    stack.extra_files.append(overlay)
    stack.compose("stop", *KIT_POOLS)
    try:
        rounds = [_round(stack, sizes, index) for index in range(1, sizes.scaling_repeats + 1)]
    finally:
        stack.compose("rm", "--stop", "--force", *_scale_services(stack), check=False)
        stack.compose("up", "--detach", "--wait", "--no-deps", *KIT_POOLS, check=False)
        stack.compose("restart", "nginx", check=False)  # nginx resolved Flower's old address at its start
    return {
        "points": [list(point) for point in sizes.scaling_points],
        "stream_rate": sizes.scaling_stream_rate,
        "window_s": sizes.scaling_idle_s,
        "rounds": rounds,
        "summary": summarize(rounds),
    }


# Figures ----------------------------------------------------------------------------------------


def _scale_connections(point: dict, phase: str) -> list[int]:
    return [n for name, n in point[phase]["connections"].items() if name.startswith("scale-")]


# name -> how to read it from (round, point); every figure is summarized over rounds the same way.
FIGURES = {
    "redis_clients": lambda r, p: p["busy"]["info"]["connected_clients"],
    "clients_added": lambda r, p: p["busy"]["info"]["connected_clients"] - r["base"]["info"]["connected_clients"],
    "container_idle": lambda r, p: median(_scale_connections(p, "idle")),
    "container_busy": lambda r, p: median(_scale_connections(p, "busy")),
    "main": lambda r, p: p["busy"]["sockets"]["main"],
    "child": lambda r, p: max(p["busy"]["sockets"]["children"], default=0),
    "redis_memory_mib": lambda r, p: p["busy"]["info"]["used_memory"] / 2**20,
    "client_buffers_kib": lambda r, p: (p["busy"]["info"].get("mem_clients_normal") or 0) / 1024,
    "redis_cpu_idle": lambda r, p: p["idle"]["redis_server"]["cpu_s_per_min"],
    "redis_cpu_busy": lambda r, p: p["busy"]["redis_server"]["cpu_s_per_min"],
    "flower_cpu_idle": lambda r, p: p["idle"]["flower"]["cpu_s_per_min"],
    "flower_cpu_busy": lambda r, p: p["busy"]["flower"]["cpu_s_per_min"],
    "flower_rss_idle_mib": lambda r, p: p["idle"]["flower"]["rss_kib"] / 1024,
    "flower_rss_busy_mib": lambda r, p: p["busy"]["flower"]["rss_kib"] / 1024,
    "head_series": lambda r, p: p["prometheus"]["head_series"] or 0,
    "prometheus_rss_mib": lambda r, p: p["busy"]["prometheus_server"]["rss_kib"] / 1024,
    "flower_samples": lambda r, p: p["prometheus"]["samples"].get("flower", 0),
    "exporter_samples": lambda r, p: p["prometheus"]["samples"].get("celerykit", 0),
    "exporter_scrape_ms": lambda r, p: p["prometheus"]["scrape_max_s"].get("celerykit", 0) * 1000,
    "flower_scrape_ms": lambda r, p: p["prometheus"]["scrape_max_s"].get("flower", 0) * 1000,
    "api_refresh_ms": lambda r, p: p["api"]["refresh_ms"],
    "api_cached_ms": lambda r, p: p["api"]["cached_ms"],
}


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": median(values), "max": round(max(values), 3)}


def summarize(rounds: list[dict]) -> dict:
    """Per point: each figure's min/median/max over rounds; and largest ÷ smallest point within a round."""
    count = len(rounds[0]["points"])
    points = [
        {name: _spread([read(r, r["points"][i]) for r in rounds]) for name, read in FIGURES.items()}
        for i in range(count)
    ]
    ratios = {
        name: _spread([ratio(read(r, r["points"][-1]), read(r, r["points"][0])) for r in rounds])
        for name, read in FIGURES.items()
    }
    return {"points": points, "ratios": ratios}


Cell = Callable[[int], str]  # a table cell: the point's index -> its text


def render(result: dict) -> list[str]:
    summary, rounds = result["summary"], result["rounds"]

    def cell(name: str, digits: int = 0, unit: str = "") -> Cell:
        def text(index: int) -> str:
            s = summary["points"][index][name]
            value = f"{s['median']:,.{digits}f}{unit}"
            spread = len(rounds) > 1 and s["min"] != s["max"]
            return f"{value} ({s['min']:,.{digits}f}-{s['max']:,.{digits}f})" if spread else value

        return text

    def pair(left: Cell, right: Cell) -> Cell:
        return lambda index: f"{left(index)} / {right(index)}"

    def table(columns: list[tuple[str, Cell]]) -> list[str]:
        lines = ["| worker processes (containers x processes) | " + " | ".join(h for h, _ in columns) + " |"]
        lines.append("| --- |" + " ---: |" * len(columns))
        for index, (containers, concurrency) in enumerate(result["points"]):
            label = f"{containers * concurrency} ({containers} x {concurrency})"
            lines.append(f"| {label} | " + " | ".join(column(index) for _, column in columns) + " |")
        return [*lines, ""]

    base = median([r["base"]["info"]["connected_clients"] for r in rounds])
    first, last = result["points"][0], result["points"][-1]
    ratios = summary["ratios"]
    rate, window = result["stream_rate"], result["window_s"]
    stream = f"{rate} tasks/s"
    return [
        f"{len(rounds)} round(s) of every point, smallest first; medians, (min-max) over rounds. CPU is read over "
        f"{window} s windows, idle and under a stream of {stream} (no-op tasks). Load average (1 min) before / after "
        "each round: " + ", ".join(f"{r['load_before']} / {r['load_after']}" for r in rounds) + ".",
        "",
        *table(
            [
                (f"Redis clients (without these workers: {base:.0f})", cell("redis_clients")),
                ("added by the workers", cell("clients_added")),
                ("per worker container, idle / after tasks", pair(cell("container_idle"), cell("container_busy"))),
                ("main process / each pool process", pair(cell("main"), cell("child"))),
                (f"Redis CPU idle / {stream}", pair(cell("redis_cpu_idle", 2), cell("redis_cpu_busy", 2, " s/min"))),
                ("Redis used memory", cell("redis_memory_mib", 1, " MiB")),
                ("client buffers", cell("client_buffers_kib", 0, " KiB")),
            ]
        ),
        *table(
            [
                (f"Flower CPU idle / {stream}", pair(cell("flower_cpu_idle", 2), cell("flower_cpu_busy", 2, " s/min"))),
                (
                    "Flower RSS idle / after the stream",
                    pair(cell("flower_rss_idle_mib"), cell("flower_rss_busy_mib", 0, " MiB")),
                ),
                ("/api/workers?refresh=1", cell("api_refresh_ms", 0, " ms")),
                ("/api/workers", cell("api_cached_ms", 1, " ms")),
            ]
        ),
        *table(
            [
                ("Prometheus head series", cell("head_series")),
                ("Prometheus RSS", cell("prometheus_rss_mib", 0, " MiB")),
                ("samples per scrape: Flower / exporter", pair(cell("flower_samples"), cell("exporter_samples"))),
                (
                    "longest scrape: exporter / Flower",
                    pair(cell("exporter_scrape_ms"), cell("flower_scrape_ms", 0, " ms")),
                ),
            ]
        ),
        f"{last[0] * last[1]} ÷ {first[0] * first[1]} processes, within a round (median, min-max): "
        + "; ".join(
            f"{what} {ratios[name]['median']:.2f} ({ratios[name]['min']:.2f}-{ratios[name]['max']:.2f})"
            for what, name in (
                ("Redis clients added", "clients_added"),
                ("Redis CPU idle", "redis_cpu_idle"),
                ("Flower CPU idle", "flower_cpu_idle"),
                ("Flower CPU under the stream", "flower_cpu_busy"),
                ("Flower RSS", "flower_rss_busy_mib"),
                ("head series", "head_series"),
            )
        )
        + ".",
    ]
